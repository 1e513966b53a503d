"""One measured truth whichever engine computes it: LiteRT and the torch ports agree, and the
engine choice only ever sends no-gradient passes on the file's own weights to LiteRT.

The tolerance is the converter's parity tolerance (``tests/test_tflite.py``): 1e-4 absolute on
probabilities (2e-4 on the general segmenter's mask), 1e-4 relative to the largest value on raw
regressors and logits. Here it is checked through the engine itself (batched, with the adapted
file: RESHAPE targets set to the batch, intermediate tensors added to the outputs).
"""

import copy

import numpy as np
import pytest
import torch
from test_tflite import MASK_TOLERANCE, RAW_OUTPUTS

from autopsy import threads
from autopsy.assets import fetch
from autopsy.data import FAIRFACE_CONTEXT, load_image
from autopsy.models import mediapipe as mp
from autopsy.models.tflite import ENGINE_ENV, load_tflite

PHOTO_ROWS = (0, 182, 468)  # as tests/test_tflite.py: the first photo and the two hardest


@pytest.fixture(scope="module")
def photos():
    return [load_image(fetch(FAIRFACE_CONTEXT.asset(FAIRFACE_CONTEXT.rows[n]))) for n in PHOTO_ROWS]


def within_tolerance(stem, name, ours, reference, *, probability=False):
    """Probabilities: absolute; raw regressors, logits and intermediate features: relative to their size."""
    diff = float((ours - reference).abs().max())
    if probability and name not in RAW_OUTPUTS.get(stem, ()):
        tolerance = MASK_TOLERANCE.get(stem, 1e-4)
    else:
        tolerance = 1e-4 * max(1.0, float(reference.abs().max()))
    assert diff <= tolerance, f"{stem} {name}: LiteRT engine vs torch port differ by {diff:.3g} > {tolerance:.3g}"


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("stem", sorted(mp.PREPROCESSING))
def test_litert_engine_equals_the_torch_port_batched(stem, photos):
    module = load_tflite(fetch(mp.ASSETS[stem]), engine="litert")
    assert module.engine == "litert"
    size, letterbox, value_range = mp.PREPROCESSING[stem]
    x = torch.cat([mp.image_to_tensor(p, size, keep_aspect_ratio=letterbox, value_range=value_range)[0] for p in photos])
    with torch.inference_mode():
        fast = [as_tuple(module(x)), as_tuple(module(x[:1]))]  # a batch (adapted file) and a single image
        module.use_engine("torch")
        port = [as_tuple(module(x)), as_tuple(module(x[:1]))]
    for got, want in zip(fast, port):
        assert [g.shape for g in got] == [w.shape for w in want]
        for name, g, w in zip(module.output_names, got, want):
            within_tolerance(stem, name, g, w, probability=True)


@pytest.mark.parametrize("model", ["face_detection_short_range", "face_blendshapes"])
def test_chunked_invokes_give_each_image_what_it_gets_alone(model):
    """The engine invokes LiteRT on at most ``CHUNK`` images at once, the file adapted to the chunk
    (BlazeFace: RESHAPE targets; blendshapes: a tiled extra token and a last slice that keeps the
    batch). XNNPACK computes every image alike in any batch, so a batch of 6 (chunks of 4 and 2)
    equals six single-image passes exactly."""
    generator = torch.Generator().manual_seed(0)
    if model == "face_blendshapes":
        from autopsy.models import face_landmarker as fl

        module = load_tflite(fl.read_member(fl.FACE_LANDMARKER_V2, "face_blendshapes.tflite"), engine="litert")
        x = torch.rand(6, 146, 2, generator=generator) * 140 + 60
    else:
        module = load_tflite(fetch(mp.ASSETS[model]), engine="litert")
        x = torch.rand(6, 3, 128, 128, generator=generator)
    with torch.inference_mode():
        together = as_tuple(module(x))
        alone = [as_tuple(module(x[k:k + 1])) for k in range(6)]
    assert module._reference.CHUNK < 6 and module._reference._runner(4) is not None  # batched, not image by image
    for got, parts in zip(together, zip(*alone)):
        assert torch.equal(got, torch.cat(parts))


