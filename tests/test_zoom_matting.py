"""Zoom virtual background: the face-coverage measure, the pinned models, a smoke run through the runner and
its report, the explorer's measurement equal to the run's, bring-your-own photos, and photos without a
detected face (counted, never dropped)."""

import csv
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from autopsy import runner, story
from autopsy.data import load_image
from autopsy.models import mediapipe
from autopsy.runs import RunPaths
from incidents.zoom_matting import INCIDENT, data, groups, interventions, measure, models

# -- the measure ---------------------------------------------------------------------------------


def test_face_coverage_equals_hand_computed_values():
    mask = np.full((10, 10), 0.2)
    mask[:, :5] = 0.7  # columns 0-4 are person
    whole = measure.face_coverage(mask, (0, 0, 10, 10))
    assert whole.hard == pytest.approx(0.5) and whole.soft == pytest.approx(0.45) and whole.pixels == 100
    # columns 2..5 (four columns, three of them person), rows 2..7
    part = measure.face_coverage(mask, (2, 2, 6, 8))
    assert part.pixels == 24
    assert part.hard == pytest.approx(3 / 4)
    assert part.soft == pytest.approx((3 * 0.7 + 0.2) / 4)
    # a box partly outside the image is clipped to it: rows and columns 0..2
    clipped = measure.face_coverage(mask, (-5, -5, 3, 3))
    assert clipped.pixels == 9 and clipped.hard == 1.0
    # the binarising threshold is inclusive: p >= 0.5 is person
    assert measure.face_coverage(np.full((4, 4), 0.5), (0, 0, 4, 4)).hard == 1.0
    with pytest.raises(ValueError, match="no pixel inside"):
        measure.face_coverage(mask, (20, 20, 30, 30))


def test_keypoints_kept_counts_eyes_nose_and_mouth():
    mask = np.zeros((10, 10))
    mask[:, :5] = 1.0
    points = ((1.5, 2.0), (7.2, 2.0), (4.9, 5.0), (5.0, 8.0), (0.0, 0.0), (9.0, 9.0))  # ears are ignored
    assert measure.keypoints_kept(mask, points) == pytest.approx(2 / 4)


def test_head_erased_flag_and_a_missing_face():
    assert measure.ERASED_BELOW == 0.5
    assert measure.head_erased(0.49) and not measure.head_erased(0.5)
    assert not measure.head_erased(float("nan"))  # no face: counted as a miss, not as an erasure
    assert measure.head_erased(0.7, below=0.75)
    none = measure.measure_face(np.ones((4, 4)), None)
    assert math.isnan(none.coverage) and not none.erased


def test_central_face_is_the_one_nearest_the_centre():
    corner = mediapipe.Detection(box=(0, 0, 20, 20), score=0.99, keypoints=())
    centre = mediapipe.Detection(box=(40, 40, 60, 60), score=0.6, keypoints=())
    assert measure.central_face([corner, centre], 100, 100) is centre
    assert measure.central_face([], 100, 100) is None


def test_background_replacement_never_paints_over_the_head():
    mask = np.zeros((100, 100))  # the model kept nothing: an erased head
    keep = interventions.keep_region(mask, (40, 40, 60, 60), dilation=3)
    assert keep[40:60, 40:60].all() and keep[30, 50]  # the face and the hair above it stay
    assert not keep[5, 5]


# -- the pinned models ----------------------------------------------------------------------------


def test_pins_carry_mediapipes_preprocessing_and_the_model_card():
    pin = models.SelfieSegmentation.GENERAL.value
    assert pin.asset is mediapipe.ASSETS["selfie_segmentation"]
    assert (pin.transforms["size_hw"], pin.transforms["keep_aspect_ratio"]) == ((256, 256), False)
    assert models.FaceDetection.SHORT_RANGE.value.transforms["value_range"] == (-1.0, 1.0)
    card = models.published(pin)
    assert card["worst_region"] == {"region": "Western Africa", "iou": 0.9471, "plus_minus": 0.0157}
    assert card["best_region"]["region"] == "Eastern Asia" and card["mean"]["region"] == "all 17 regions"
    assert INCIDENT.weights["segmenter"] is pin


def test_builders_without_weights_read_no_file(monkeypatch):
    def refuse(self):
        raise AssertionError(f"weights=None must not read {self.name}")

    monkeypatch.setattr(type(models.SelfieSegmentation.GENERAL.value), "fetch", refuse)
    net = INCIDENT.build("segmenter", weights=None)
    assert net(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 256, 256)
    assert INCIDENT.build("detector", weights=None).input_size == 128
    with pytest.raises(ValueError, match="does not match the weights"):
        models.segmenter(weights=models.SelfieSegmentation.LANDSCAPE, variant="general")


