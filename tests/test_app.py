"""The Streamlit viewer through streamlit.testing's AppTest: every page, its key elements, a widget rerun.

Generic pages run against the fixture incident package (fast, no model); the Twitter page runs
against a real quick-profile run of the incident when the incident and its model are present.
"""

import io
import json
import re
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app" / "streamlit_app.py")
FIXTURE_PACKAGE = "tests.fixtures.lab_fixture"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RUN = {
    "slug": "alpha", "title": "Alpha incident", "profile": "quick", "created": "2026-01-01T00:00:00+00:00",
    "lab_version": "0.1.0", "git_commit": "0123456789abcdef", "params": {"profile": "quick", "seed": 1},
    "provenance": [{"name": "fixture-set", "count": 3, "sha256": "ab" * 32, "url": "https://example.org/",
                    "licence": "CC0", "citation": "Nobody 2020", "source_page": "https://example.org/"}],
    "metrics": {"n_images": 540, "rate": {"value": 0.58, "low": 0.55, "high": 0.61, "n": 1000,
                                           "test": "Wilson 95%", "level": 0.95}},
    "tables": {"groups": [{"group": "A", "rate": 0.5}, {"group": "B", "rate": 0.25}]},
    "figures": {},
}


def app(monkeypatch, out: Path, package: str = FIXTURE_PACKAGE, page: str | None = None) -> AppTest:
    """An AppTest of the viewer as `autopsy app --out OUT` starts it (first run done)."""
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--out", str(out), "--incidents", package])
    at = AppTest.from_file(APP, default_timeout=90).run()
    assert not at.exception, at.exception
    if page is not None:
        open_page(at, page)
    return at


def open_page(at: AppTest, url_path: str) -> AppTest:
    """Open a page registered with st.Page(callable, url_path=...) (AppTest.switch_page wants files)."""
    from streamlit.navigation.page import calc_hash  # what st.Page hashes its url_path with

    at._page_hash = calc_hash(url_path)
    at.run()
    assert not at.exception, at.exception
    return at


def write_fixture_run(out: Path) -> None:
    (out / "metrics").mkdir(parents=True)
    (out / "metrics" / "alpha.json").write_text(json.dumps(RUN))
    figures = out / "outputs" / "alpha"
    figures.mkdir(parents=True)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["A", "B"], [0.5, 0.25], color="#0072B2")
    fig.savefig(figures / "rate.png")
    plt.close(fig)


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [e.value for e in (*at.info, *at.error, *at.warning, *at.success)] + [h.value for h in at.subheader]
    return "\n".join(str(p) for p in parts)


# --------------------------------------------------------------------------- generic pages


def test_home_shows_a_card_per_incident_with_run_status(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path)
    assert at.title[0].value == "AI Autopsy"
    page = texts(at)
    assert "Alpha incident" in page and "a test harm" in page and "2020-01-01" in page
    assert "Not run yet" in page
    write_fixture_run(tmp_path)
    at.run()
    assert "Run found: quick profile" in texts(at)


def test_about_page_has_methods_licences_and_the_perceived_labels_note(monkeypatch, tmp_path):
    from autopsy.data import PERCEIVED_LABELS_NOTE

    at = app(monkeypatch, tmp_path, page="about")
    page = texts(at)
    assert at.title[0].value == "About the lab"
    assert PERCEIVED_LABELS_NOTE in page
    for heading in ("Methods", "Sanity checks", "Licences and sources", "Your photos", "Accessibility"):
        assert heading in [h.value for h in at.header]
    assert "Adebayo" in page


def test_incident_page_without_a_run_offers_the_quick_profile_and_reports_a_failure(monkeypatch, tmp_path):
    import dataclasses

    from app import lab as lab_module
    from autopsy import registry
    from autopsy.contract import Stage

    def broken(ctx, photos, scores):
        raise RuntimeError("a stage broke")

    real = registry.discover(FIXTURE_PACKAGE)
    patched = {slug: dataclasses.replace(i, stages=(*i.stages[:2], Stage("findings", broken)))
               for slug, i in real.items()}
    monkeypatch.setattr(lab_module.registry, "discover", lambda package="incidents": patched)
    at = app(monkeypatch, tmp_path, page="alpha")
    assert at.title[0].value == "Alpha incident"
    assert "has not been run here yet" in texts(at)
    button = at.button(key="run-alpha")
    assert button.label == "Run the quick profile now"
    button.click().run()
    assert not at.exception
    assert any("The run failed: a stage broke" in e.value for e in at.error)


def test_running_the_quick_profile_from_the_page_shows_the_story(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path, page="alpha")
    at.button(key="run-alpha").click().run()  # the fixture's real quick profile: a second on the CPU
    assert not at.exception
    assert "We ran 48 images." in texts(at)
    assert (tmp_path / "metrics" / "alpha.json").is_file()


