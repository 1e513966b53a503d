"""MediaPipe Face Landmarker v2: the .task pin, parity of its models with LiteRT, the pipeline.

Parity criterion (as tests/test_tflite.py): probabilities and modest outputs (the 52 blendshape
scores, the face-presence logit) within 1e-4 absolute; the raw landmark coordinates (crop pixels,
up to ~200) within 1e-4 relative to their largest value. Measured on 28 FairFace crops (every
100th) in two regions each: landmarks 8.3e-7 relative, presence logit 8.1e-6, blendshapes 1.3e-5.
"""

import hashlib
import io
import math
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from autopsy.assets import Asset, AssetIntegrityError, fetch
from autopsy.contract import Weights
from autopsy.data import FAIRFACE_CROPS, load_image
from autopsy.models import face_landmarker as fl
from autopsy.models import mediapipe as mp
from autopsy.models.tflite import SUPPORTED_OPS, TFLiteModule, list_operators, load_spec, load_tflite, read_tflite

FACE_ROWS = (0, 700, 1400, 2100, 2799)
MODELS = ("face_landmarks_detector.tflite", "face_blendshapes.tflite")


@pytest.fixture(scope="module")
def faces():
    return [load_image(fetch(FAIRFACE_CROPS.asset(FAIRFACE_CROPS.rows[n]))) for n in FACE_ROWS]


@pytest.fixture(scope="module")
def landmarker():
    return fl.FaceLandmarker(weights=fl.FACE_LANDMARKER_V2)


def interpreter(member):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=fl.read_member(fl.FACE_LANDMARKER_V2, member), num_threads=2)
    runner.allocate_tensors()
    return runner


def run_litert(runner, array):
    runner.set_tensor(runner.get_input_details()[0]["index"], array)
    runner.invoke()
    return {d["name"]: runner.get_tensor(d["index"]) for d in runner.get_output_details()}


def test_task_pin_and_members(mirror):
    sums = dict(line.split()[::-1] for line in (mirror / "SHA256SUMS").read_text().splitlines() if line.strip())
    asset = fl.FACE_LANDMARKER_V2.asset
    assert asset.url == ("https://storage.googleapis.com/mediapipe-assets/tasks/testdata/vision/"
                         "face_landmarker_v2_with_blendshapes.task")
    assert sums[f"./{asset.mirror_path}"] == asset.sha256
    assert (mirror / asset.mirror_path).stat().st_size == asset.size and asset.licence == "Apache-2.0"
    for member, sha in fl.MEMBERS.items():
        assert hashlib.sha256(fl.read_member(fl.FACE_LANDMARKER_V2, member)).hexdigest() == sha
    # The task's detector is the pinned BlazeFace short-range file, byte for byte.
    assert fl.MEMBERS["face_detector.tflite"] == mp.ASSETS["face_detection_short_range"].sha256
    with pytest.raises(KeyError, match="not a model of the Face Landmarker task"):
        fl.read_member(fl.FACE_LANDMARKER_V2, "geometry_pipeline_metadata_landmarks.binarypb")


