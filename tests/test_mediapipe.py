"""MediaPipe wrappers: pins, random-init without files, anchors, NMS, and behaviour on real photos."""

import numpy as np
import pytest
import torch

from autopsy.assets import fetch
from autopsy.data import FAIRFACE_CONTEXT, load_image
from autopsy.models import mediapipe as mp

DETECTION_PHOTOS = 20


def photo(n: int):
    row = FAIRFACE_CONTEXT.rows[n]
    return load_image(fetch(FAIRFACE_CONTEXT.asset(row)))


@pytest.fixture(scope="module")
def short_range():
    return mp.FaceDetector("short_range")


def test_assets_are_pinned_to_the_mirror_checksums(mirror):
    sums = dict(line.split()[::-1] for line in (mirror / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert set(mp.ASSETS) == {"selfie_segmentation", "selfie_segmentation_landscape", "face_detection_short_range",
                              "face_detection_full_range_sparse", "face_landmark"}
    for stem, asset in mp.ASSETS.items():
        assert asset.url == f"https://storage.googleapis.com/mediapipe-assets/tasks/testdata/vision/{stem}.tflite"
        assert sums[f"./{asset.mirror_path}"] == asset.sha256
        assert (mirror / asset.mirror_path).stat().st_size == asset.size
        assert asset.licence == "Apache-2.0" and asset.citation


def test_random_init_needs_no_file(monkeypatch):
    def no_download(asset):
        raise AssertionError(f"weights=None must not fetch {asset.name}")

    monkeypatch.setattr(mp, "fetch", no_download)
    with torch.no_grad():
        assert mp.SelfieSegmenter("landscape", weights=None)(torch.rand(1, 3, 144, 256)).shape == (1, 1, 144, 256)
        regressors, logits = mp.FaceDetector("full_range", weights=None)(torch.rand(1, 3, 192, 192))
        assert regressors.shape == (1, 2304, 16) and logits.shape == (1, 2304, 1)
        landmarks, flag = mp.FaceMesh(weights=None)(torch.rand(2, 3, 192, 192))
        assert landmarks.shape == (2, 468, 3) and flag.shape == (2,)


def test_anchors_follow_mediapipe_options():
    anchors = mp.FaceDetector.VARIANTS["short_range"]
    short = mp.ssd_anchors(input_size=(128, 128), strides=anchors["strides"], num_layers=4)
    assert short.shape == (896, 4)
    # 16x16 grid with 2 anchors per cell, then 8x8 with 6; all 1x1 (fixed_anchor_size).
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8, 1, 1])
    full = mp.ssd_anchors(input_size=(192, 192), strides=(4,), num_layers=1, interpolated_scale_aspect_ratio=0.0)
    assert full.shape == (2304, 4)


def test_weighted_nms_merges_duplicates():
    boxes = np.array([[0.10, 0.10, 0.50, 0.50], [0.12, 0.10, 0.52, 0.50], [0.60, 0.60, 0.90, 0.90]])
    scores = np.array([0.9, 0.6, 0.8])
    points = np.zeros((3, 6, 2))
    points[1] += 1.0
    kept = mp.weighted_nms(boxes, scores, points, iou_threshold=0.3)
    assert len(kept) == 2
    (box, score, kps), (other, other_score, _) = kept
    assert score == 0.9 and other_score == 0.8
    np.testing.assert_allclose(box, (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5)  # score-weighted blend
    np.testing.assert_allclose(kps, np.full((6, 2), 0.6 / 1.5))
    np.testing.assert_allclose(other, boxes[2])


def test_blazeface_finds_the_portrait_face(short_range):
    single = 0
    for n in range(DETECTION_PHOTOS):
        detections = short_range.detect(photo(n))
        assert detections, f"photo {n}: no face"
        single += len(detections) == 1
        # The portrait's own face: the detection nearest the centre of the 448x448 photo (FairFace
        # centres the face loosely: up to ~65 px off on these photos).
        best = min(detections, key=lambda d: abs((d.box[0] + d.box[2]) / 2 - 224) + abs((d.box[1] + d.box[3]) / 2 - 224))
        x0, y0, x1, y1 = best.box
        assert abs((x0 + x1) / 2 - 224) < 80 and abs((y0 + y1) / 2 - 224) < 80, f"photo {n}: {best.box}"
        assert 80 < x1 - x0 < 300 and 80 < y1 - y0 < 300, f"photo {n}: {best.box}"
        assert best.score >= 0.5 and len(best.keypoints) == 6
        for x, y in best.keypoints[:4]:  # eyes, nose tip, mouth centre lie inside the box
            assert x0 <= x <= x1 and y0 <= y <= y1, f"photo {n}: keypoint {(x, y)} outside {best.box}"
    # FairFace photos are cropped from crowds: some show other people's faces too.
    assert single >= 0.75 * DETECTION_PHOTOS


def test_letterbox_is_undone_on_non_square_images(short_range):
    """The same photo pasted into a wider black canvas gives the same box, shifted by the paste."""
    from PIL import Image

    image = photo(1)
    canvas = Image.new("RGB", (700, 448))
    canvas.paste(image, (126, 0))
    square = min(short_range.detect(image), key=lambda d: abs((d.box[0] + d.box[2]) / 2 - 224))
    shifted = min(short_range.detect(canvas), key=lambda d: abs((d.box[0] + d.box[2]) / 2 - 350))
    # Letterboxing 700x448 to 128x128 samples the face at 64% of the square's resolution: a few px.
    np.testing.assert_allclose(np.array(shifted.box) - [126, 0, 126, 0], square.box, atol=6)


def test_full_range_detector_finds_the_face():
    detector = mp.FaceDetector("full_range")
    detections = detector.detect(photo(1))
    best = min(detections, key=lambda d: abs((d.box[0] + d.box[2]) / 2 - 224))
    assert abs((best.box[0] + best.box[2]) / 2 - 224) < 60 and 80 < best.box[2] - best.box[0] < 300


@pytest.mark.parametrize("variant", ["general", "landscape"])
def test_segmenter_mask_on_a_portrait(variant):
    segmenter = mp.SelfieSegmenter(variant)
    # Photo 2 (fairface_0002): one person, background in both upper corners (many FairFace photos
    # have other people at the edges, so corners are not background in general).
    image = photo(1)
    mask = segmenter.segment(image)
    assert mask.shape == (image.height, image.width) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask[200:250, 200:250].mean() > 0.9
    assert mask[:40, :40].mean() < 0.1 and mask[:40, -40:].mean() < 0.1


def test_segmenter_exposes_bottleneck_and_differentiable_forward():
    segmenter = mp.SelfieSegmenter("general", weights=None)
    assert segmenter.bottleneck in segmenter.model.tensor_names
    assert segmenter.decoder_layers and all(name in segmenter.model.ops for name in segmenter.decoder_layers)
    x = torch.rand(1, 3, 256, 256, requires_grad=True)
    segmenter(x).mean().backward()
    assert x.grad.abs().sum() > 0
    feats = segmenter.model.intermediates(x.detach(), names=[segmenter.bottleneck])[segmenter.bottleneck]
    assert feats.dim() == 4 and feats.shape[-1] < 256


def test_face_mesh_on_a_face_crop():
    mesh = mp.FaceMesh()
    crop = photo(1).crop((112, 90, 336, 314))
    landmarks, presence = mesh.landmarks(crop)
    assert landmarks.shape == (468, 3) and presence > 0.5
    assert (landmarks[:, 0] > 0).all() and (landmarks[:, 0] < crop.width).all()
    assert (landmarks[:, 1] > 0).all() and (landmarks[:, 1] < crop.height).all()