def test_incident_page_renders_the_story_blocks_of_the_run(monkeypatch, tmp_path):
    write_fixture_run(tmp_path)
    at = app(monkeypatch, tmp_path, page="alpha")
    page = texts(at)
    assert "We ran 540 images." in page
    assert "0.58 (95% CI 0.55–0.61; n = 1,000; Wilson 95%)" in page
    assert "| group | rate |" in page  # the story's table block
    assert any("## What happened" in m.value for m in at.markdown)
    images = at.get("image")
    assert images, "the story's figure is not shown"
    assert "A bar chart of the rate per group" in str(images[0].proto)  # alt text and caption
    assert at.get("download_button"), "no Download report button"


def test_report_download_serves_the_html_report(tmp_path):
    from app.render import report_bytes, resolved_story
    from autopsy.runs import RunPaths

    write_fixture_run(tmp_path)
    paths = RunPaths(tmp_path, "alpha")
    story = REPO / "tests/fixtures/lab_fixture/alpha/story.md"
    html = report_bytes(resolved_story(story, paths), paths).decode()
    assert html.startswith("<!doctype html>") and "We ran 540 images." in html and "data:image/png;base64" in html
    assert not paths.report.exists(), "rendering the download must not write into the output folder"


def test_run_record_tab_shows_provenance_and_parameters(monkeypatch, tmp_path):
    write_fixture_run(tmp_path)
    at = app(monkeypatch, tmp_path, page="alpha")
    at.session_state["view"] = "Run record"
    at.run()
    assert not at.exception
    assert "Pinned artefacts used" in [s.value for s in at.subheader]
    assert at.dataframe, "no provenance table"
    assert at.button(key="run-alpha").label == "Run the quick profile again"


def test_a_story_that_does_not_resolve_is_an_error_in_the_page(monkeypatch, tmp_path):
    write_fixture_run(tmp_path)
    (tmp_path / "outputs" / "alpha" / "rate.png").unlink()
    at = app(monkeypatch, tmp_path, page="alpha")
    assert any("rate.png" in e.value for e in at.error)


def test_a_broken_incident_package_does_not_take_the_viewer_down(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path, package="no_such_package_here")
    assert any("Could not load the incidents" in e.value for e in at.error)


# --------------------------------------------------------------------------- uploads