def _zip_pin(tmp_path, monkeypatch, members: dict) -> Weights:
    """A .task-like zip in a private mirror, pinned to its own SHA-256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fake.task").write_bytes(data)
    monkeypatch.setenv("AUTOPSY_MIRROR", str(tmp_path))
    monkeypatch.setenv("AUTOPSY_CACHE", str(tmp_path / "cache"))
    asset = Asset(name="fake.task", url="https://example.org/fake.task", sha256=hashlib.sha256(data).hexdigest(),
                  size=len(data), licence="test", citation="test", source_page="https://example.org",
                  mirror_path="models/fake.task")
    return Weights(name="fake", files=(asset,))


def test_the_zip_is_verified_before_and_its_members_after_extraction(tmp_path, monkeypatch):
    pin = _zip_pin(tmp_path, monkeypatch, {"face_blendshapes.tflite": b"TFL3 not the real model"})
    with pytest.raises(AssetIntegrityError, match="face_blendshapes.tflite has SHA-256"):
        fl.read_member(pin, "face_blendshapes.tflite")
    with pytest.raises(AssetIntegrityError, match="has no face_landmarks_detector.tflite"):
        fl.read_member(pin, "face_landmarks_detector.tflite")
    # A zip that does not match its pin is refused before anything is read from it.
    for copy in (tmp_path / "models" / "fake.task", tmp_path / "cache" / "models" / "fake.task"):
        copy.write_bytes(b"PK tampered")
    with pytest.raises(AssetIntegrityError, match="failed its integrity check"):
        fl.read_member(pin, "face_blendshapes.tflite")


def test_operator_inventory_and_recorded_specs():
    expected = {
        "face_landmarks_detector.tflite": {"CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD"},
        "face_blendshapes.tflite": {"MEAN", "SUB", "MUL", "SUM", "SQRT", "DIV", "RESHAPE", "STRIDED_SLICE",
                                    "DEQUANTIZE", "TRANSPOSE", "CONV_2D", "CONCATENATION", "NEG",
                                    "SQUARED_DIFFERENCE", "ADD", "RSQRT", "LOGISTIC"},
    }
    for member, ops in expected.items():
        data = fl.read_member(fl.FACE_LANDMARKER_V2, member)
        assert set(list_operators(data)) == ops and ops <= set(SUPPORTED_OPS)
        spec, weights = read_tflite(data)
        assert load_spec(fl.SPECS / f"{member.removesuffix('.tflite')}.json") == spec
        state = TFLiteModule(spec).ops.state_dict()
        assert set(state) == set(weights)


def test_landmarks_match_litert_on_real_faces(faces, landmarker):
    runner = interpreter("face_landmarks_detector.tflite")
    raw = load_tflite(fl.read_member(fl.FACE_LANDMARKER_V2, "face_landmarks_detector.tflite"))
    regions = [fl.Region(112, 112, 298, 298), fl.Region(120, 105, 280, 260, 0.2)]  # centred; rotated, offset
    for face in faces:
        for region in regions:
            x = fl.crop_to_tensor(face, region)
            ref = run_litert(runner, x.permute(0, 2, 3, 1).numpy())
            ref_points, ref_flag = ref["StatefulPartitionedCall:1"], ref["StatefulPartitionedCall:0"]
            with torch.no_grad():
                points, flag = landmarker.landmarks(x)  # the channels-last path the pipeline runs
                raw_points, raw_flag = raw(x)
            scale = max(1.0, float(np.abs(ref_points).max()))
            for mine in (points.numpy().reshape(-1), raw_points.numpy().reshape(-1)):
                assert np.abs(mine - ref_points.reshape(-1)).max() <= 1e-4 * scale
            assert abs(float(flag[0]) - float(ref_flag.reshape(-1)[0])) <= 1e-4
            assert abs(float(raw_flag.reshape(-1)[0]) - float(ref_flag.reshape(-1)[0])) <= 1e-4


def test_blendshapes_match_litert_on_real_landmarks(faces, landmarker):
    runner = interpreter("face_blendshapes.tflite")
    result = landmarker.analyse(faces, roi="image")
    inputs = result.landmarks[:, list(fl.LANDMARKS_SUBSET), :2].astype(np.float32)
    with torch.no_grad():
        ours = landmarker.blendshapes_model(torch.from_numpy(inputs)).numpy()
    assert ours.shape == (len(faces), 52)  # the file's [52] output keeps the batch dimension here
    for k, points in enumerate(inputs):
        (ref,) = run_litert(runner, points[None]).values()
        assert ref.shape == (52,)
        assert np.abs(ours[k] - ref).max() <= 1e-4
    np.testing.assert_allclose(result.blendshapes, ours, atol=1e-6)


def test_subset_and_names_are_mediapipes():
    assert len(fl.LANDMARKS_SUBSET) == 146 and len(set(fl.LANDMARKS_SUBSET)) == 146
    assert list(fl.LANDMARKS_SUBSET) == sorted(fl.LANDMARKS_SUBSET)
    assert fl.LANDMARKS_SUBSET[-10:] == tuple(range(468, 478))  # both irises
    assert len(fl.BLENDSHAPE_NAMES) == 52 and fl.BLENDSHAPE_NAMES[0] == "_neutral"
    assert fl.BLENDSHAPE_NAMES.index("mouthSmileLeft") == 44 and fl.BLENDSHAPE_NAMES[-1] == "noseSneerRight"


def test_pipeline_on_face_crops(faces, landmarker):
    detected = landmarker.analyse(faces, roi="detect")
    whole = landmarker.analyse(faces, roi="image")
    found = detected.detected
    assert found.sum() >= 4  # BlazeFace misses some tight crops (5% of FairFace's; see perception.py)
    assert all((r is None) == (not f) for r, f in zip(detected.regions, found))
    # Crop 2100 (train_2130.jpg) is a cut-off profile: BlazeFace misses it and the landmark
    # model, shown the whole crop, gives it a face presence under 0.01.
    assert whole.presence[3] < 0.01 and (np.delete(whole.presence, 3) > 0.5).all()
    for result, rows in ((detected, found), (whole, whole.presence > 0.5)):
        landmarks, blendshapes = result.landmarks[rows], result.blendshapes[rows]
        assert landmarks.shape == (rows.sum(), 478, 3) and blendshapes.shape == (rows.sum(), 52)
        assert (result.presence[rows] > 0.5).all()
        assert (landmarks[..., :2] > -10).all() and (landmarks[..., :2] < 234).all()
        # The person's right eye (landmark 33) is on the viewer's left of their left eye (263).
        assert (landmarks[:, 33, 0] < landmarks[:, 263, 0]).all()
        assert ((blendshapes >= 0) & (blendshapes <= 1)).all()
    assert np.isnan(detected.blendshapes[~found]).all()
    assert list(whole.blendshape_table().columns) == list(fl.BLENDSHAPE_NAMES[1:])
    # Both routes find the same face: landmarks agree within a few pixels on 224-px crops.
    assert np.median(np.abs(detected.landmarks[found, :, :2] - whole.landmarks[found, :, :2])) < 8


def test_no_face_gives_nan_rows_not_dropped_rows(landmarker):
    blank = Image.new("RGB", (160, 120), (128, 128, 128))
    result = landmarker.analyse([blank], roi="detect")
    assert not result.detected[0] and result.regions[0] is None and np.isnan(result.blendshapes).all()
    fallback = landmarker.analyse([blank], roi="detect_or_image")
    assert not fallback.detected[0] and np.isfinite(fallback.blendshapes).all()
    with pytest.raises(ValueError, match="roi must be one of"):
        landmarker.analyse([blank], roi="center")


def test_region_sampling_geometry():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8))
    same = fl.crop_to_tensor(image, fl.Region.whole(192, 192))
    torch.testing.assert_close(same[0].permute(1, 2, 0) * 255, torch.from_numpy(np.array(image)).float(),
                               atol=5e-3, rtol=0)
    # rotation = +90°: the crop's x axis runs down the image, so crop[i, j] = image[j, W - 1 - i]
    # (the content turned a quarter counter-clockwise: a face lying at +90° comes out upright).
    turned = fl.crop_to_tensor(image, fl.Region(96, 96, 192, 192, math.pi / 2))
    expected = torch.from_numpy(np.rot90(np.asarray(image), k=1).copy()).float()
    torch.testing.assert_close(turned[0].permute(1, 2, 0) * 255, expected, atol=5e-3, rtol=0)
    # Landmarks map back through the same matrix.
    region = fl.Region(50, 60, 40, 20, 0.3)
    centre = fl._to_image(torch.tensor([[96.0, 96.0, 0.0]]), region)
    torch.testing.assert_close(centre[0, :2], torch.tensor([50.0, 60.0]), atol=1e-5, rtol=0)


def test_detection_region_follows_mediapipe():
    detection = mp.Detection(box=(10, 20, 110, 120), score=0.9,
                             keypoints=((40, 50), (80, 90), (60, 70), (60, 100), (20, 60), (100, 60)))
    region = fl.region_from_detection(detection)
    assert (region.cx, region.cy, region.width, region.height) == (60, 70, 150, 150)
    assert region.rotation == pytest.approx(math.pi / 4)  # eyes descending to the right: turn by +45°


def test_forward_is_differentiable_end_to_end(landmarker):
    x = torch.rand(2, 3, 192, 192, requires_grad=True)
    points, flag, scores = landmarker(x)
    assert points.shape == (2, 478, 3) and flag.shape == (2,) and scores.shape == (2, 52)
    scores[:, fl.BLENDSHAPE_NAMES.index("mouthSmileLeft")].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_batch_dimension_is_free(landmarker):
    points = torch.rand(3, 478, 2) * 200
    with torch.no_grad():
        batch = landmarker.blendshapes(points)
        single = landmarker.blendshapes(points[1:2])
    torch.testing.assert_close(batch[1:2], single, atol=1e-6, rtol=1e-5)


def test_random_init_reads_no_file(monkeypatch):
    def no_fetch(*args, **kwargs):
        raise AssertionError("weights=None must not read a file")

    monkeypatch.setattr("autopsy.contract.fetch", no_fetch)
    monkeypatch.setattr(mp, "fetch", no_fetch)
    model = fl.FaceLandmarker(weights=None)
    with torch.no_grad():
        points, flag, scores = model(torch.rand(1, 3, 192, 192))
    assert points.shape == (1, 478, 3) and scores.shape == (1, 52)


def test_new_operators_follow_tflite_semantics():
    """TRANSPOSE and STRIDED_SLICE act in TFLite's NHWC layout; CONCATENATION repeats constants."""
    from autopsy.models.tflite import Concatenation, StridedSlice, Transpose

    x = torch.rand(2, 5, 3, 4)  # NCHW view of an NHWC [2, 3, 4, 5] tensor
    nhwc = x.permute(0, 2, 3, 1).numpy()
    op = {"inputs": ["x"], "outputs": ["y"], "params": {}}
    transposed = Transpose({**op, "op": "TRANSPOSE", "options": {"perm": [0, 1, 3, 2]}})(x)
    np.testing.assert_array_equal(transposed.permute(0, 2, 3, 1).numpy(), nhwc.transpose(0, 1, 3, 2))
    sliced = StridedSlice({**op, "op": "STRIDED_SLICE", "options": {
        "begin": [0, 1, 0, 0], "end": [0, 3, 3, 0], "strides": [1, 1, 2, 1],
        "begin_mask": 0b1001, "end_mask": 0b1001, "shrink_axis_mask": 0}})(x)
    np.testing.assert_array_equal(sliced.permute(0, 2, 3, 1).numpy(), nhwc[:, 1:3, 0:3:2, :])
    shrunk = StridedSlice({**op, "op": "STRIDED_SLICE", "options": {
        "begin": [0, 2], "end": [1, 4], "strides": [1, 1], "begin_mask": 0, "end_mask": 0, "shrink_axis_mask": 1}})
    torch.testing.assert_close(shrunk(torch.arange(12.0).reshape(3, 4)), torch.arange(12.0).reshape(3, 4)[:, 2:4])
    concat = Concatenation({"op": "CONCATENATION", "inputs": ["x"], "outputs": ["y"],
                            "params": {"constant_0": [1, 5, 3, 1]},
                            "options": {"axis": 3, "activation": None, "operands": ["constant_0", "x"]}})
    out = concat(x)
    assert out.shape == (2, 5, 3, 5)
    torch.testing.assert_close(out[:, :, :, 1:], x)
    assert (out[:, :, :, :1] == 0).all()


def test_landmarks_follow_a_rotated_face(landmarker):
    """MediaPipe's rotated region: a photo turned 25° gives the same landmarks, turned."""
    from autopsy.data import FAIRFACE_CONTEXT

    photo = load_image(fetch(FAIRFACE_CONTEXT.asset(FAIRFACE_CONTEXT.rows[1])))  # 448x448, one face
    upright, turned = landmarker.analyse([photo, photo.rotate(25, resample=Image.BILINEAR)], roi="detect").landmarks
    angle = math.radians(25)  # PIL turns counter-clockwise: in y-down pixels, x' = c x + s y, y' = -s x + c y
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    expected = (upright[:, :2] - 224) @ rotation.T + 224
    assert np.median(np.linalg.norm(expected - turned[:, :2], axis=1)) < 3
