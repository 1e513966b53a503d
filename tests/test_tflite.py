"""The TFLite -> torch converter: parity with LiteRT on real photos, gradients, clear errors.

Parity criterion: for every output, max |torch - LiteRT| <= 1e-4 * max(1, max |LiteRT output|).
That is an absolute 1e-4 for outputs in [0, 1] (segmentation masks) and 1e-4 relative to the
output's range for raw regressors/logits, which reach ~200: at that size float32 spacing is
~1.5e-5 and LiteRT's own two CPU backends (XNNPACK and its builtin kernels) already disagree by up
to ~3e-4 on the same input, so an absolute 1e-4 there would test LiteRT's rounding, not the port.
"""

import numpy as np
import pytest
import torch

from autopsy.assets import fetch
from autopsy.data import FAIRFACE_CONTEXT, load_image
from autopsy.models import mediapipe as mp
from autopsy.models.tflite import (
    SUPPORTED_OPS,
    TFLiteConversionError,
    TFLiteModule,
    list_operators,
    load_spec,
    load_tflite,
    read_tflite,
)

# How each model's input is made, as its MediaPipe graph does it: (size HxW, letterbox, value range).
PREPROCESSING = {
    "selfie_segmentation": ((256, 256), False, (0.0, 1.0)),
    "selfie_segmentation_landscape": ((144, 256), False, (0.0, 1.0)),
    "face_detection_short_range": ((128, 128), True, (-1.0, 1.0)),
    "face_detection_full_range_sparse": ((192, 192), True, (-1.0, 1.0)),
    "face_landmark": ((192, 192), True, (0.0, 1.0)),
}
PHOTOS = 3  # the first photos of the FairFace-context manifest, in manifest order


@pytest.fixture(scope="module")
def photos():
    return [load_image(fetch(FAIRFACE_CONTEXT.asset(row))) for row in FAIRFACE_CONTEXT.rows[:PHOTOS]]


def model_path(stem):
    return fetch(mp.ASSETS[stem])


def to_tflite_layout(t: torch.Tensor) -> np.ndarray:
    a = t.detach().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


@pytest.mark.parametrize("stem", sorted(PREPROCESSING))
def test_parity_with_litert_on_real_photos(stem, photos):
    from ai_edge_litert.interpreter import Interpreter

    path = model_path(stem)
    module = load_tflite(path)
    interpreter = Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    size, letterbox, value_range = PREPROCESSING[stem]
    for photo in photos:
        x, _ = mp.image_to_tensor(photo, size, keep_aspect_ratio=letterbox, value_range=value_range)
        interpreter.set_tensor(inp["index"], to_tflite_layout(x))
        interpreter.invoke()
        with torch.no_grad():
            ours = module(x)
        ours = ours if isinstance(ours, tuple) else (ours,)
        details = interpreter.get_output_details()
        assert len(ours) == len(details)
        for out, detail in zip(ours, details):
            ref = interpreter.get_tensor(detail["index"])
            mine = to_tflite_layout(out)
            assert mine.shape == ref.shape, detail["name"]
            diff = float(np.abs(mine - ref).max())
            tolerance = 1e-4 * max(1.0, float(np.abs(ref).max()))
            assert diff <= tolerance, f"{stem} output {detail['name']}: max abs diff {diff:.3g} > {tolerance:.3g}"


EXPECTED_OPS = {
    "selfie_segmentation": {"CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "RELU", "AVERAGE_POOL_2D", "LOGISTIC",
                            "MUL", "ADD", "RESIZE_BILINEAR", "CUSTOM:Convolution2DTransposeBias", "DEQUANTIZE"},
    "selfie_segmentation_landscape": {"CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "RELU", "MEAN", "LOGISTIC",
                                      "MUL", "ADD", "RESIZE_BILINEAR", "CUSTOM:Convolution2DTransposeBias",
                                      "DEQUANTIZE"},
    "face_detection_short_range": {"CONV_2D", "DEPTHWISE_CONV_2D", "RELU", "ADD", "PAD", "MAX_POOL_2D", "RESHAPE",
                                   "CONCATENATION", "DEQUANTIZE"},
    "face_detection_full_range_sparse": {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "RESIZE_BILINEAR",
                                         "DEPTH_TO_SPACE", "RESHAPE", "DEQUANTIZE", "DENSIFY"},
    "face_landmark": {"CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD", "DEQUANTIZE"},
}


@pytest.mark.parametrize("stem", sorted(EXPECTED_OPS))
def test_operator_inventory(stem):
    ops = list_operators(model_path(stem))
    assert set(ops) == EXPECTED_OPS[stem]
    assert set(ops) <= set(SUPPORTED_OPS)