def test_batched_detection_equals_the_detector(mirror):
    from autopsy.data import FAIRFACE_CONTEXT, load_image_set

    paths = load_image_set(FAIRFACE_CONTEXT, limit_per_group=1)["path"][:3]
    images = [load_image(p) for p in paths] + [Image.new("RGB", (300, 200), (128, 128, 128))]
    detector = models.face_detector()
    batched = detector.detect_many(images, batch_size=3)
    for got, image in zip(batched, images):
        want = detector.detect(image)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert np.allclose(a.box, b.box, atol=1e-3) and a.score == pytest.approx(b.score, abs=1e-5)
    assert batched[-1] == []  # a plain grey picture has no face


# -- groups: misses are counted --------------------------------------------------------------------


def test_photos_without_a_face_are_counted_per_group():
    table = pd.DataFrame({
        "race": ["Black", "Black", "Black", "White", "White"],
        "gender": ["Male"] * 5,
        "face_detected": [True, True, False, True, True],
        "coverage": [0.3, 0.9, np.nan, 0.95, 1.0],
        "soft_coverage": [0.35, 0.88, np.nan, 0.94, 0.99],
        "keypoints_kept": [0.5, 1.0, np.nan, 1.0, 1.0],
    })
    table["erased"] = [measure.head_erased(c) for c in table["coverage"]]
    by_race = groups.by_group(table, "race", n_boot=50, seed=0)
    black = by_race["Black"]
    assert black.n_photos == 3 and black.n_faces == 2 and black.n_no_face == 1
    assert black.no_face.value == pytest.approx(1 / 3) and black.no_face.n == 3
    assert black.erased.value == pytest.approx(1 / 2) and black.erased.n == 2  # over detected faces
    assert black.coverage.value == pytest.approx(0.6) and black.coverage.n == 2
    assert by_race["White"].n_no_face == 0
    assert list(by_race) == ["White", "Black"]  # the lab's race order


def test_settings_are_checked():
    with pytest.raises(ValueError, match="erased_below must be a share"):
        INCIDENT.settings("smoke", {"erased_below": 5})
    with pytest.raises(ValueError, match="unknown background"):
        INCIDENT.settings("smoke", {"backgrounds": ["beach"]})
    assert INCIDENT.settings("smoke", {"exposure_stops": [-1, 1]}).exposure_stops == (-1, 1)


# -- a smoke run through the runner, and its report ---------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, offline_lab):
    out = tmp_path_factory.mktemp("zoom")
    return out, runner.run(INCIDENT, INCIDENT.settings("smoke"), out_root=out)


def _is_estimate(d):
    return isinstance(d, dict) and {"value", "low", "high", "n", "test"} <= set(d)


def test_smoke_run_writes_estimates_per_group(smoke_run):
    out, record = smoke_run
    m = record["metrics"]
    assert m["n_photos"] == 14 and m["n_faces"] + m["n_no_face"] == 14
    for attribute, n_groups in (("race", 7), ("gender", 2), ("race_gender", 14)):
        found = m["groups"][attribute]
        assert len(found) == n_groups
        for g in found.values():
            for key in ("coverage", "soft_coverage", "erased", "no_face"):
                assert _is_estimate(g[key]), (attribute, key)
            assert g["no_face"]["n"] == g["n_photos"]
            if g["n_faces"]:
                assert g["coverage"]["low"] <= g["coverage"]["value"] <= g["coverage"]["high"]
                assert g["coverage"]["warning"]  # n=1 is below 30: the small-group warning
    assert _is_estimate(m["disparity"]["coverage_contrast"])
    assert m["published"]["worst_region"]["iou"] == pytest.approx(0.9471)
    assert m["interventions"]["exposure"]["minus_2_stops"]["change"]["n"] >= 1
    assert _is_estimate(m["interventions"]["skin_tone"]["mst_9"]["coverage"])
    assert {"randomisation_check", "faithfulness", "probe"} <= set(m["autopsy"])
    outputs = RunPaths(out, "zoom_matting").outputs
    for name in ("coverage.png", "interventions.png", "composite.png", "attribution.png", "featviz.png",
                 "photos.csv", "interventions.csv"):
        assert (outputs / name).is_file(), name
    assert record["summary"] and [s["stage"] for s in record["stages"]][0] == "photos"


def test_smoke_run_report_renders(smoke_run):
    out, _ = smoke_run
    paths = RunPaths(out, "zoom_matting")
    parsed = story.parse(INCIDENT.story)
    assert parsed.meta["aiid"] is None and "103" in parsed.meta["aiid_note"]
    resolved = story.resolve(parsed, story.load_run(paths.metrics), paths.outputs)
    page = story.render_html(resolved, paths.report).read_text()
    assert "face coverage" in page.lower() and "perceived" in page
    assert "{{" not in page


