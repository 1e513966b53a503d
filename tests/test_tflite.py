"""The TFLite -> torch converter: parity with LiteRT on real photos, gradients, clear errors.

Parity criterion: max |torch - LiteRT| <= 1e-4, absolute, for every output that is a probability
(the segmentation masks) or of modest size (Face Mesh's face-presence logit). Only the raw
regressor/logit outputs listed in RAW_OUTPUTS get 1e-4 relative to their largest value instead:
BlazeFace's box regressors and class logits and Face Mesh's landmark coordinates reach 150-30000,
where one float32 ulp is 1.5e-5 to 2e-3, so an absolute 1e-4 would demand bit-exact agreement
with XNNPACK's convolution order; measured on 42 FairFace photos they sit at 2-20 ulp (short
range 2.4e-3 of 11920, full range 3.2e-4 of 227, Face Mesh 1.5e-4 of 152).
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

# Manifest rows: the first photo and the two hardest for the general segmenter among every
# 13th photo (fairface_0183, fairface_0469: the largest mask differences, before and after the
# AVERAGE_POOL_2D summation-order fix).
PHOTO_ROWS = (0, 182, 468)
# Raw (unbounded) regressor/logit outputs, by model: checked at 1e-4 relative to their size.
RAW_OUTPUTS = {
    "face_detection_short_range": {"regressors", "classificators"},
    "face_detection_full_range_sparse": {"Identity", "Identity_1"},
    "face_landmark": {"conv2d_21"},
}

# The one documented exception to the absolute 1e-4: the general segmenter's mask. Its average
# pools now sum in XNNPACK's order (bit-exact; 6.4e-4 -> 9.5e-5 over 42 photos, single-threaded),
# but ulp-level rounding differences in ~100 convolutions (XNNPACK: one FMA per term from the bias;
# torch/oneDNN: another order) are amplified by the network to ~1e-4: 1.13e-4 with LiteRT on 2
# threads (fairface_0183/0469). See Pool2d's docstring for how emulating the FMA order removes it.
MASK_TOLERANCE = {"selfie_segmentation": 2e-4}


@pytest.fixture(scope="module")
def photos():
    return [load_image(fetch(FAIRFACE_CONTEXT.asset(FAIRFACE_CONTEXT.rows[n]))) for n in PHOTO_ROWS]


def model_path(stem):
    return fetch(mp.ASSETS[stem])


def to_tflite_layout(t: torch.Tensor) -> np.ndarray:
    a = t.detach().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


@pytest.mark.parametrize("stem", sorted(mp.PREPROCESSING))
def test_parity_with_litert_on_real_photos(stem, photos):
    from ai_edge_litert.interpreter import Interpreter

    path = model_path(stem)
    module = load_tflite(path)
    interpreter = Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    size, letterbox, value_range = mp.PREPROCESSING[stem]
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
            raw = detail["name"] in RAW_OUTPUTS.get(stem, ())
            tolerance = 1e-4 * max(1.0, float(np.abs(ref).max())) if raw else MASK_TOLERANCE.get(stem, 1e-4)
            assert diff <= tolerance, f"{stem} output {detail['name']}: max abs diff {diff:.3g} > {tolerance:.3g}"


def test_average_pool_sums_in_xnnpack_order_with_the_exact_gradient():
    """Global AVERAGE_POOL_2D: columns first, groups of 9 summed as XNNPACK's tree, times 1/n."""
    from autopsy.models.tflite import Pool2d

    op = Pool2d({"op": "AVERAGE_POOL_2D", "inputs": ["x"], "outputs": ["y"], "params": {},
                 "options": {"kernel": [64, 64], "stride": [64, 64], "padding": "VALID", "activation": None}})
    x = (torch.rand(2, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 8).requires_grad_()
    rows = x.detach().numpy().transpose(3, 2, 0, 1).reshape(64 * 64, 10)  # kx outer, ky inner
    rows = np.concatenate([rows, np.zeros((-len(rows) % 9, 10), np.float32)]).reshape(-1, 9, 10)
    total = np.zeros(10, np.float32)
    for i in rows:
        total = total + (((i[2] + i[3]) + (i[4] + i[5])) + (((i[0] + i[1]) + i[8]) + (i[6] + i[7])))
    expected = (total * np.float32(1 / 4096)).reshape(2, 5, 1, 1)
    y = op(x)
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 4096))


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
