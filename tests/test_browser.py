"""Real-browser test of the viewer: `streamlit run` on a free localhost port, driven by headless Chromium.

Opens the home page, goes to the Twitter page's explorer, uploads a FairFace crop the quick profile
never uses (copied from the mirror to a temporary folder at run time; no face image lives in the
repository), and waits for the saliency overlay. Page errors and Streamlit exception boxes fail the
test. Screenshots go to test-artifacts/ (git-ignored). CI installs Debian's chromium (.ci/run).
"""

import shutil

import pytest

from tests.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, needs_chromium, viewer

UNSEEN_PHOTO = "fairface-crops/train_1.jpg"  # a tight face crop: not in the Twitter quick profile's set

pytestmark = needs_chromium


@pytest.fixture
def server(tmp_path, mirror):
    out = tmp_path / "out"
    out.mkdir()
    with viewer(out) as url:
        yield url


def test_twitter_explorer_in_a_real_browser(server, mirror, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    photo = tmp_path / "upload" / "my_photo.jpg"  # a photo the lab has never seen
    photo.parent.mkdir()
    shutil.copyfile(mirror / UNSEEN_PHOTO, photo)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.set_default_timeout(60_000)
            page.goto(server)
            expect(page.get_by_role("heading", name="AI Autopsy", exact=True)).to_be_visible(timeout=90_000)
            expect(page.get_by_text("Twitter image cropping").first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "home.png", full_page=True)

            page.goto(f"{server}/twitter_crop")  # the incident's own page (the home page lists every incident)
            expect(page.get_by_role("heading", name="Twitter image cropping")).to_be_visible(timeout=90_000)
            page.get_by_role("tab", name="Explorer").click()
            uploader = page.locator("input[type=file]").first
            bad = tmp_path / "upload" / "not_a_photo.jpg"
            bad.write_text("this is a text file with a .jpg name")
            uploader.set_input_files(str(bad))  # a bad file: a clear message, nothing else breaks
            expect(page.get_by_text("not an image this viewer can read")).to_be_visible()
            uploader.set_input_files(str(photo))
            overlay = page.locator('img[alt^="Saliency map overlay"]')
            expect(overlay.first).to_be_visible(timeout=180_000)
            expect(page.locator('img[alt^="Crop at aspect ratio"]').first).to_be_visible()
            # Streamlit scrolls inside its own container, so a tall viewport captures the whole page.
            page.set_viewport_size({"width": 1440, "height": 2400})
            page.wait_for_timeout(800)
            page.screenshot(path=ARTIFACTS / "twitter_explorer.png")
            assert page.locator('[data-testid="stException"]').count() == 0, "a Streamlit exception is shown"
        finally:
            browser.close()
    assert not errors, f"page errors: {errors}"
