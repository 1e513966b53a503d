"""Reader for ``.vxm`` weight files and a plain PyTorch rebuild of the network they describe.

``.vxm`` is the container of ``fastgaze.vxm``, the saliency network behind Twitter's automatic
image cropping (released with Yee, Tantipongpipat & Mishra, "Image Cropping on Twitter:
Fairness Metrics, their Limitations, and the Importance of Representation, Design, and
Agency", arXiv 2105.08667, 2021; the model is the pruned, distilled gaze predictor of Theis,
Korshunova, Tejani & Huszár, "Faster gaze prediction with dense networks and Fisher pruning",
arXiv 1801.05787, 2018). Twitter ran it through a closed compiled binary; this module reads the
file with numpy and rebuilds the network as an ordinary ``torch.nn.Module`` so that it can be
inspected, differentiated and exported.

File format (all integers little-endian)::

    magic        4 bytes   b"\\x01tPM"
    count        uint32    number of entries
    count x entry:
        key_len  uint32    length of the key including its terminating NUL
        key      bytes     ASCII, NUL-terminated
        val_len  uint32
        value    bytes

Entries form a flat namespace. A tensor ``K`` is stored as raw values under ``K`` with
``K.dtype`` (ASCII, e.g. ``float32``), ``K.ndims`` (int32) and ``K.shape`` (ndims int32);
4-D tensors additionally repeat their shape as ``K.shape.listlength`` and ``K.shape[i]``.
Every other 4-byte entry is an int32 scalar. ``layerCount`` gives the number of layers and
layer ``i`` is described by keys prefixed with ``i``:

=====  ===============  ===========================================================
iType  meaning          keys
=====  ===============  ===========================================================
0      convolution      ``iw`` (out, in, kh, kw), ``ib`` (out,), ``iAct``
                        (1 = ReLU, 4 = PReLU with a single slope ``ialpha`` (1,))
2      max pooling      ``iPool`` (window = stride)
3      Gaussian blur    ``iKernelSize``, ``iStd`` (int32, in output pixels)
=====  ===============  ===========================================================

What the file does not say, and how Twitter's own program (``candidate_crops``, released as a
macOS binary beside the model) runs it, read from that binary's disassembly (see
``docs/twitter_model.md``): the layers are built on NNPACK; convolutions are
``nnp_convolution_inference`` with "same" zero padding (kernel // 2 on every side), the stored
(out, in, kh, kw) layout and cross-correlation orientation (as PyTorch's ``conv2d``); activation 1
is a ReLU and activation 4 a leaky ReLU whose single slope is ``ialpha`` (a one-parameter PReLU);
max pooling is ``nnp_max_pooling_output`` with a 2x2 window and stride 2 whatever ``iPool`` says,
and NNPACK rounds the output size **up** (``ceil_mode``) for odd sizes; the Gaussian blur's
``KernelSize`` and ``Std`` are read into the model object and **never applied**: the binary
takes its argmax over the raw output of the last convolution. :class:`VxmNetwork` follows the
binary by default (``ceil_mode=True``, ``blur=None``); ``blur="replicate"`` etc. applies the blur
as an ablation. The input preprocessing is not stored at all (see ``incidents/twitter_crop/model.py``).

Usage::

    entries = read_vxm(path)             # {key: int | str | np.ndarray}, in file order
    specs = layer_specs(entries)         # [LayerSpec, ...], the architecture
    net = build_network(specs)           # random init, no file needed (the binary's reading)
    load_weights(net, entries)           # copy the file's arrays in
"""

from __future__ import annotations

import math
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

MAGIC = b"\x01tPM"
MAX_ENTRIES = 100_000
DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}

CONV, POOL, BLUR = 0, 2, 3
RELU, PRELU = 1, 4
LAYER_TYPES = {CONV: "convolution", POOL: "max pooling", BLUR: "Gaussian blur"}
ACTIVATIONS = {RELU: "ReLU", PRELU: "PReLU"}
REQUIRED_KEYS = {CONV: ("w", "b", "Act"), POOL: ("Pool",), BLUR: ("KernelSize", "Std")}


