"""Real-browser test of the viewer: `streamlit run` on a free localhost port, driven by headless Chromium.

Opens the home page, goes to the Twitter page's explorer, uploads a FairFace crop the quick profile
never uses (copied from the mirror to a temporary folder at run time; no face image lives in the
repository), and waits for the saliency overlay. Page errors and Streamlit exception boxes fail the
test. Screenshots go to test-artifacts/ (git-ignored). CI installs Debian's chromium (.ci/run).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
UNSEEN_PHOTO = "fairface-crops/train_1.jpg"  # a tight face crop: not in the Twitter quick profile's set

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}:\n{server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not become healthy at {url} within {timeout} s")


@pytest.fixture
def server(tmp_path, mirror):
    port = free_port()
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "streamlit_app.py"),
               "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false", "--", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