@pytest.mark.parametrize("member", ["face_landmarks_detector.tflite", "face_blendshapes.tflite"])
def test_face_landmarker_models_through_litert(member):
    """The hiring incident's Face Landmarker models: the blendshape file drops the batch axis (a
    STRIDED_SLICE takes item 0); the engine's adapted file keeps it, as the port does."""
    from autopsy.models import face_landmarker as fl

    data = fl.read_member(fl.FACE_LANDMARKER_V2, member)
    fast, port = load_tflite(data, engine="auto"), load_tflite(data)
    generator = torch.Generator().manual_seed(0)
    if member == "face_blendshapes.tflite":
        x = torch.rand(3, 146, 2, generator=generator) * 140 + 60  # landmark points in crop pixels
    else:
        x = torch.rand(3, 3, 192, 192, generator=generator)
    with torch.inference_mode():
        for batch in (x, x[:1]):
            for name, g, w in zip(fast.output_names, as_tuple(fast(batch)), as_tuple(port(batch))):
                assert g.shape == w.shape
                within_tolerance(member, name, g, w, probability=member == "face_blendshapes.tflite")


def test_a_model_built_in_inference_mode_keeps_tracked_differentiable_weights():
    """Weights made in an inference region are still ordinary tensors: their writes are counted and
    gradients (saliency) can run through them later."""
    path = fetch(mp.ASSETS["face_detection_short_range"])
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        model = load_tflite(path, engine="auto")
        assert not any(t.is_inference() for t in model.state_dict().values())
        assert model._reference_for((x,), model.output_names) is not None
        assert model._state.shared is not None  # one version counter covers every weight
        next(iter(model.parameters())).mul_(0.5)
        assert model._reference_for((x,), model.output_names) is None
    regressors, _ = model(x.requires_grad_())
    regressors.sum().backward()
    assert x.grad.abs().sum() > 0


def test_inference_tensor_weights_are_compared_by_value():
    """Inference tensors count no writes: the engine compares their values at each pass."""
    model = load_tflite(fetch(mp.ASSETS["face_detection_short_range"]), engine="auto")
    op = next(o for o in model.ops.values() if isinstance(o, torch.nn.Conv2d))
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        op.weight = torch.nn.Parameter(op.weight.detach().clone(), requires_grad=False)  # same values
        assert model._reference_for((x,), model.output_names) is not None
        assert model._state.untracked
        op.weight.mul_(0.5)
        assert model._reference_for((x,), model.output_names) is None


def test_weight_edits_send_passes_to_torch_however_they_are_written():
    """In-place writes, writes through ``.data`` (which PyTorch's counter misses), ``.data``
    reassignment, a reloaded state dict and a deep copy's edits: each is seen."""
    path = fetch(mp.ASSETS["face_detection_short_range"])
    x = torch.rand(1, 3, 128, 128)

    def conv_weight(model):
        return next(o for o in model.ops.values() if isinstance(o, torch.nn.Conv2d)).weight

    edits = {
        "in place": lambda w: w.mul_(0.5),
        "through .data": lambda w: w.data[0].zero_(),
        ".data copy_": lambda w: w.data.copy_(torch.zeros_like(w)),
        ".data reassigned": lambda w: setattr(w, "data", torch.zeros_like(w)),
    }
    for label, edit in edits.items():
        model = load_tflite(path, engine="auto")
        with torch.no_grad():
            assert model._reference_for((x,), model.output_names) is not None
            edit(conv_weight(model))
            assert model._reference_for((x,), model.output_names) is None, label
    model = load_tflite(path, engine="auto")
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        conv_weight(model).data = conv_weight(model).detach().clone()  # same values: LiteRT still
        assert model._reference_for((x,), model.output_names) is not None
        conv_weight(model).add_(1.0)  # its counter is still watched after the reassignment
        assert model._reference_for((x,), model.output_names) is None
        model.load_state_dict(state)  # the file's weights again
        assert model._reference_for((x,), model.output_names) is not None
        twin = copy.deepcopy(model)
        assert twin._reference_for((x,), twin.output_names) is not None
        conv_weight(twin).data[0].zero_()
        assert twin._reference_for((x,), twin.output_names) is None
        assert model._reference_for((x,), model.output_names) is not None