def _jpeg(size=(64, 48), exif_orientation=None) -> bytes:
    from PIL import Image

    image = Image.new("RGB", size, (200, 120, 40))
    buffer = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def test_upload_checks_type_size_bombs_and_orientation(monkeypatch):
    from PIL import Image

    from app import uploads
    from autopsy.data import ImageError

    assert uploads.check_upload("rotated.jpg", _jpeg(exif_orientation=6)).size == (48, 64)  # EXIF applied
    with pytest.raises(ImageError, match="upload a JPEG, PNG or WebP"):
        uploads.check_upload("notes.jpg", b"this is not an image at all")
    with pytest.raises(ImageError, match="a GIF image"):
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, format="GIF")
        uploads.check_upload("anim.gif", buffer.getvalue())
    with pytest.raises(ImageError, match="10 MB limit"):
        uploads.check_upload("huge.jpg", b"\xff" * (uploads.MAX_UPLOAD_BYTES + 1))
    monkeypatch.setattr(uploads, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression bombs"):
        uploads.check_upload("bomb.jpg", _jpeg((100, 100)))


def test_upload_limit_matches_the_server_config():
    import tomllib

    from app import uploads

    config = tomllib.loads((REPO / "app/.streamlit/config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 2**20 == uploads.MAX_UPLOAD_BYTES


# --------------------------------------------------------------------------- Twitter: a real run and the explorer

def synthetic_run(story_path: Path, out: Path, slug: str) -> Path:
    """A run record and figures that satisfy every placeholder of ``story_path``, with placeholder values.

    A real quick run of the Twitter incident takes minutes (attribution sanity checks, feature
    visualisation), too long for this suite, so the story page is tested against a run shaped by the
    story itself: each ``metrics.*`` path gets a number (when filtered) or an estimate record, each
    ``table("...")`` a small table, each figure a plain chart (no faces). The numbers are not the
    incident's; the page, its sections, figures and alt text are the real story's.
    """
    from autopsy.story import FIGURE_LINE

    text = story_path.read_text()
    metrics: dict = {}
    for expression in re.findall(r"{{(.*?)}}", text):
        match = re.match(r"\s*metrics\.([\w.]+)\s*(\|)?", expression)
        if not match:
            continue
        *parents, leaf = match[1].split(".")
        node = metrics
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = 0.5 if match[2] else {"value": 0.5, "low": 0.4, "high": 0.6, "n": 10, "test": "fixture"}
    tables = {name: [{"row": "fixture", "value": 0.5}] for name in re.findall(r'table\("(\w+)"', text)}
    params = {name: 1 for name in re.findall(r"run\.params\.(\w+)", text)}
    record = {**RUN, "slug": slug, "metrics": metrics, "tables": tables, "params": {"profile": "quick", **params}}
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    (out / "metrics" / f"{slug}.json").write_text(json.dumps(record))
    figures = out / "outputs" / slug
    figures.mkdir(parents=True, exist_ok=True)
    for line in text.splitlines():
        if figure := FIGURE_LINE.match(line):
            fig, ax = plt.subplots(figsize=(3, 2))
            ax.bar(["A", "B"], [0.5, 0.25], color="#0072B2")
            fig.savefig(figures / figure["src"])
            plt.close(fig)
    return out


@pytest.fixture(scope="module")
def cached_photos(offline_lab):
    """A few public-set photos in the (temporary) cache, as `autopsy fetch` would leave them."""
    from autopsy.assets import fetch
    from autopsy.data import FAIRFACE_CONTEXT, FAIRFACE_CROPS

    for image_set in (FAIRFACE_CONTEXT, FAIRFACE_CROPS):
        for row in image_set.rows[:2]:
            fetch(image_set.asset(row))


def test_twitter_page_tells_the_story_of_a_run(monkeypatch, tmp_path):
    from incidents.twitter_crop import INCIDENT

    synthetic_run(INCIDENT.story, tmp_path, "twitter_crop")
    at = app(monkeypatch, tmp_path, package="incidents", page="twitter_crop")
    assert at.title[0].value == "Twitter image cropping"
    headings = "\n".join(m.value for m in at.markdown)
    for section in ("What happened", "The public method", "What the simulation shows", "Limits", "Sources"):
        assert f"## {section}" in headings
    figures = at.get("image")
    assert figures and all(f.proto.imgs[0].alt for f in figures), "every story figure needs alt text"
    assert at.get("download_button")
    assert not at.error


def test_twitter_explorer_single_photo_pair_and_sliders(monkeypatch, tmp_path, cached_photos):
    pytest.importorskip("incidents.twitter_crop.model", reason="the Twitter model module is not in this checkout")
    at = app(monkeypatch, tmp_path, package="incidents", page="twitter_crop")
    at.session_state["view"] = "Explorer"
    at.run()
    assert any("Upload a photo or pick one" in i.value for i in at.info)
    at.radio(key="tw-a-source").set_value("From your cache of the public sets").run()
    assert not at.exception and not at.error

    def alts():
        return [i.proto.imgs[0].alt for i in at.get("image")]

    assert any(a.startswith("Saliency map overlay") for a in alts())
    assert sum(a.startswith("Crop at aspect ratio") for a in alts()) == 4
    before = next(a for a in alts() if a.startswith("Saliency map overlay"))

    at.select_slider(key="tw-skin").set_value(9).run()  # counterfactual: a widget change re-runs
    assert not at.exception
    assert any("Monk Skin Tone level 9" in c.value for c in at.caption)
    assert any(a.startswith("Saliency map overlay") for a in alts())

    at.select_slider(key="tw-skin").set_value("original")
    at.toggle(key="tw-attr-on").set_value(True).run()
    assert not at.exception
    assert any(a.startswith("Attribution map (gradient)") for a in alts())
    assert next(a for a in alts() if a.startswith("Saliency map overlay")) == before

    at.toggle(key="tw-attr-on").set_value(False)
    at.segmented_control(key="tw-mode").set_value("Pair (published protocol)").run()
    at.radio(key="tw-b-source").set_value("From your cache of the public sets").run()
    assert not at.exception
    pair = [a for a in alts() if a.startswith("Saliency map overlay of the pair")]
    assert len(pair) == 2 and "A | B" in pair[0] and "B | A" in pair[1]
    verdicts = [i.value for i in at.info]  # not green/red boxes: the verdict is in words and an icon
    assert any("wins in both orders" in v or "position" in v for v in verdicts)


# --------------------------------------------------------------------------- Zoom explorer (module on its own)


def _zoom_explorer_script(repo: str, out: str):
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, repo)
    from app.explorers import zoom_matting
    from app.lab import Lab

    zoom_matting.show(Lab(out=Path(out)), SimpleNamespace(slug="zoom_matting", title="Zoom virtual backgrounds"))


def test_zoom_explorer_mask_coverage_backgrounds_and_sliders(tmp_path, cached_photos):
    pytest.importorskip("autopsy.models.mediapipe", reason="the MediaPipe ports are not in this checkout")
    at = AppTest.from_function(_zoom_explorer_script, args=(str(REPO), str(tmp_path)), default_timeout=120).run()
    assert not at.exception
    at.radio(key="zm-source").set_value("From your cache of the public sets").run()
    assert not at.exception and not at.error
    alts = [i.proto.imgs[0].alt for i in at.get("image")]
    assert any(a.startswith("Person mask overlay") for a in alts) and any("virtual background" in a for a in alts)
    assert at.metric and at.metric[0].value.endswith("%")  # face coverage
    at.slider(key="zm-stops").set_value(-2.0).run()
    assert not at.exception and any("exposure -2 stops" in c.value for c in at.caption)
    at.select_slider(key="zm-skin").set_value(9)
    at.selectbox(key="zm-background").set_value("Charcoal").run()
    assert not at.exception and any("Monk level 9" in c.value for c in at.caption)
    assert any("'Charcoal'" in i.proto.imgs[0].alt for i in at.get("image"))