class VxmFormatError(ValueError):
    """A malformed ``.vxm`` file; the message names the file, the byte offset and the problem."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_vxm(path: str | os.PathLike) -> "OrderedDict[str, int | str | np.ndarray]":
    """Parse and validate a ``.vxm`` file.

    Returns every entry in file order, decoded: tensors as numpy arrays of their stored shape,
    ``.dtype`` entries as ``str``, ``.shape`` entries as int32 arrays, other 4-byte entries as
    ``int``. Raises :class:`VxmFormatError` (naming file, offset and problem) for a bad magic,
    truncation, implausible lengths, duplicate keys, shape/size mismatches, unknown dtypes and
    missing or inconsistent layer descriptions.
    """
    path = Path(path)
    data = path.read_bytes()
    raw, offsets = _read_raw_entries(data, path)
    entries = _decode(raw, offsets, path)
    layer_specs(entries, _source=path, _offsets=offsets)  # validates the layer descriptions
    return entries


def _fail(path, offset, problem) -> VxmFormatError:
    return VxmFormatError(
        f"{path}: malformed .vxm file at byte offset {offset}: {problem}. "
        "Re-fetch the original file (its SHA-256 is pinned by the asset that names it)."
    )


def _read_raw_entries(data: bytes, path) -> tuple["OrderedDict[str, bytes]", dict[str, int]]:
    if len(data) < 8:
        raise _fail(path, 0, f"file is {len(data)} bytes, shorter than the 8-byte header")
    if data[:4] != MAGIC:
        raise _fail(path, 0, f"bad magic {data[:4]!r}, expected {MAGIC!r} (is this a .vxm file?)")
    (count,) = struct.unpack_from("<I", data, 4)
    if count == 0 or count > MAX_ENTRIES:
        raise _fail(path, 4, f"entry count {count} is implausible (expected 1..{MAX_ENTRIES})")

    entries: OrderedDict[str, bytes] = OrderedDict()
    offsets: dict[str, int] = {}
    pos = 8
    for index in range(count):
        start = pos
        key_len, pos = _u32(data, pos, path, f"key length of entry {index} of {count}")
        if key_len == 0 or key_len > 4096:
            raise _fail(path, start, f"entry {index}: key length {key_len} is implausible")
        key_bytes = _take(data, pos, key_len, path, f"key of entry {index} of {count}")
        pos += key_len
        if not key_bytes.endswith(b"\0") or b"\0" in key_bytes[:-1]:
            raise _fail(path, start + 4, f"entry {index}: key {key_bytes!r} is not a single NUL-terminated string")
        try:
            key = key_bytes[:-1].decode("ascii")
        except UnicodeDecodeError:
            raise _fail(path, start + 4, f"entry {index}: key {key_bytes!r} is not ASCII") from None
        value_len, pos = _u32(data, pos, path, f"value length of entry {index} ({key!r})")
        value = _take(data, pos, value_len, path, f"value of entry {index} ({key!r}, {value_len} bytes)")
        pos += value_len
        if key in entries:
            raise _fail(path, start, f"duplicate key {key!r}")
        entries[key] = value
        offsets[key] = start
    if pos != len(data):
        raise _fail(path, pos, f"{len(data) - pos} unexpected trailing bytes after the {count} declared entries")
    return entries, offsets


def _u32(data, pos, path, what) -> tuple[int, int]:
    if pos + 4 > len(data):
        raise _fail(path, pos, f"file truncated while reading the {what} (needs 4 bytes, {len(data) - pos} left)")
    return struct.unpack_from("<I", data, pos)[0], pos + 4


def _take(data, pos, n, path, what) -> bytes:
    if pos + n > len(data):
        raise _fail(path, pos, f"file truncated while reading the {what} ({len(data) - pos} bytes left)")
    return data[pos : pos + n]


def _decode(raw, offsets, path) -> "OrderedDict[str, int | str | np.ndarray]":
    tensors = {k[: -len(".dtype")] for k in raw if k.endswith(".dtype")}
    out: OrderedDict = OrderedDict()
    for key, value in raw.items():
        at = offsets[key]
        if key in tensors:
            out[key] = _decode_tensor(key, value, raw, offsets, path)
        elif key.endswith(".dtype"):
            out[key] = value.decode("ascii", errors="replace")
        elif key.endswith(".shape") and key[: -len(".shape")] in tensors:
            if len(value) % 4:
                raise _fail(path, at, f"{key!r} is {len(value)} bytes, not a whole number of int32")
            out[key] = np.frombuffer(value, dtype="<i4").copy()
        elif len(value) == 4:
            out[key] = struct.unpack("<i", value)[0]
        else:
            raise _fail(path, at, f"entry {key!r} has {len(value)} bytes but no {key}.dtype describing it")
    return out


def _decode_tensor(key, value, raw, offsets, path) -> np.ndarray:
    at = offsets[key]
    dtype_name = raw[f"{key}.dtype"].decode("ascii", errors="replace")
    if dtype_name not in DTYPES:
        raise _fail(path, offsets[f"{key}.dtype"], f"tensor {key!r} has unsupported dtype {dtype_name!r} (supported: {sorted(DTYPES)})")
    for meta in (".ndims", ".shape"):
        if f"{key}{meta}" not in raw:
            raise _fail(path, at, f"tensor {key!r} lacks its {key}{meta} entry")
    ndims = struct.unpack("<i", raw[f"{key}.ndims"])[0] if len(raw[f"{key}.ndims"]) == 4 else -1
    shape_bytes = raw[f"{key}.shape"]
    if ndims < 1 or len(shape_bytes) != 4 * ndims:
        raise _fail(path, offsets[f"{key}.shape"], f"tensor {key!r}: ndims {ndims} disagrees with a {len(shape_bytes)}-byte shape")
    shape = tuple(int(s) for s in np.frombuffer(shape_bytes, dtype="<i4"))
    if any(s <= 0 for s in shape):
        raise _fail(path, offsets[f"{key}.shape"], f"tensor {key!r} has non-positive shape {shape}")
    listed = f"{key}.shape.listlength"
    if listed in raw:
        n = struct.unpack("<i", raw[listed])[0]
        repeated = tuple(struct.unpack("<i", raw.get(f"{key}.shape[{i}]", b"\xff\xff\xff\xff"))[0] for i in range(max(n, 0)))
        if n != ndims or repeated != shape:
            raise _fail(path, offsets[listed], f"tensor {key!r}: shape list {repeated} disagrees with shape {shape}")
    dtype = DTYPES[dtype_name]
    expected = math.prod(shape) * dtype.itemsize
    if len(value) != expected:
        raise _fail(
            path, at,
            f"tensor {key!r} has {len(value)} bytes but shape {shape} of {dtype_name} needs {expected} "
            f"({math.prod(shape)} elements)",
        )
    return np.frombuffer(value, dtype=dtype).reshape(shape).copy()


# --------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One layer as described by the file; fields not used by a layer type stay ``None``."""

    type: int
    in_channels: int | None = None
    out_channels: int | None = None
    kernel: tuple[int, int] | None = None
    activation: int | None = None
    pool: int | None = None
    blur_kernel: int | None = None
    blur_std: float | None = None

    @property
    def name(self) -> str:
        if self.type == CONV:
            return "conv"
        return {POOL: "pool", BLUR: "blur"}[self.type]