@pytest.mark.parametrize("stem", sorted(EXPECTED_OPS))
def test_recorded_spec_matches_the_file(stem):
    """The spec that random-init models are built from is exactly what the pinned file describes."""
    spec, weights = read_tflite(model_path(stem))
    assert load_spec(mp.SPECS / f"{stem}.json") == spec
    state = TFLiteModule(spec).ops.state_dict()
    assert set(state) == set(weights)
    assert all(tuple(state[k].shape) == weights[k].shape for k in weights)


def test_gradients_reach_the_input():
    module = load_tflite(model_path("selfie_segmentation_landscape"))  # has MEAN's straight-through path
    x = torch.rand(2, 3, 144, 256, requires_grad=True)
    module(x)[:, :, 60:80, 100:150].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    conv = module.ops["conv2d"]
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight.grad is not None


def test_named_modules_and_intermediates():
    module = load_tflite(model_path("selfie_segmentation"))
    assert list(module.ops)[:2] == ["conv2d", "h_swish"]
    x = torch.rand(1, 3, 256, 256)
    out = module.intermediates(x, names=["h_swish", "activation_10"])
    assert out["h_swish"].shape == (1, 16, 128, 128)
    torch.testing.assert_close(out["activation_10"], module(x))
    with pytest.raises(KeyError, match="no tensor named"):
        module.intermediates(x, names=["nope"])


def test_batch_dimension_is_free():
    module = load_tflite(model_path("face_detection_short_range"))
    x = torch.rand(3, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        regressors, scores = module(x)
        single = module(x[1:2])
    assert regressors.shape == (3, 896, 16) and scores.shape == (3, 896, 1)
    torch.testing.assert_close(single[0], regressors[1:2], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("align_corners,half_pixel", [(False, True), (True, False)])
def test_resize_bilinear_matches_torch_where_conventions_coincide(align_corners, half_pixel):
    from autopsy.models.tflite import ResizeBilinear

    op = ResizeBilinear({"op": "RESIZE_BILINEAR", "inputs": ["x"], "outputs": ["y"], "params": {},
                         "options": {"size": [13, 20], "align_corners": align_corners,
                                     "half_pixel_centers": half_pixel}})
    x = torch.rand(2, 3, 5, 7)
    expected = torch.nn.functional.interpolate(x, size=(13, 20), mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(op(x), expected, atol=1e-6, rtol=1e-6)


def test_resize_bilinear_legacy_convention():
    """Neither flag: source = dst * in / out (TF1 behaviour, no torch mode)."""
    from autopsy.models.tflite import ResizeBilinear

    op = ResizeBilinear({"op": "RESIZE_BILINEAR", "inputs": ["x"], "outputs": ["y"], "params": {},
                         "options": {"size": [1, 4], "align_corners": False, "half_pixel_centers": False}})
    x = torch.tensor([[[[0.0, 10.0]]]])
    torch.testing.assert_close(op(x), torch.tensor([[[[0.0, 5.0, 10.0, 10.0]]]]))


def _with_unknown_operator(data: bytes) -> bytes:
    """The short-range detector with its RELU opcode rewritten to SPLIT (unsupported here)."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    model = tflite.Model.GetRootAsModel(data, 0)
    patched = bytearray(data)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == BuiltinOperator.RELU:
            patched[code._tab.Pos + code._tab.Offset(4)] = BuiltinOperator.SPLIT  # deprecated_builtin_code (int8)
            return bytes(patched)
    raise AssertionError("no RELU opcode")


def test_unknown_operator_is_named():
    data = model_path("face_detection_short_range").read_bytes()
    with pytest.raises(TFLiteConversionError, match=r"operator SPLIT .*not supported"):
        read_tflite(_with_unknown_operator(data))


def test_truncated_and_garbage_files_are_refused(tmp_path):
    data = model_path("face_detection_short_range").read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(TFLiteConversionError, match="truncated.tflite"):
        load_tflite(truncated)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(TFLiteConversionError, match="garbage.tflite: not a TFLite flatbuffer"):
        load_tflite(garbage)
    disguised = b"\x10\x00\x00\x00TFL3" + np.random.default_rng(1).bytes(200)
    with pytest.raises(TFLiteConversionError, match="malformed or truncated"):
        read_tflite(disguised)
    with pytest.raises(TFLiteConversionError, match="cannot read"):
        load_tflite(tmp_path / "missing.tflite")
