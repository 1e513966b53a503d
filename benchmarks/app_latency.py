"""Viewer latency on this machine: time to first render and time per explorer interaction.

    AUTOPSY_MIRROR=../shared/mirror python benchmarks/app_latency.py [--repeats 3] [--browser] [--out DIR]

Runs the real app script through streamlit.testing's AppTest in one fresh process (server-side
script time: what a user waits for after each click, minus the websocket round trip), and with
``--browser`` also a real ``streamlit run`` + headless Chromium for the home page's first paint and
upload → overlay. Interactions use photos from the public sets in the cache (fetched from the
mirror), a different photo per repeat so every timing is a cache miss unless named "cached".
``--out DIR`` points at an output root with a finished Twitter run, so the story view is timed on
the real story (otherwise that page only says the incident has not been run).
Writes benchmarks/results/app_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "results" / "app_latency.json"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def apptest_timings(out: Path, repeats: int) -> dict:
    from streamlit.navigation.page import calc_hash
    from streamlit.testing.v1 import AppTest

    from autopsy.assets import fetch
    from autopsy.data import FAIRFACE_CONTEXT, FAIRFACE_CROPS

    for image_set in (FAIRFACE_CONTEXT, FAIRFACE_CROPS):
        for row in image_set.rows[: repeats + 2]:
            fetch(image_set.asset(row))

    sys.argv = ["streamlit_app.py", "--out", str(out)]
    results: dict[str, list[float]] = {}

    def record(name, at, step):
        seconds = timed(lambda: step(at))
        if at.exception:
            raise RuntimeError(f"{name}: {at.exception}")
        results.setdefault(name, []).append(round(seconds, 3))

    at = AppTest.from_file(str(REPO / "app" / "streamlit_app.py"), default_timeout=600)
    record("home: first render (cold process: imports, registry)", at, lambda a: a.run())
    record("home: rerun", at, lambda a: a.run())
    at._page_hash = calc_hash("twitter_crop")
    record("twitter page: story view" + (" (a finished quick run)" if (out / "metrics" / "twitter_crop.json").is_file()
                                         else " (no run: the offer to run)"), at, lambda a: a.run())
    at.session_state["view"] = "Explorer"
    record("twitter explorer: first render (loads the model once per process)", at, lambda a: a.run())
    at.radio(key="tw-a-source").set_value("From your cache of the public sets")
    record("twitter explorer: first photo (saliency, overlay, 4 crops)", at, lambda a: a.run())
    options = at.selectbox(key="tw-a-pick").options
    for i in range(1, repeats + 1):
        at.selectbox(key="tw-a-pick").set_value(options[i])
        record("twitter explorer: new photo", at, lambda a: a.run())
        record("twitter explorer: same photo again (cached)", at, lambda a: a.run())
    for level in (3, 7, 10)[:repeats]:
        at.select_slider(key="tw-skin").set_value(level)
        record("twitter explorer: skin-tone slider (edit + saliency)", at, lambda a: a.run())
    at.select_slider(key="tw-skin").set_value("original").run()
    at.toggle(key="tw-attr-on").set_value(True)
    record("twitter explorer: attribution, gradient", at, lambda a: a.run())
    at.radio(key="tw-attr-method").set_value(at.radio(key="tw-attr-method").options[1])
    record("twitter explorer: attribution, integrated gradients (16 steps)", at, lambda a: a.run())
    at.toggle(key="tw-attr-on").set_value(False).run()
    at.segmented_control(key="tw-mode").set_value("Pair (published protocol)")
    at.run()
    at.radio(key="tw-b-source").set_value("From your cache of the public sets")
    record("twitter explorer: pair mode (two canvases, both orders)", at, lambda a: a.run())
    for i in range(2, repeats + 2):
        at.selectbox(key="tw-b-pick").set_value(options[i])
        record("twitter explorer: pair, new photo B", at, lambda a: a.run())
    return {name: {"median_s": statistics.median(v), "runs_s": v} for name, v in results.items()}


def browser_timings(out: Path) -> dict:
    import shutil
    import subprocess
    import urllib.request

    from playwright.sync_api import expect, sync_playwright

    sys.path.insert(0, str(REPO / "tests"))
    from test_browser import CHROMIUM, CHROMIUM_ARGS, UNSEEN_PHOTO, free_port

    port = free_port()
    photo = out / "my_photo.jpg"
    shutil.copyfile(Path(os.environ["AUTOPSY_MIRROR"]) / UNSEEN_PHOTO, photo)
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "streamlit_app.py"), "--server.port", str(port),
         "--server.headless", "true", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
         "--", "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        healthy = time.perf_counter() - started
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            t = time.perf_counter()
            page.goto(url)
            expect(page.get_by_role("heading", name="AI Autopsy", exact=True)).to_be_visible(timeout=120_000)
            home = time.perf_counter() - t
            page.goto(f"{url}/twitter_crop?view=Explorer")
            page.locator("input[type=file]").first.wait_for(state="attached", timeout=120_000)
            t = time.perf_counter()
            page.locator("input[type=file]").first.set_input_files(str(photo))
            expect(page.locator('img[alt^="Saliency map overlay"]').first).to_be_visible(timeout=180_000)
            upload = time.perf_counter() - t
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    return {"server start → healthy": round(healthy, 3), "home page: navigation → title visible": round(home, 3),
            "twitter explorer: upload → overlay visible (first photo, model load included)": round(upload, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also time a real server and headless Chromium")
    parser.add_argument("--out", type=Path, help="output root with a finished Twitter run (default: an empty one)")
    args = parser.parse_args()
    os.environ.setdefault("AUTOPSY_MIRROR", str(REPO.parent / "shared" / "mirror"))
    os.environ.setdefault("AUTOPSY_OFFLINE", "1")
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("AUTOPSY_CACHE", str(Path(tmp) / "cache"))
        result = {
            "command": "python benchmarks/app_latency.py " + " ".join(sys.argv[1:]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "python": platform.python_version(), "platform": platform.platform()},
            "note": "AppTest times are server-side script times in one process (no websocket); the shared "
                    "2-core machine makes single runs noisy, so medians over photos are given.",
            "apptest": apptest_timings(args.out.resolve() if args.out else Path(tmp) / "out", args.repeats),
        }
        if args.browser:
            result["browser"] = browser_timings(Path(tmp))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