def test_the_explorer_measures_what_the_run_measures(smoke_run):
    """The explorer calls measure.measure_photo; it gives the run's coverage of the same photo."""
    out, _ = smoke_run
    photos = pd.read_csv(RunPaths(out, "zoom_matting").outputs / "photos.csv")
    row = photos[photos["face_detected"]].iloc[0]
    path = next(p for p in data.load(INCIDENT.settings("smoke"))["path"] if p.endswith(row["file"]))
    result = measure.measure_photo(load_image(path))
    assert result.measured.coverage == pytest.approx(row["coverage"], abs=1e-3)
    assert result.face is not None and result.face in result.faces


# -- bring your own ------------------------------------------------------------------------------


def _byo(tmp_path, rows, header=("file", "race", "gender")):
    images = tmp_path / "photos"
    images.mkdir()
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return images, labels


def _byo_config(images, labels, **changes):
    return INCIDENT.settings("smoke", {"images": str(images), "labels": str(labels), "limit_per_group": None,
                                       **changes})


def test_byo_bad_labels_are_clear_errors(tmp_path):
    images, labels = _byo(tmp_path, [["a.jpg", "Black", "Male"]], header=("file", "ethnicity", "sex"))
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['race', 'gender'\]"):
        data.load(_byo_config(images, labels))
    labels.write_text("file,race,gender\nmissing.jpg,Black,Male\n")
    with pytest.raises(ValueError, match="missing.jpg: listed in labels.csv but not found"):
        data.load(_byo_config(images, labels))


def test_byo_applies_limit_per_group(tmp_path):
    images, labels = _byo(tmp_path, [[f"{k}.png", "Black", "Female"] for k in range(3)] + [["w.png", "White", "Male"]])
    for k in range(3):
        Image.new("RGB", (32, 32), (k, k, k)).save(images / f"{k}.png")
    Image.new("RGB", (32, 32), (200, 0, 0)).save(images / "w.png")
    assert data.load(_byo_config(images, labels))["file"] == ["0.png", "1.png", "2.png", "w.png"]
    assert data.load(_byo_config(images, labels, limit_per_group=2))["file"] == ["0.png", "1.png", "w.png"]


def test_byo_unseen_tight_crops_and_a_faceless_photo(tmp_path, mirror):
    """FairFace tight crops the run has never seen, plus a picture with no face: it is counted."""
    crops = mirror / "fairface-crops"
    with open(crops / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    chosen = [next(r for r in rows if r["race"] == race) for race in ("Black", "White", "East Asian")]
    images, labels = _byo(tmp_path, [[r["file"], r["race"], r["gender"]] for r in chosen]
                          + [["wall.png", "White", "Male"]])
    for r in chosen:
        shutil.copy(crops / r["file"], images / r["file"])
    Image.new("RGB", (224, 224), (180, 170, 160)).save(images / "wall.png")
    record = runner.run(INCIDENT, _byo_config(images, labels, intervention_lowest=0), out_root=tmp_path / "out")
    m = record["metrics"]
    assert record["profile"] == "custom" and "images" not in record["params"]
    assert m["n_photos"] == 4 and m["n_no_face"] >= 1
    white = m["groups"]["race"]["White"]
    assert white["n_photos"] == 2 and white["n_no_face"] >= 1  # the wall is counted, not dropped
    assert math.isclose(white["no_face"]["value"], white["n_no_face"] / 2)
    photos = pd.read_csv(tmp_path / "out" / "outputs" / "zoom_matting" / "photos.csv")
    assert len(photos) == 4 and not photos.loc[photos["file"] == "wall.png", "face_detected"].item()
    assert record["provenance"] and all(p["name"].startswith("mediapipe") for p in record["provenance"])
    resolved = story.resolve(story.parse(INCIDENT.story), record, tmp_path / "out" / "outputs" / "zoom_matting")
    assert resolved.blocks


def test_a_run_where_no_photo_has_a_face_reports_the_misses(tmp_path):
    """Issue 16 item 5: no face anywhere is a measurement (every photo a detector miss), not a crash."""
    images, labels = _byo(tmp_path, [["grey.png", "Black", "Male"], ["wall.png", "White", "Female"]])
    Image.new("RGB", (200, 200), (128, 128, 128)).save(images / "grey.png")
    Image.new("RGB", (200, 200), (180, 170, 160)).save(images / "wall.png")
    record = runner.run(INCIDENT, _byo_config(images, labels), out_root=tmp_path / "out")
    m = record["metrics"]
    assert m["n_photos"] == 2 and m["n_no_face"] == 2 and m["n_faces"] == 0
    assert m["overall"]["no_face"]["value"] == 1.0 and m["overall"]["coverage"]["n"] == 0
    assert m["autopsy"]["attribution"]["skipped"] and m["interventions_design"]["n_photos"] == 0
    assert m["disparity"]["coverage_contrast"]["test"] == "not estimable"