def layer_specs(entries, *, _source="<entries>", _offsets=None) -> list[LayerSpec]:
    """The architecture described by decoded entries, validated layer by layer."""
    where = (lambda key: (_offsets or {}).get(key, "?"))
    if "layerCount" not in entries:
        raise _fail(_source, "?", "no 'layerCount' entry")
    count = entries["layerCount"]
    if not isinstance(count, int) or not 0 < count < 1000:
        raise _fail(_source, where("layerCount"), f"layerCount {count!r} is implausible")
    specs: list[LayerSpec] = []
    channels = None
    for i in range(count):
        type_key = f"{i}Type"
        if type_key not in entries:
            raise _fail(_source, "?", f"layer {i} of {count} has no {type_key!r} entry")
        kind = entries[type_key]
        if kind not in REQUIRED_KEYS:
            raise _fail(_source, where(type_key), f"layer {i} has unsupported type {kind} (known: {LAYER_TYPES})")
        missing = [f"{i}{k}" for k in REQUIRED_KEYS[kind] if f"{i}{k}" not in entries]
        if missing:
            raise _fail(_source, where(type_key), f"layer {i} ({LAYER_TYPES[kind]}) lacks {missing}")
        if kind == CONV:
            w, b, act = entries[f"{i}w"], entries[f"{i}b"], entries[f"{i}Act"]
            if not isinstance(w, np.ndarray) or w.ndim != 4:
                raise _fail(_source, where(f"{i}w"), f"layer {i}: weight must be a 4-D tensor, got {getattr(w, 'shape', w)!r}")
            if not isinstance(b, np.ndarray) or b.shape != (w.shape[0],):
                raise _fail(_source, where(f"{i}b"), f"layer {i}: bias shape {getattr(b, 'shape', b)} does not match {w.shape[0]} outputs")
            if channels is not None and w.shape[1] != channels:
                raise _fail(_source, where(f"{i}w"), f"layer {i}: expects {w.shape[1]} input channels, previous layer gives {channels}")
            if act not in ACTIVATIONS:
                raise _fail(_source, where(f"{i}Act"), f"layer {i}: unsupported activation {act} (known: {ACTIVATIONS})")
            if act == PRELU:
                alpha = entries.get(f"{i}alpha")
                if not isinstance(alpha, np.ndarray) or alpha.size != 1:
                    raise _fail(_source, where(f"{i}Act"), f"layer {i}: PReLU needs a single-element tensor '{i}alpha'")
            channels = int(w.shape[0])
            specs.append(LayerSpec(CONV, int(w.shape[1]), channels, (int(w.shape[2]), int(w.shape[3])), int(act)))
        elif kind == POOL:
            size = entries[f"{i}Pool"]
            if not isinstance(size, int) or size < 1:
                raise _fail(_source, where(f"{i}Pool"), f"layer {i}: pool size {size!r} is invalid")
            specs.append(LayerSpec(POOL, pool=size))
        else:
            ksize, std = entries[f"{i}KernelSize"], entries[f"{i}Std"]
            if not isinstance(ksize, int) or ksize < 1 or ksize % 2 == 0:
                raise _fail(_source, where(f"{i}KernelSize"), f"layer {i}: blur kernel size {ksize!r} must be a positive odd int")
            if not isinstance(std, int | float) or std <= 0:
                raise _fail(_source, where(f"{i}Std"), f"layer {i}: blur std {std!r} must be positive")
            specs.append(LayerSpec(BLUR, blur_kernel=ksize, blur_std=float(std)))
    return specs