def test_segmenter_intermediates_come_from_litert_too(photos):
    segmenter = mp.SelfieSegmenter("general")
    x = torch.cat([segmenter.preprocess(p) for p in photos])
    names = [segmenter.model.output_names[0], segmenter.bottleneck, "segment"]
    with torch.inference_mode():
        assert segmenter.model._reference_for((x,), names) is not None  # all three from the adapted file
        fast = segmenter.model.intermediates(x, names=names)
        segmenter.use_engine("torch")
        port = segmenter.model.intermediates(x, names=names)
    for name in names:
        assert fast[name].shape == port[name].shape
        within_tolerance("selfie_segmentation", name, fast[name], port[name], probability=name == names[0])


def test_detections_agree_between_engines(photos):
    fast, port = mp.FaceDetector(), mp.FaceDetector(engine="torch")
    assert (fast.model.engine, port.model.engine) == ("litert", "torch")
    for a, b in zip(fast.detect_many(photos), port.detect_many(photos)):
        assert len(a) == len(b)
        for d, e in zip(a, b):
            np.testing.assert_allclose(d.box, e.box, atol=0.05)  # pixels
            assert abs(d.score - e.score) < 1e-4


def test_only_plain_no_gradient_passes_on_the_files_weights_use_litert():
    segmenter = mp.SelfieSegmenter("landscape")
    model, x = segmenter.model, torch.rand(1, 3, 144, 256)
    outputs = model.output_names
    with torch.no_grad():
        assert model._reference_for((x,), outputs) is not None
        assert model._reference_for((x,), ["conv2d_3"]) is None  # not kept by LiteRT: torch
        hook = model.ops[segmenter.encoder_layers[0]].register_forward_hook(lambda *args: None)
        assert model._reference_for((x,), outputs) is None  # a probe's hook must see the pass
        hook.remove()
        twin = copy.deepcopy(segmenter).model  # a copy with the same weights may still use LiteRT ...
        assert twin._reference_for((x,), outputs) is not None
        twin.ops[segmenter.encoder_layers[0]].reset_parameters()  # ... until its weights change
        assert twin._reference_for((x,), outputs) is None
        assert model._reference_for((x,), outputs) is not None
    assert model._reference_for((x,), outputs) is None  # grad mode with trainable weights: torch
    out = segmenter(x.requires_grad_())
    out.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_engine_choice_is_explicit_and_checked(monkeypatch, tmp_path):
    path = fetch(mp.ASSETS["face_detection_short_range"])
    assert load_tflite(path).engine == "torch"  # the converter returns the port
    assert load_tflite(path, engine="auto").engine == "litert"
    monkeypatch.setenv(ENGINE_ENV, "torch")
    assert mp.FaceDetector().model.engine == "torch"
    monkeypatch.delenv(ENGINE_ENV)
    random = mp.FaceDetector(weights=None)
    assert random.model.engine == "torch"  # no file: nothing for LiteRT to run
    with pytest.raises(ValueError, match="pass source="):
        random.model.use_engine("litert")
    with pytest.raises(ValueError, match="not this module's network"):
        random.use_engine("litert", path)  # random weights are not the file's
    with pytest.raises(ValueError, match="engine must be one of"):
        random.use_engine("onnx")
    random.model.load_state_dict(load_tflite(path).state_dict())
    assert random.use_engine("litert", path).model.engine == "litert"  # loaded afterwards, then attached


def test_threads_follow_the_setting(monkeypatch):
    monkeypatch.setenv(threads.ENV, "1")
    before = torch.get_num_threads()
    try:
        assert threads.configure() == 1 and torch.get_num_threads() == 1 and threads.current() == 1
        assert threads.decide() == (1, f"${threads.ENV}")
        monkeypatch.setenv(threads.ENV, "zero")
        with pytest.raises(ValueError, match="AUTOPSY_THREADS"):
            threads.decide()
        monkeypatch.delenv(threads.ENV)
        found, why = threads.decide()
        assert 1 <= found <= threads.usable_cores() and why.startswith("free cores")
    finally:
        threads.configure(before)


def test_free_cores_do_not_count_this_processs_own_threads():
    """A run's own busy thread during the start-up sample once made it pick one thread on a quiet machine."""
    import threading

    others = threads.busy_cores()  # whatever else runs on the machine now
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        assert threads.busy_cores() < others + 0.5  # the spinning thread (~1 core) is not counted
    finally:
        stop.set()
        spinner.join()
