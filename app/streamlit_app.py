"""AI Autopsy narrative viewer.

Started by ``autopsy app`` as ``streamlit run app/streamlit_app.py -- --out DIR``; DIR (default:
the current directory) is the output root holding metrics/, outputs/ and reports/. Pages: a
home page with one card per registered incident, one page per incident (story, explorer, run
record), the workshop (assessment, predict-then-reveal, facilitator; answers in ``--workshop FILE``,
default ``DIR/workshop.sqlite``) and "About the lab".
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `app` is not installed with the package; run from a checkout
    sys.path.insert(0, str(REPO))

import streamlit as st  # noqa: E402

from app import about, facilitator, home, incident_page, scenarios, workshop  # noqa: E402
from app.lab import load  # noqa: E402

st.set_page_config(page_title="AI Autopsy", page_icon=":material/biotech:", layout="wide")

lab = load(sys.argv[1:])


def _incident_page(incident):
    def page():
        incident_page.show(lab, incident)

    return st.Page(page, title=incident.title, url_path=incident.slug, icon=":material/description:")


incident_pages = {slug: _incident_page(incident) for slug, incident in lab.incidents.items()}
home_page = st.Page(lambda: home.show(lab, incident_pages), title="Home", url_path="home",
                    icon=":material/home:", default=True)
about_page = st.Page(lambda: about.show(lab), title="About the lab", url_path="about", icon=":material/info:")

workshop_pages = [
    st.Page(lambda: workshop.show(lab), title="Assessment", url_path="workshop", icon=":material/quiz:"),
    st.Page(lambda: scenarios.show(lab), title="Predict, then reveal", url_path="scenarios", icon=":material/casino:"),
    st.Page(lambda: facilitator.show(lab), title="Facilitator", url_path="facilitator", icon=":material/co_present:"),
]
navigation = st.navigation({"AI Autopsy": [home_page], "Incidents": list(incident_pages.values()),
                            "Workshop": workshop_pages, "The lab": [about_page]})
st.sidebar.caption(f"Output folder: `{lab.out}`")
navigation.run()
