"""Real-browser workshop: two participants answer the Twitter assessment, the facilitator sees their section scores.

`streamlit run` on a free localhost port with a workshop file in a temporary folder, driven by
headless Debian Chromium: two separate browser contexts (two people, two Streamlit sessions) join
with a nickname and answer questions; a third opens the facilitator page and must show both
nicknames with a score for every section they answered. Then the server restarts on the same
file and a participant finds their answer again. Screenshots go to test-artifacts/ (git-ignored).
"""

from pathlib import Path

from autopsy import workshop as ws
from tests.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, needs_chromium, viewer

REPO = Path(__file__).resolve().parents[1]
BANK = ws.load_assessment(REPO / "incidents" / "twitter_crop" / "assessment.yaml")

pytestmark = needs_chromium


def streamlit(out: Path, workshop: Path):
    return viewer(out, "--workshop", str(workshop))


def text_of(question_id: str, choice_id: str) -> str:
    return BANK.question(question_id).choice(choice_id).text


def join(page, url: str, nickname: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/workshop?incident=twitter_crop")
    expect(page.get_by_role("heading", name="Workshop: assess an incident")).to_be_visible()
    page.get_by_role("textbox", name="Your nickname").fill(nickname)
    page.get_by_role("button", name="Join the workshop").click()
    expect(page.get_by_text(f"You take part as {nickname}.")).to_be_visible()


def answer(page, question_id: str, choice_id: str) -> None:
    from playwright.sync_api import expect

    question = BANK.question(question_id)
    group = page.get_by_role("radiogroup", name=question.text)
    group.get_by_text(question.choice(choice_id).text, exact=True).click()
    points = f"{question.choice(choice_id).points:g} / {question.max_points:g} points."
    expect(page.locator(f".st-key-q-twitter_crop-{question_id}").get_by_text(points)).to_be_visible()


def test_two_participants_answer_and_the_facilitator_sees_section_scores(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # the first page load imports the incidents
    out, db = tmp_path / "out", tmp_path / "workshop" / "friday.sqlite"
    out.mkdir()
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            def new_page():
                page = browser.new_context(viewport={"width": 1440, "height": 1400}).new_page()
                page.on("pageerror", lambda err: errors.append(str(err)))
                page.set_default_timeout(60_000)
                return page

            with streamlit(out, db) as url:
                ada, grace = new_page(), new_page()
                join(ada, url, "Ada")
                join(grace, url, "Grace")
                answer(ada, "tw-data-labels", "b")  # 2 of 2
                answer(ada, "tw-bias-position", "b")  # 2 of 2
                answer(grace, "tw-data-labels", "a")  # 0 of 2
                answer(grace, "tw-bias-published", "a")  # 1 of 2
                expect(grace.get_by_text("Section score: 1 / 2 points (50%)")).to_be_visible()
                grace.screenshot(path=ARTIFACTS / "workshop_participant.png")

                facilitator = new_page()
                facilitator.goto(f"{url}/facilitator")
                expect(facilitator.get_by_role("heading", name="Workshop: facilitator")).to_be_visible()
                expect(facilitator.get_by_text("2 participant(s): Ada, Grace")).to_be_visible()
                table = facilitator.get_by_test_id("stTable")
                data = "Twitter image cropping · Data and consent"
                bias = "Twitter image cropping · Bias and fairness"
                expect(table.get_by_role("columnheader", name=data)).to_be_visible()
                expect(table.get_by_role("columnheader", name=bias)).to_be_visible()
                rows = {name: table.get_by_role("row").filter(has=facilitator.get_by_role("rowheader", name=name))
                        for name in ("Ada", "Grace")}
                expect(rows["Ada"].get_by_role("cell")).to_have_text(["100%", "100%"])
                expect(rows["Grace"].get_by_role("cell")).to_have_text(["0%", "50%"])
                chart = facilitator.locator('img[alt^="Grouped bar chart: share of points per section"]')
                expect(chart).to_be_visible()
                facilitator.screenshot(path=ARTIFACTS / "workshop_facilitator.png", full_page=True)
                for page in (ada, grace, facilitator):
                    assert page.locator('[data-testid="stException"]').count() == 0, "a Streamlit exception is shown"

            with streamlit(out, db) as url:  # the app restarts on the same workshop file
                ada = new_page()
                join(ada, url, "ada")
                question = BANK.question("tw-data-labels")
                group = ada.get_by_role("radiogroup", name=question.text)
                expect(group.get_by_role("radio", name=question.choice("b").text)).to_be_checked()
        finally:
            browser.close()
    assert not errors, f"page errors: {errors}"
    assert ws.Workshop(db).section_scores()["nickname"].tolist().count("Ada") == 2