# --------------------------------------------------------------------------------------------
# PyTorch network
# --------------------------------------------------------------------------------------------


class GaussianBlur(nn.Module):
    """Fixed, normalised, separable Gaussian blur that keeps the spatial size.

    ``padding_mode`` is ``"reflect"``, ``"replicate"`` or ``"zeros"``; for inputs smaller than
    the kernel radius, ``"reflect"`` falls back to ``"replicate"`` (reflection needs pad < size).
    """

    def __init__(self, kernel_size: int, std: float, padding_mode: str = "replicate"):
        super().__init__()
        if padding_mode not in ("reflect", "replicate", "zeros"):
            raise ValueError(f"padding_mode must be 'reflect', 'replicate' or 'zeros', got {padding_mode!r}")
        self.kernel_size, self.std, self.padding_mode = kernel_size, std, padding_mode
        x = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        g = torch.exp(-0.5 * (x / std) ** 2)
        self.register_buffer("kernel", g / g.sum(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        r = self.kernel_size // 2
        mode = self.padding_mode
        if mode == "reflect" and min(x.shape[-2:]) <= r:
            mode = "replicate"
        if mode == "zeros":
            x = F.pad(x, (r, r, r, r))
        else:
            x = F.pad(x, (r, r, r, r), mode=mode)
        # Every channel is blurred alike: fold channels into the batch so the kernel has a fixed
        # shape (which also keeps ONNX export independent of the channel count).
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        k = self.kernel.to(x.dtype)
        x = x.reshape(n * c, 1, h, w)
        x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
        return x.reshape(n, c, h - 2 * r, w - 2 * r)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, std={self.std}, padding_mode={self.padding_mode!r}"


BLUR_MODES = (None, "reflect", "replicate", "zeros")


class VxmNetwork(nn.Module):
    """The network of a ``.vxm`` file: ``self.layers`` holds ``conv0``, ``relu0``, ``pool2``,
    ``prelu14``, ``blur18`` ... named by the file's layer index.

    ``blur=None`` (the binary's behaviour) keeps the blur's place as ``nn.Identity``; a padding
    mode (``"replicate"``, ``"reflect"``, ``"zeros"``) applies the file's Gaussian blur instead.
    ``ceil_mode=True`` (NNPACK's, hence the binary's) rounds pooled sizes up, so the output
    grid is ``ceil(h / stride) x ceil(w / stride)``; ``False`` rounds down as PyTorch does.
    """

    #: Largest layer output (bytes) of one chunk of an inference pass (see ``forward``).
    CACHE_BYTES = 128 * 2**20

    def __init__(self, specs: list[LayerSpec], *, blur: str | None = None, ceil_mode: bool = True):
        super().__init__()
        if blur not in BLUR_MODES:
            raise ValueError(f"blur must be one of {BLUR_MODES} (None: not applied, as Twitter's binary), got {blur!r}")
        self.specs = list(specs)
        self.blur, self.ceil_mode = blur, ceil_mode
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, s in enumerate(self.specs):
            if s.type == CONV:
                kh, kw = s.kernel
                layers[f"conv{i}"] = nn.Conv2d(s.in_channels, s.out_channels, s.kernel, padding=(kh // 2, kw // 2))
                layers[f"relu{i}" if s.activation == RELU else f"prelu{i}"] = (
                    nn.ReLU() if s.activation == RELU else nn.PReLU(num_parameters=1)
                )
            elif s.type == POOL:
                layers[f"pool{i}"] = nn.MaxPool2d(2, 2, ceil_mode=ceil_mode)
            else:
                layers[f"blur{i}"] = nn.Identity() if blur is None else GaussianBlur(s.blur_kernel, s.blur_std, blur)
        self.layers = nn.Sequential(layers)
        self.widest = max([3] + [s.out_channels for s in self.specs if s.type == CONV])  # channels of the widest output

    @property
    def stride(self) -> int:
        """Total downsampling factor (2 per pooling layer, as NNPACK pools)."""
        return 2 ** sum(s.type == POOL for s in self.specs)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of the output grid for an input of ``height`` x ``width``."""
        if self.ceil_mode:
            return -(-height // self.stride), -(-width // self.stride)
        return height // self.stride, width // self.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.device.type == "cpu":
            # oneDNN's convolutions run 2-2.5x faster on channels-last tensors than on NCHW ones on
            # a CPU (benchmarks/twitter_throughput.py); values are unchanged up to float rounding,
            # and the output (one channel) has the same layout either way.
            x = x.contiguous(memory_format=torch.channels_last)
        if not _plain_inference(self, x):
            return self.layers(x)
        # No gradient, no hook: a batch in chunks whose widest activation stays under CACHE_BYTES (a
        # 256x256 image's is 11.5 MB: chunks of 11 ran 8% faster than one image at a time, with the
        # same speed at 512x512; batch 16 in benchmarks/results/twitter_throughput.json),
        # and ReLUs in place (the same values, no new tensor).
        step = max(1, self.CACHE_BYTES // (4 * self.widest * x.shape[-2] * x.shape[-1])) if x.dim() == 4 else len(x)
        outputs = []
        for chunk in x.split(step):
            ours = False  # whether ``chunk`` is a tensor this pass made (never overwrite the caller's)
            for layer in self.layers:
                if ours and type(layer) is nn.ReLU:
                    chunk = chunk.relu_()
                else:
                    out = max_pool_2x2(chunk, ceil_mode=self.ceil_mode) if type(layer) is nn.MaxPool2d else layer(chunk)
                    ours, chunk = ours or out is not chunk, out
            outputs.append(chunk)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def max_pool_2x2(x: torch.Tensor, *, ceil_mode: bool = True) -> torch.Tensor:
    """2x2 max pooling with stride 2 (``ceil_mode``: a last odd row/column pools alone), the same
    values as ``F.max_pool2d``; on channels-last tensors, as the maximum of the four shifted
    views: ~1.7x faster on a CPU, without the indices torch computes for a backward pass."""
    n, c, h, w = x.shape
    if not x.is_contiguous(memory_format=torch.channels_last) or x.requires_grad:
        return F.max_pool2d(x, 2, 2, ceil_mode=ceil_mode)
    rows = x.permute(0, 2, 3, 1)  # (N, H, W, C), contiguous
    if ceil_mode and (h % 2 or w % 2):
        rows = F.pad(rows, (0, 0, 0, w % 2, 0, h % 2), value=float("-inf"))
    else:
        rows = rows[:, : h - h % 2, : w - w % 2]
    blocks = rows.unflatten(2, (-1, 2)).unflatten(1, (-1, 2))  # (N, H/2, 2, W/2, 2, C)
    top = torch.maximum(blocks[:, :, 0, :, 0], blocks[:, :, 0, :, 1])
    bottom = torch.maximum(blocks[:, :, 1, :, 0], blocks[:, :, 1, :, 1])
    return torch.maximum(top, bottom).permute(0, 3, 1, 2)


def _plain_inference(network: nn.Module, x: torch.Tensor) -> bool:
    """Whether a pass needs no gradient and no hook sees a layer's output (so ReLUs may run in place)."""
    from torch.nn.modules import module as torch_module

    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in network.parameters())):
        return False
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks or torch.jit.is_tracing():
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks for m in network.modules())


def build_network(specs: list[LayerSpec], *, blur: str | None = None, ceil_mode: bool = True) -> VxmNetwork:
    """A randomly initialised :class:`VxmNetwork` for ``specs`` (no file access); convolution
    weights are stored channels-last, the layout the forward pass runs in."""
    return VxmNetwork(specs, blur=blur, ceil_mode=ceil_mode).to(memory_format=torch.channels_last)


def load_weights(network: VxmNetwork, entries, *, source="<entries>") -> VxmNetwork:
    """Copy a file's tensors into ``network``, checking the architectures agree."""
    specs = layer_specs(entries, _source=source)
    if specs != network.specs:
        diff = next(
            (f"layer {i}: file {a} vs network {b}" for i, (a, b) in enumerate(zip(specs, network.specs)) if a != b),
            f"file has {len(specs)} layers, network {len(network.specs)}",
        )
        raise VxmFormatError(f"{source}: architecture does not match the network ({diff})")
    layers = dict(network.layers.named_children())
    with torch.no_grad():
        for i, s in enumerate(specs):
            if s.type != CONV:
                continue
            conv = layers[f"conv{i}"]
            conv.weight.copy_(torch.from_numpy(entries[f"{i}w"]))
            conv.bias.copy_(torch.from_numpy(entries[f"{i}b"]))
            if s.activation == PRELU:
                layers[f"prelu{i}"].weight.copy_(torch.from_numpy(entries[f"{i}alpha"].reshape(1)))
    return network


def load_vxm(path: str | os.PathLike, *, blur: str | None = None, ceil_mode: bool = True) -> VxmNetwork:
    """Read ``path`` and return the network with its weights, in eval mode."""
    entries = read_vxm(path)
    net = build_network(layer_specs(entries), blur=blur, ceil_mode=ceil_mode)
    return load_weights(net, entries, source=path).eval()
