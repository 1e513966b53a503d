"""About the lab: methods, sanity checks, licences, privacy, the perceived-labels note."""

from __future__ import annotations

import streamlit as st

from app.lab import Lab
from app.render import perceived_labels_note
from autopsy.runs import provenance

METHODS = """
**Reproduce, then investigate.** Each incident pins public data and pretrained weights by URL and
SHA-256, rebuilds the model as a plain PyTorch module (Twitter's `fastgaze.vxm`; MediaPipe models
converted from TFLite and checked against the LiteRT runtime to float tolerance), runs the published
protocol, and reports where the lab departs from it (for instance randomising left/right position,
which Twitter's code did not) with both results.

**Statistics.** Every disparity carries its sample size, a 95% confidence interval and the test used
(Wilson intervals, exact binomial tests for paired preferences, cluster bootstrap where photos repeat).
Reproductions are shown beside the published numbers they reproduce.

**Autopsy tools.** Attribution maps (integrated gradients, gradients, Grad-CAM, occlusion) through
Captum; feature visualisation; auxiliary classifiers with control tasks; controlled counterfactual
edits of skin tone (Monk Skin Tone scale, measured by individual typology angle), exposure,
background and position.
"""

SANITY = """
A saliency map is only evidence if it depends on the model. The lab runs the **model-parameter
randomisation test** (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps"): maps of a
progressively randomised network must stop resembling the real one. It also measures
**faithfulness** with deletion and insertion curves (Petsiuk et al., BMVC 2018, RISE) against a
random ordering. Maps that fail either check are reported as such, not interpreted.
"""

PRIVACY = """
Photos of faces are photos of real people. No face image is part of this repository: the viewer
shows photos only from **your own cache** (files you fetched with `autopsy fetch`) or **your upload**.
Uploads are checked (type, at most 10 MB, a decompression-bomb guard, EXIF orientation applied),
processed in memory, never written to disk, and forgotten when you close the page (derived maps are
kept in memory for at most 15 minutes to keep sliders fast).
"""

ACCESSIBILITY = """
Maps use the colour-blind-safe *cividis* and *viridis* colour maps with a colour bar; categories use
the Okabe–Ito palette; nothing is coded by red versus green. Every figure has alt text and a caption,
and the base font is sized for projectors.
"""


def show(lab: Lab) -> None:
    st.title("About the lab")
    perceived_labels_note()
    st.header("Methods", anchor="methods")
    st.markdown(METHODS)
    st.header("Sanity checks", anchor="sanity-checks")
    st.markdown(SANITY)
    st.header("Licences and sources", anchor="licences")
    st.markdown("The lab's code is Apache-2.0. Every artefact keeps its own licence and citation, "
                "which travel with it into every report:")
    rows = []
    for slug, incident in lab.incidents.items():
        try:
            for row in provenance(incident.assets(incident.settings())):
                rows.append({"incident": slug, "artefact": row["name"], "files": row["count"],
                             "licence": row["licence"], "citation": row["citation"],
                             "source": row["source_page"] or row["url"]})
        except Exception as err:  # an incident's manifest problem should not hide the page
            st.warning(f"{slug}: could not list its artefacts ({err})")
    if rows:
        st.dataframe(rows, hide_index=True, column_config={"source": st.column_config.LinkColumn("source")})
    else:
        st.caption("No registered incident pins any artefact yet.")
    st.header("Your photos", anchor="privacy")
    st.markdown(PRIVACY)
    st.header("Accessibility", anchor="accessibility")
    st.markdown(ACCESSIBILITY)
    st.caption(f"Output folder read by this viewer: `{lab.out}`")
