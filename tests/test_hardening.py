"""Bad input, hostile labels and a broken environment give clear errors or correct results (issue 16).

Every input is made here: tiny crafted images, CSVs, run records and asset files.
"""

import base64
import csv
import errno
import io
import json
import re
import shutil
import struct
import tempfile
import tracemalloc
import zlib

import numpy as np
import pytest
from markdown_it import MarkdownIt
from PIL import Image

from autopsy import assets, story
from autopsy.assets import Asset, AssetCacheError, AssetIntegrityError, fetch, sha256_of
from autopsy.data import (BACKGROUND, MAX_ASPECT, MIN_SIDE, Exclusions, ImageError, exclude, labelled_folder,
                          load_image, select_per_group)
from autopsy.story import StoryError

HOSTILE = [
    "Black\n![x](/etc/hostname)",
    "![remote](https://evil.example/pixel.png)",
    '<img src="https://evil.example/tracker.png"><script>alert(1)</script>',
    "[click](javascript:alert(1))",
    "## A heading from the data",
    "White | injected | cells",
    "<https://evil.example/autolink>",
]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_bytes_io(image: Image.Image) -> io.BytesIO:
    return io.BytesIO(png_bytes(image))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels but holds none (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- 1. story rendering

STORY = """---
title: Hostile labels
slug: hostile
date: 2020-01-01
sources:
  - title: A source
    url: https://example.org/source
licences:
  - CC0
harms:
  - none
---
## What happened
The group was {{ metrics.label }}; its rate {{ metrics.rate }}.

## The public method
{{ table("groups") }}

## How we reproduced it
Seed {{ run.params.seed }}.

## What the simulation shows
![A plain chart](chart.png)

## What the autopsy found
Nothing.

## Limits
Small.

## Sources
See below.
"""


@pytest.fixture
def hostile_run(tmp_path):
    """A story, its outputs folder with one figure, a secret file beside it, and a hostile run record."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(Image.new("RGB", (16, 16), (1, 2, 3))))
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    chart = png_bytes(Image.new("RGB", (32, 16), (0, 114, 178)))
    (outputs / "chart.png").write_bytes(chart)
    path = tmp_path / "story.md"
    path.write_text(STORY)
    leaks = [*HOSTILE, f"x\n![x]({secret})", "x\n![x](../secret.png)"]
    run = {
        "profile": "quick", "created": "2026-01-01", "lab_version": "0", "git_commit": "<b>bold</b>",
        "params": {"seed": "1\n![x](../secret.png)"},
        "provenance": [{"name": "<i>set</i>", "count": 1, "sha256": "ab" * 32, "licence": "![l](/etc/hostname)",
                        "citation": HOSTILE[2], "source_page": "javascript:alert(1)"}],
        "metrics": {"label": leaks[0],
                    "rate": {"value": 0.5, "low": 0.4, "high": 0.6, "n": 10, "test": HOSTILE[1],
                             "warning": HOSTILE[2], "p_value": None}},
        "tables": {"groups": [{"group": leak, "rate": {"value": 0.5, "low": 0.4, "high": 0.6, "n": 10,
                                                        "test": HOSTILE[3], "warning": leak}}
                              for leak in leaks]},
    }
    return path, outputs, run, secret, chart


def test_labels_with_markdown_and_html_embed_no_file_and_no_remote_reference(hostile_run, tmp_path):
    path, outputs, run, secret, chart = hostile_run
    resolved = story.resolve(story.parse(path), run, outputs)
    figures = [b for b in resolved.blocks if b.kind == "figure"]
    assert [f.path for f in figures] == [outputs / "chart.png"]
    sections = [b.section for b in resolved.blocks]
    assert "A heading from the data" not in " ".join(sections)

    page = story.render_html(resolved, tmp_path / "report.html").read_text()
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources == [f"data:image/png;base64,{base64.b64encode(chart).decode()}"]  # only the story's figure
    assert base64.b64encode(secret.read_bytes()).decode()[:40] not in page
    links = re.findall(r'\bhref="([^"]*)"', page)
    assert links == ["https://example.org/source"], links  # the story's own source; nothing from the run
    assert "<script" not in page and "<img src=\"https" not in page and "<i>set</i>" not in page
    assert "<h2>A heading from the data" not in page
    assert "<link" not in page and "url(" not in page
    # the labels are still shown, as text
    assert "A heading from the data" in page and "evil.example/pixel.png" in page


def test_streamlit_markdown_of_hostile_labels_has_no_image_link_or_html(hostile_run):
    path, outputs, run, *_ = hostile_run
    resolved = story.resolve(story.parse(path), run, outputs)
    # Streamlit renders Markdown with images, links and GFM tables on: parse the same way
    md = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table")
    for block in resolved.blocks:
        if block.kind != "markdown":
            continue
        html = md.render(block.text)
        assert "<img" not in html and "<a " not in html and "<script" not in html, html
        assert "<h2>A heading from the data" not in html


@pytest.mark.parametrize("src", ["/etc/hostname.png", "../secret.png", "sub/../../secret.png",
                                 "https://evil.example/x.png", "file:///etc/passwd.png", "data:image/png.png",
                                 "~/secret.png", "chart.svg"])
def test_figures_come_only_from_files_inside_the_outputs(hostile_run, src):
    path, outputs, run, *_ = hostile_run
    path.write_text(STORY.replace("(chart.png)", f"({src})"))
    with pytest.raises(StoryError, match="figure"):
        story.resolve(story.parse(path), run, outputs)


def test_a_figure_linked_out_of_the_outputs_is_refused(hostile_run):
    path, outputs, run, secret, _ = hostile_run
    (outputs / "chart.png").unlink()
    (outputs / "chart.png").symlink_to(secret)
    with pytest.raises(StoryError, match="outside the run's outputs"):
        story.resolve(story.parse(path), run, outputs)


def test_an_image_inside_story_text_is_refused(hostile_run):
    path, outputs, run, *_ = hostile_run
    path.write_text(STORY.replace("Nothing.", "See ![x](chart.png) here."))
    with pytest.raises(StoryError, match="line of its own"):
        story.resolve(story.parse(path), run, outputs)


def test_a_damaged_estimate_record_is_a_story_error(hostile_run):
    path, outputs, run, *_ = hostile_run
    run["metrics"]["rate"]["n"] = "![x](/etc/hostname)"
    with pytest.raises(StoryError, match="metrics.rate"):
        story.resolve(story.parse(path), run, outputs)


def test_an_undefined_estimate_renders_as_not_available(hostile_run):
    path, outputs, run, *_ = hostile_run
    run["metrics"]["rate"].update(value=None, low=None, high=None, n=0)  # Estimate.to_dict of a NaN
    text = "".join(b.text for b in story.resolve(story.parse(path), run, outputs).blocks)
    assert "n/a (95% CI n/a–n/a; n = 0;" in text


@pytest.mark.parametrize("content", ['{"metrics": {', "[1, 2]", "\xff\xfe"])
def test_a_corrupt_run_record_names_the_file(tmp_path, content):
    metrics = tmp_path / "metrics" / "alpha.json"
    metrics.parent.mkdir()
    metrics.write_bytes(content.encode("latin-1"))
    with pytest.raises(StoryError) as err:
        story.load_run(metrics)
    assert str(metrics) in str(err.value) and "autopsy run" in str(err.value)


# --------------------------------------------------------------------------- 2, 7, 9. images

def test_extreme_shapes_are_refused_before_any_pixel_is_decoded():
    from app.uploads import check_upload

    strip = png_bytes(Image.new("RGB", (3000, 2)))
    assert len(strip) < 200
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=f"at least {MIN_SIDE} px"):
            load_image(io.BytesIO(strip))
        with pytest.raises(ImageError, match=f"at least {MIN_SIDE} px"):
            check_upload("strip.png", strip)
        with pytest.raises(ImageError, match=r"150:1.*up to 10:1"):
            check_upload("ribbon.png", png_bytes(Image.new("RGB", (3000, 20))))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"refusing a 3000x2 PNG used {peak / 2**20:.0f} MB"


def test_accepted_shapes_keep_every_working_size_bounded():
    from app.uploads import MAX_SIDE, check_upload

    edge = check_upload("edge.png", png_bytes(Image.new("RGB", (MIN_SIDE * MAX_ASPECT, MIN_SIDE))))
    assert edge.size == (MIN_SIDE * MAX_ASPECT, MIN_SIDE)
    # scaling the shorter side to any working side s gives at most MAX_ASPECT * s * s pixels
    thumb = check_upload("wide.png", png_bytes(Image.new("RGB", (2000, 200))))
    thumb.thumbnail((MAX_SIDE, MAX_SIDE))
    assert max(thumb.size) <= MAX_SIDE and min(thumb.size) >= MAX_SIDE // MAX_ASPECT


def test_tiny_images_are_refused_naming_the_minimum(tmp_path):
    Image.new("RGB", (15, 40)).save(tmp_path / "tiny.png")
    with pytest.raises(ImageError, match=r"tiny.png.*15x40.*at least 16 px"):
        load_image(tmp_path / "tiny.png")
    assert load_image(png_bytes_io(Image.new("RGB", (16, 16)))).size == (16, 16)


def test_16_bit_greyscale_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    rgb = np.asarray(load_image(png_bytes_io(image)))
    assert rgb.shape == (64, 64, 3) and rgb.min() == 0 and rgb.max() == 255
    assert abs(rgb.mean() - 127.5) < 1  # Pillow's convert would make almost all of it 255
    grey = np.asarray(load_image(png_bytes_io(Image.fromarray(np.full((32, 32), 32768, np.uint16)))))
    assert (grey == 128).all()


@pytest.mark.parametrize("image", [
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)),
    Image.new("LA", (32, 32), (0, 0)),
    Image.new("P", (32, 32), 0),
], ids=["RGBA", "LA", "P"])
def test_transparency_is_composited_on_the_stated_background(image):
    if image.mode == "P":
        image.info["transparency"] = 0
    assert load_image(png_bytes_io(image)).getpixel((5, 5)) == BACKGROUND
    assert load_image(png_bytes_io(image), background=(0, 177, 64)).getpixel((5, 5)) == (0, 177, 64)


def test_half_transparent_pixels_blend_with_the_background():
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 128))
    assert load_image(png_bytes_io(image)).getpixel((0, 0)) == (127, 127, 127)


def test_bomb_and_damage_messages_name_the_real_format():
    from app.uploads import check_upload

    for read in (lambda data: load_image(io.BytesIO(data)), lambda data: check_upload("bomb.png", data)):
        with pytest.raises(ImageError) as err:
            read(png_header(20_000, 20_000))  # 400 MP: Pillow itself refuses to open it
        assert "PNG file" in str(err.value) and "pixel limit" in str(err.value)
        assert "use a JPEG or PNG" not in str(err.value)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 100, 50)).save(jpeg, format="JPEG")
    with pytest.raises(ImageError, match="JPEG file is damaged or truncated"):
        load_image(io.BytesIO(jpeg.getvalue()[:200]))


def test_explorer_maps_refuse_absurd_sizes():
    from app.imaging import resize_map

    with pytest.raises(ValueError, match="pixels"):
        resize_map(np.zeros((4, 4)), (196_608, 192))
    assert resize_map(np.zeros((4, 4)), (8, 6)).shape == (6, 8)


# --------------------------------------------------------------------------- 6, 9. labels

def photo_folder(tmp_path, rows, *, colours=None):
    """A folder of distinct 32x32 PNGs named in ``rows`` and a labels CSV with exactly ``rows``."""
    images = tmp_path / "photos"
    images.mkdir(exist_ok=True)
    for i, name in enumerate(sorted({r[0] for r in rows if r[0] and "/" not in r[0] and r[0] != "missing.png"})):
        Image.new("RGB", (32, 32), (i * 20 % 256, 50, 90)).save(images / name)
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([["file", "race", "gender"], *rows])
    return images, labels


def test_labels_are_normalised_to_the_canonical_groups(tmp_path):
    images, labels = photo_folder(tmp_path, [["a.png", " black ", "FEMALE"], ["b.png", "Black", "female"],
                                             ["c.png", "latino hispanic", " Male"], ["d.png", "east-asian", "male"]])
    dataset = labelled_folder(images, labels)
    assert dataset["race"] == ["Black", "Black", "Latino_Hispanic", "East Asian"]
    assert dataset["gender"] == ["Female", "Female", "Male", "Male"]


def test_unknown_misspelt_and_empty_labels_are_refused_naming_the_rows(tmp_path):
    images, labels = photo_folder(tmp_path, [["a.png", "White", "Male"], ["b.png", "Whte", "Female"],
                                             ["c.png", "Black", ""], ["d.png", "Martian", "Male"]])
    with pytest.raises(ValueError) as err:
        labelled_folder(images, labels)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert "line 3, b.png: race 'Whte' is not a known group (did you mean 'White'?)" in message
    assert "line 4, c.png: the gender label is empty" in message
    assert "line 5, d.png: race 'Martian'" in message and "Latino_Hispanic" in message


def test_duplicate_rows_and_identical_files_are_refused(tmp_path):
    images, labels = photo_folder(tmp_path, [["a.png", "White", "Male"], ["b.png", "Black", "Male"],
                                             ["a.png", "White", "Male"], ["./b.png", "Black", "Male"],
                                             ["copy.png", "Black", "Female"]])
    shutil.copy(images / "a.png", images / "copy.png")
    with pytest.raises(ValueError) as err:
        labelled_folder(images, labels)
    message = str(err.value)
    assert "line 4, a.png: the file is listed again (first on line 2)" in message
    assert "line 5, ./b.png: the file is listed again (first on line 3)" in message
    assert "line 6, copy.png: the same image file as line 2 (a.png)" in message


def test_files_outside_the_images_folder_are_refused(tmp_path):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (32, 32)).save(outside)
    images, labels = photo_folder(tmp_path, [["a.png", "White", "Male"], ["../outside.png", "White", "Female"],
                                             [str(outside), "Black", "Male"], ["link.png", "Black", "Female"]])
    (images / "link.png").unlink()
    (images / "link.png").symlink_to(outside)
    with pytest.raises(ValueError) as err:
        labelled_folder(images, labels)
    message = str(err.value)
    for line in (3, 4, 5):
        assert re.search(rf"line {line}, [^\n]*: the file points outside the images folder", message), message


def test_label_errors_and_missing_files_come_in_one_message(tmp_path):
    images, labels = photo_folder(tmp_path, [["missing.png", "White", "Male"], ["", "White", "Male"]])
    with pytest.raises(ValueError) as err:
        labelled_folder(images, labels)
    assert "line 2, missing.png: listed in labels.csv but not found" in str(err.value)
    assert "line 3: the file column is empty" in str(err.value)


def test_exclusions_record_every_photo_left_out(tmp_path):
    rows = [[f"{i}.png", race, gender] for i, (race, gender) in enumerate(
        [("Black", "Female")] * 3 + [("White", "Male")] * 2 + [("Indian", "Male")])]
    dataset = labelled_folder(*photo_folder(tmp_path, rows))
    kept, limited = select_per_group(dataset, 2)
    assert kept["file"] == ["0.png", "1.png", "3.png", "4.png", "5.png"]
    studied, outside = exclude(kept, [r in ("Black", "White") for r in kept["race"]], "not in the paper's groups")
    record = (limited + outside).to_dict()
    assert record["n_listed"] == 6 and record["n_excluded"] == 2
    assert record["by_reason"] == {"over the limit of 2 per race x gender group": 1, "not in the paper's groups": 1}
    assert {p["file"] for p in record["photos"]} == {"2.png", "5.png"}
    assert len(studied) == 4 and json.dumps(record)
    assert select_per_group(dataset, None)[1] == Exclusions(6)


# --------------------------------------------------------------------------- 8. environment errors

PAYLOAD = b"a pinned test file\n"


@pytest.fixture
def small_asset(tmp_path, monkeypatch):
    """A pinned file in a throw-away mirror, and a fresh cache path; warnings start afresh."""
    import hashlib

    mirror = tmp_path / "mirror"
    (mirror / "models").mkdir(parents=True)
    (mirror / "models" / "tiny.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv("AUTOPSY_MIRROR", str(mirror))
    monkeypatch.setenv("AUTOPSY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "_warned_caches", set())
    asset = Asset(name="tiny.bin", url="https://example.org/tiny.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                  size=len(PAYLOAD), licence="CC0", citation="-", source_page="https://example.org/",
                  mirror_path="models/tiny.bin")
    return asset, mirror / "models" / "tiny.bin"


def without_mirror_but_a_network(monkeypatch, write=lambda asset, tmp: tmp.write_bytes(PAYLOAD)):
    monkeypatch.delenv("AUTOPSY_MIRROR")
    monkeypatch.setenv("AUTOPSY_OFFLINE", "0")
    monkeypatch.setattr(assets, "_download", write)


def read_only(monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def disk_full(monkeypatch):
    def fill(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", fill)


def test_cache_path_that_is_a_file_uses_the_verified_mirror_file(small_asset, tmp_path, monkeypatch):
    asset, source = small_asset
    (tmp_path / "cache").write_text("I am a file")
    with pytest.warns(UserWarning, match=r"cache path .*cache is a file, not a folder.*AUTOPSY_CACHE"):
        assert fetch(asset) == source
    assert fetch(asset) == source  # warned once per cache


def test_cache_path_that_is_a_file_without_a_mirror_is_a_clear_error(small_asset, tmp_path, monkeypatch):
    asset, _ = small_asset
    (tmp_path / "cache").write_text("I am a file")
    without_mirror_but_a_network(monkeypatch)
    with pytest.raises(AssetCacheError, match=rf"{re.escape(str(tmp_path / 'cache'))} is a file.*AUTOPSY_CACHE"):
        fetch(asset)


@pytest.mark.parametrize("break_cache,says", [(read_only, "is not writable"), (disk_full, "no space left")])
def test_unwritable_cache_uses_the_mirror_file_in_place(small_asset, monkeypatch, break_cache, says):
    asset, source = small_asset
    break_cache(monkeypatch)
    with pytest.warns(UserWarning, match=says):
        assert fetch(asset) == source


def test_unwritable_cache_without_a_mirror_names_the_path_and_the_fix(small_asset, tmp_path, monkeypatch):
    asset, _ = small_asset
    without_mirror_but_a_network(monkeypatch)
    read_only(monkeypatch)
    with pytest.raises(AssetCacheError) as err:
        fetch(asset)
    assert "tiny.bin" in str(err.value) and str(tmp_path / "cache") in str(err.value)
    assert "not writable" in str(err.value) and "AUTOPSY_CACHE" in str(err.value)


def test_full_disk_during_a_download_is_a_clear_error_and_leaves_nothing(small_asset, tmp_path, monkeypatch):
    asset, _ = small_asset

    def half_then_full(asset, tmp):
        tmp.write_bytes(PAYLOAD[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    without_mirror_but_a_network(monkeypatch, half_then_full)
    with pytest.raises(AssetCacheError, match=r"no space left .*needs 19 bytes.*Free some space"):
        fetch(asset)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_a_tampered_mirror_file_is_refused_even_when_the_cache_is_unwritable(small_asset, monkeypatch):
    asset, source = small_asset
    source.write_bytes(b"changed")
    read_only(monkeypatch)
    with pytest.raises(AssetIntegrityError, match=sha256_of(source)):
        fetch(asset)


def test_an_unreadable_mirror_file_is_named_as_such(small_asset, monkeypatch):
    asset, source = small_asset

    def unreadable(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "copyfile", unreadable)
    monkeypatch.setattr(assets, "sha256_of", unreadable)
    with pytest.raises(assets.AssetUnavailableError, match=rf"mirror file {re.escape(str(source))} cannot be read"):
        fetch(asset)
