"""TFLite flatbuffer -> plain ``torch.nn.Module``, checked against the reference runtime (LiteRT).

Read this file top to bottom: parsing (:func:`read_tflite`) turns a ``.tflite`` file into a small,
JSON-serialisable *spec* (the op list with options and parameter shapes) plus a dict of weights;
:class:`TFLiteModule` builds plain torch modules from a spec (random-initialised, so a model can be
built without any file) and :func:`load_tflite` does both and loads the weights.

Layout convention (handled once, here)
--------------------------------------
TFLite stores images as NHWC; torch wants NCHW. **Every rank-4 tensor is NCHW inside and at the
boundary of a** :class:`TFLiteModule`: inputs are given as NCHW and rank-4 outputs come back NCHW
(for example Face Mesh's ``[1, 1, 1, 1404]`` output comes back ``[1, 1404, 1, 1]``). Tensors of any
other rank keep TFLite's layout (BlazeFace's ``[1, 896, 16]`` regressors stay as they are). The ops
that index axes (PAD, CONCATENATION, MEAN, SUM, RESHAPE, DEPTH_TO_SPACE) translate NHWC axes to NCHW;
TRANSPOSE and STRIDED_SLICE view a rank-4 tensor as NHWC, apply the file's axes and view it back.
The batch dimension is free: a 1 in the file means "any batch size" (so a STRIDED_SLICE that
shrinks the batch axis keeps it: the blendshape model's ``[52]`` output comes back ``[N, 52]``).

Numerics follow TFLite's kernels: TF "SAME" padding is asymmetric (the extra row/column goes at the
bottom/right) and is applied explicitly; RESIZE_BILINEAR implements TFLite's three coordinate
conventions (``align_corners``, ``half_pixel_centers``, or neither, which torch has no mode for);
AVERAGE_POOL_2D with SAME padding divides by the number of real (unpadded) pixels and sums
each window in XNNPACK's order (see :class:`Pool2d`), MEAN in XNNPACK's sequential order.

Weights stored as float16 (DEQUANTIZE) or sparse (DENSIFY, TFLite's CSR sparsity format) are decoded
once at conversion into float32 parameters, so the torch graph holds only the compute ops.

Modules are named after the TFLite tensor each op produces (sanitised: ``conv2d_12``,
``h_swish_3``...), kept in order in ``module.ops`` (an ``nn.ModuleDict``), so hooks and Grad-CAM can
target them: ``module.ops["conv2d_12"]`` is an ``nn.Conv2d``. ``module.intermediates(x, names)``
returns named intermediate tensors.

Supported operators: see :data:`SUPPORTED_OPS`. Anything else, or a file that is not a valid TFLite
flatbuffer, raises :class:`TFLiteConversionError` naming the operator and the file.
"""

from __future__ import annotations

import json
import operator
import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _torch_module
from torch.utils.hooks import RemovableHandle

__all__ = [
    "TFLiteConversionError",
    "TFLiteModule",
    "SUPPORTED_OPS",
    "read_tflite",
    "load_tflite",
    "list_operators",
]


class TFLiteConversionError(ValueError):
    """A TFLite file that cannot be converted; the message names the file and the operator."""


# Ops folded into constants at conversion time, and ops that become torch modules.
CONSTANT_OPS = ("DEQUANTIZE", "DENSIFY")
COMPUTE_OPS = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CUSTOM:Convolution2DTransposeBias",
    "ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE",
    "RELU", "RELU6", "PRELU", "HARD_SWISH", "LOGISTIC", "TANH", "NEG", "SQRT", "RSQRT",
    "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "SUM", "PAD",
    "RESIZE_BILINEAR", "CONCATENATION", "RESHAPE", "DEPTH_TO_SPACE", "TRANSPOSE", "STRIDED_SLICE",
)
SUPPORTED_OPS = CONSTANT_OPS + COMPUTE_OPS

# NHWC axis -> NCHW axis, for rank-4 tensors.
NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}

FUSED_ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}


# ----------------------------------------------------------------------------------------------
# Parsing: flatbuffer -> (spec, weights)
# ----------------------------------------------------------------------------------------------


def _enum_names(enum_class) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


def _open_model(source):
    """(tflite.Model, raw bytes, display name) for a path or bytes; a clear error if not TFLite."""
    import tflite

    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
    else:
        name = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as err:
            raise TFLiteConversionError(f"{name}: cannot read the file ({err})") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteConversionError(
            f"{name}: not a TFLite flatbuffer (no 'TFL3' identifier in its first 8 bytes; "
            f"{len(data)} bytes). Check the file is a complete, unmodified .tflite model."
        )
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("it has no subgraph")
    except TFLiteConversionError:
        raise
    except Exception as err:
        raise TFLiteConversionError(f"{name}: malformed or truncated TFLite file ({err!r})") from None
    return model, data, name


def _opcode_name(model, op) -> str:
    from tflite.BuiltinOperator import BuiltinOperator

    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _enum_names(BuiltinOperator).get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        name = "CUSTOM:" + (code.CustomCode() or b"?").decode("utf-8", "replace")
    return name


def list_operators(source) -> dict[str, int]:
    """Operator name -> count in the file's main subgraph (``CUSTOM:<code>`` for custom ops)."""
    model, _, name = _open_model(source)
    try:
        graph = model.Subgraphs(0)
        counts: dict[str, int] = {}
        for i in range(graph.OperatorsLength()):
            op_name = _opcode_name(model, graph.Operators(i))
            counts[op_name] = counts.get(op_name, 0) + 1
    except Exception as err:
        raise TFLiteConversionError(f"{name}: malformed or truncated TFLite file ({err!r})") from None
    return counts


def _builtin_options(op) -> dict:
    """The op's builtin options as a plain dict of CamelCase getter -> value (no arrays)."""
    import tflite
    from tflite.BuiltinOptions import BuiltinOptions

    kind = op.BuiltinOptionsType()
    if kind == 0:
        return {}
    cls = getattr(tflite, _enum_names(BuiltinOptions)[kind])
    table = op.BuiltinOptions()
    options = cls()
    options.Init(table.Bytes, table.Pos)
    out = {}
    for attr in dir(options):
        if not attr[:1].isupper() or attr == "Init" or attr.startswith("GetRoot"):
            continue
        if any(s in attr for s in ("AsNumpy", "Length", "IsNone", "BufferHas")):
            continue
        try:
            value = getattr(options, attr)()
        except TypeError:  # vector getters need an index; none of the ops we support use them
            continue
        out[attr] = value.item() if isinstance(value, np.generic) else value
    return out


_NUMPY_TYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT32": np.int32,
    "INT64": np.int64, "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "BOOL": np.bool_,
}


def _tensor_data(model, graph, data: bytes, index: int) -> np.ndarray | None:
    """The constant stored in the file for tensor ``index`` (None for activations)."""
    from tflite.TensorType import TensorType

    tensor = graph.Tensors(index)
    buffer = model.Buffers(tensor.Buffer())
    if buffer is None:
        return None
    if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer
        start, size = buffer.Offset(), buffer.Size()
        if start + size > len(data):
            raise ValueError(f"buffer of tensor {tensor.Name()!r} runs past the end of the file")
        raw = data[start:start + size]
    elif buffer.DataLength() > 0:
        raw = buffer.DataAsNumpy().tobytes()
    else:
        return None
    type_name = _enum_names(TensorType)[tensor.Type()]
    if type_name not in _NUMPY_TYPES:
        raise ValueError(f"tensor {tensor.Name()!r} has unsupported type {type_name}")
    array = np.frombuffer(raw, dtype=_NUMPY_TYPES[type_name])
    if tensor.Sparsity() is not None:
        return array  # densified by the DENSIFY op that consumes it
    shape = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    return array.reshape(shape)


def _densify(values: np.ndarray, shape: tuple[int, ...], sparsity) -> np.ndarray:
    """Expand a tensor stored in TFLite's sparse format (traversal order, block map, CSR levels).

    Level ``l`` of the traversal walks expanded dimension ``traversal_order[l]``; the expanded
    dimensions are the tensor's own (divided by their block size when blocked) followed by one
    per block. Dense levels enumerate ``dense_size`` entries; sparse (CSR) levels read
    ``array_segments``/``array_indices``.
    """
    rank = len(shape)
    order = [int(v) for v in sparsity.TraversalOrderAsNumpy()]
    block_map = [int(v) for v in sparsity.BlockMapAsNumpy()] if sparsity.BlockMapLength() else []
    levels = []
    for level in range(sparsity.DimMetadataLength()):
        meta = sparsity.DimMetadata(level)
        if meta.Format() == 0:  # DENSE
            levels.append(("dense", meta.DenseSize(), None, None))
        else:
            levels.append(("csr", None, _index_vector(meta.ArraySegments(), meta.ArraySegmentsType()),
                           _index_vector(meta.ArrayIndices(), meta.ArrayIndicesType())))
    block_size = {dim: levels[order.index(rank + j)][1] for j, dim in enumerate(block_map)}
    dense = np.zeros(shape, dtype=values.dtype)
    coords = [0] * len(order)

    def position():
        out = []
        for dim in range(rank):
            if dim in block_size:
                out.append(coords[dim] * block_size[dim] + coords[rank + block_map.index(dim)])
            else:
                out.append(coords[dim])
        return tuple(out)

    def walk(level: int, parent: int):
        kind, size, segments, indices = levels[level]
        dim = order[level]
        children = (
            [(k, parent * size + k) for k in range(size)] if kind == "dense"
            else [(int(indices[p]), p) for p in range(int(segments[parent]), int(segments[parent + 1]))]
        )
        for coordinate, pos in children:
            coords[dim] = coordinate
            if level + 1 == len(order):
                dense[position()] = values[pos]
            else:
                walk(level + 1, pos)

    walk(0, 0)
    return dense


def _index_vector(table, kind: int) -> np.ndarray:
    import tflite

    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}[kind]
    vector = cls()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy()


def _sanitise(name: str) -> str:
    name = name.split(";")[0]
    name = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_") or "tensor"
    return f"t_{name}" if name[0].isdigit() else name


def _short_names(raw_names: list[str]) -> list[str]:
    """Sanitised, unique module names; drops a path prefix that every slashed name shares."""
    firsts = [n.split(";")[0] for n in raw_names]
    slashed = [n.split("/")[:-1] for n in firsts if "/" in n]
    prefix: list[str] = []
    if slashed:
        for parts in zip(*slashed):
            if len(set(parts)) != 1:
                break
            prefix.append(parts[0])
    strip = "/".join(prefix) + "/" if prefix else ""
    out, seen = [], set()
    for name in firsts:
        base = _sanitise(name[len(strip):] if strip and name.startswith(strip) else name)
        candidate, k = base, 1
        while candidate in seen:
            k += 1
            candidate = f"{base}_{k}"
        seen.add(candidate)
        out.append(candidate)
    return out


def _nchw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2)) if array.ndim == 4 else array


def _same_or_valid(code: int) -> str:
    return {0: "SAME", 1: "VALID"}[code]


def read_tflite(source) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse a ``.tflite`` file (path or bytes) into ``(spec, weights)``.

    ``spec`` is JSON-serialisable: ``inputs``/``outputs`` (name, TFLite shape) and ``ops``, each
    ``{"op", "name", "inputs", "outputs", "options", "params"}`` with ``params`` mapping a
    parameter name to its torch-layout shape. ``weights`` maps ``"<op name>.<param>"`` to float32
    arrays in torch layout, ready for :meth:`TFLiteModule.load_state_dict`.
    """
    model, data, file_name = _open_model(source)
    try:
        return _read(model, data, file_name)
    except TFLiteConversionError:
        raise
    except Exception as err:
        raise TFLiteConversionError(f"{file_name}: malformed or truncated TFLite file ({err!r})") from None


def _read(model, data: bytes, file_name: str):
    if model.SubgraphsLength() != 1:
        raise TFLiteConversionError(
            f"{file_name}: has {model.SubgraphsLength()} subgraphs; only single-subgraph models "
            "(no control flow) are supported"
        )
    graph = model.Subgraphs(0)
    n_tensors = graph.TensorsLength()
    raw_names = [graph.Tensors(i).Name().decode("utf-8", "replace") for i in range(n_tensors)]
    short = _short_names(raw_names)
    shapes = [tuple(int(s) for s in graph.Tensors(i).ShapeAsNumpy()) if graph.Tensors(i).ShapeLength() else ()
              for i in range(n_tensors)]

    consts: dict[int, np.ndarray] = {}
    for i in range(n_tensors):
        value = _tensor_data(model, graph, data, i)
        if value is not None:
            consts[i] = value

    ops, weights = [], {}
    for op_index in range(graph.OperatorsLength()):
        op = graph.Operators(op_index)
        kind = _opcode_name(model, op)
        if kind not in SUPPORTED_OPS:
            raise TFLiteConversionError(
                f"{file_name}: operator {kind} (op #{op_index}) is not supported by the TFLite "
                f"converter; supported: {', '.join(SUPPORTED_OPS)}. Add a module for it in "
                "autopsy/models/tflite.py and check it against LiteRT."
            )
        ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(i) for i in op.OutputsAsNumpy()]

        if kind in CONSTANT_OPS:
            if ins[0] not in consts:
                raise TFLiteConversionError(
                    f"{file_name}: operator {kind} (op #{op_index}) acts on a runtime tensor "
                    f"({raw_names[ins[0]]!r}); only constant weights can be dequantised/densified"
                )
            source_tensor = graph.Tensors(ins[0])
            if kind == "DENSIFY":
                consts[outs[0]] = _densify(consts[ins[0]], shapes[outs[0]], source_tensor.Sparsity())
            else:
                consts[outs[0]] = _dequantize(consts[ins[0]], source_tensor)
            continue

        name = short[outs[0]]
        options = _builtin_options(op)
        spec_op = {"op": kind, "name": name, "inputs": [], "outputs": [short[o] for o in outs],
                   "options": {}, "params": {}}
        params: dict[str, np.ndarray] = {}
        runtime_inputs = [i for i in ins if i >= 0 and i not in consts]
        spec_op["inputs"] = [short[i] for i in runtime_inputs]
        in_rank = len(shapes[runtime_inputs[0]]) if runtime_inputs else 0
        spec_op["options"]["rank"] = in_rank
        spec_op["options"]["out_rank"] = len(shapes[outs[0]])

        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            kernel = consts[ins[1]].astype(np.float32)
            if kind == "CONV_2D":
                in_channels = shapes[ins[0]][3]
                groups = in_channels // kernel.shape[3]
                params["weight"] = kernel.transpose(0, 3, 1, 2)  # OHWI -> OIHW
            else:
                groups = shapes[ins[0]][3]
                params["weight"] = kernel.transpose(3, 0, 1, 2)  # 1HW(C*M) -> (C*M)1HW
            if len(ins) > 2 and ins[2] >= 0:
                params["bias"] = consts[ins[2]].astype(np.float32)
            spec_op["options"].update(
                stride=[options["StrideH"], options["StrideW"]],
                dilation=[options.get("DilationHFactor", 1), options.get("DilationWFactor", 1)],
                padding=_same_or_valid(options["Padding"]), groups=groups,
                activation=FUSED_ACTIVATIONS[options["FusedActivationFunction"]],
            )
        elif kind in ("TRANSPOSE_CONV", "CUSTOM:Convolution2DTransposeBias"):
            if kind == "TRANSPOSE_CONV":  # inputs: output_shape, weights, input, (bias)
                kernel, bias = consts[ins[1]], (consts[ins[3]] if len(ins) > 3 and ins[3] >= 0 else None)
                padding, stride = _same_or_valid(options["Padding"]), [options["StrideH"], options["StrideW"]]
                activation = FUSED_ACTIVATIONS[options.get("FusedActivationFunction", 0)]
            else:  # MediaPipe's op: input, weights, bias; options = TfLiteTransposeConvParams
                kernel, bias = consts[ins[1]], consts[ins[2]]
                raw = np.frombuffer(op.CustomOptionsAsNumpy().tobytes(), dtype="<i4")
                padding = {1: "SAME", 2: "VALID"}[int(raw[0])]  # TfLitePadding: 1 same, 2 valid
                stride, activation = [int(raw[2]), int(raw[1])], None
            params["weight"] = kernel.astype(np.float32).transpose(3, 0, 1, 2)  # OHWI -> IOHW
            if bias is not None:
                params["bias"] = bias.astype(np.float32)
            spec_op["options"].update(stride=stride, padding=padding, activation=activation)
        elif kind in ("ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE"):
            spec_op["options"]["activation"] = FUSED_ACTIVATIONS[options.get("FusedActivationFunction", 0)]
            operands = []
            for position, i in enumerate(ins):
                if i in consts:
                    key = f"constant_{position}"
                    params[key] = _broadcastable(consts[i].astype(np.float32), len(shapes[outs[0]]))
                    operands.append(key)
                else:
                    operands.append(short[i])
            spec_op["options"]["operands"] = operands
        elif kind == "PRELU":
            alpha = consts[ins[1]].astype(np.float32)
            params["alpha"] = _broadcastable(alpha, in_rank)
        elif kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            spec_op["options"].update(
                kernel=[options["FilterHeight"], options["FilterWidth"]],
                stride=[options["StrideH"], options["StrideW"]],
                padding=_same_or_valid(options["Padding"]),
                activation=FUSED_ACTIVATIONS[options["FusedActivationFunction"]],
            )
        elif kind in ("MEAN", "SUM"):
            axes = [int(a) % in_rank for a in np.atleast_1d(consts[ins[1]])]
            if in_rank == 4:
                axes = [NHWC_TO_NCHW_AXIS[a] for a in axes]
            spec_op["options"].update(axes=sorted(axes), keep_dims=bool(options.get("KeepDims", False)))
        elif kind == "PAD":
            pads = consts[ins[1]].astype(int).tolist()
            if in_rank == 4:
                pads = [pads[0], pads[3], pads[1], pads[2]]  # NHWC -> NCHW
            spec_op["options"]["pads"] = pads
        elif kind == "RESIZE_BILINEAR":
            spec_op["options"].update(
                size=[int(s) for s in consts[ins[1]]],
                align_corners=bool(options.get("AlignCorners", False)),
                half_pixel_centers=bool(options.get("HalfPixelCenters", False)),
            )
        elif kind == "CONCATENATION":
            axis = options["Axis"] % in_rank
            spec_op["options"].update(
                axis=NHWC_TO_NCHW_AXIS[axis] if in_rank == 4 else axis,
                activation=FUSED_ACTIVATIONS[options["FusedActivationFunction"]],
            )
            if any(i in consts for i in ins):  # e.g. a learnt token prepended to the sequence
                operands = []
                for position, i in enumerate(ins):
                    if i in consts:
                        params[f"constant_{position}"] = _broadcastable(consts[i].astype(np.float32), in_rank)
                        operands.append(f"constant_{position}")
                    else:
                        operands.append(short[i])
                spec_op["options"]["operands"] = operands
        elif kind == "TRANSPOSE":
            spec_op["options"]["perm"] = [int(a) for a in consts[ins[1]]]
        elif kind == "STRIDED_SLICE":
            if options.get("EllipsisMask") or options.get("NewAxisMask") or options.get("Offset"):
                raise TFLiteConversionError(
                    f"{file_name}: STRIDED_SLICE (op #{op_index}) uses ellipsis/new-axis/offset masks, "
                    "which are not supported"
                )
            begin, end, strides = ([int(v) for v in consts[i]] for i in ins[1:4])
            masks = {k: options.get(f"{k}Mask", 0) for k in ("Begin", "End", "ShrinkAxis")}
            batch_whole = (masks["Begin"] & 1 or begin[0] == 0) and strides[0] == 1 \
                and (masks["End"] & 1 or masks["ShrinkAxis"] & 1 or end[0] == 1)
            if not batch_whole:
                raise TFLiteConversionError(
                    f"{file_name}: STRIDED_SLICE (op #{op_index}) slices the batch axis; the converter keeps "
                    "the batch dimension free and supports only slices of the other axes"
                )
            spec_op["options"].update(begin=begin, end=end, strides=strides, begin_mask=masks["Begin"],
                                      end_mask=masks["End"], shrink_axis_mask=masks["ShrinkAxis"])
        elif kind == "RESHAPE":
            spec_op["options"]["shape"] = list(shapes[outs[0]])
        elif kind == "DEPTH_TO_SPACE":
            spec_op["options"]["block_size"] = options["BlockSize"]
        # RELU, RELU6, HARD_SWISH, LOGISTIC, TANH, NEG, SQRT, RSQRT have no options.

        spec_op["params"] = {k: list(v.shape) for k, v in params.items()}
        for key, value in params.items():
            weights[f"{name}.{key}"] = np.ascontiguousarray(value, dtype=np.float32)
        ops.append(spec_op)

    spec = {
        "format": "autopsy-tflite-spec/1",
        "inputs": [{"name": short[i], "tflite_name": raw_names[i], "shape": list(shapes[i])}
                   for i in graph.InputsAsNumpy()],
        "outputs": [{"name": short[i], "tflite_name": raw_names[i], "shape": list(shapes[i])}
                    for i in graph.OutputsAsNumpy()],
        "ops": ops,
    }
    return spec, weights


def _dequantize(array: np.ndarray, tensor) -> np.ndarray:
    if array.dtype == np.float16:
        return array.astype(np.float32)
    quant = tensor.Quantization()
    if quant is None or quant.ScaleLength() == 0:
        raise TFLiteConversionError(f"DEQUANTIZE of {tensor.Name()!r}: integer tensor without scales")
    scale, zero = quant.ScaleAsNumpy().astype(np.float32), quant.ZeroPointAsNumpy().astype(np.float32)
    if scale.size > 1:  # per-axis quantisation
        shape = [1] * array.ndim
        shape[quant.QuantizedDimension()] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (array.astype(np.float32) - zero) * scale


def _broadcastable(constant: np.ndarray, rank: int) -> np.ndarray:
    """A constant operand reshaped to broadcast against a rank-``rank`` tensor in module layout."""
    if rank != 4:
        return constant
    constant = constant.reshape((1,) * (4 - constant.ndim) + constant.shape)
    return _nchw(constant)


# ----------------------------------------------------------------------------------------------
# Torch modules, one per TFLite op
# ----------------------------------------------------------------------------------------------


def _activation(x: torch.Tensor, name: str | None) -> torch.Tensor:
    if name is None:
        return x
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return x.clamp(0.0, 6.0)
    if name == "relu_n1_to_1":
        return x.clamp(-1.0, 1.0)
    if name == "tanh":
        return torch.tanh(x)
    raise TFLiteConversionError(f"fused activation {name!r} is not supported")


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF SAME padding (before, after): output = ceil(size / stride), extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class TFLiteOp(nn.Module):
    """Base of all op modules: remembers the TFLite op and its input/output tensor names."""

    def __init__(self, spec_op: dict):
        super().__init__()
        self.tflite_op = spec_op["op"]
        self.input_names = list(spec_op["inputs"])
        self.output_names = list(spec_op["outputs"])
        self.options = dict(spec_op["options"])

    def extra_repr(self) -> str:
        return f"tflite_op={self.tflite_op}"


class Conv2d(nn.Conv2d):
    """CONV_2D / DEPTHWISE_CONV_2D: an ``nn.Conv2d`` with TF padding and the fused activation."""

    def __init__(self, spec_op: dict):
        weight_shape = spec_op["params"]["weight"]
        o = spec_op["options"]
        groups = o["groups"]
        super().__init__(
            weight_shape[1] * groups, weight_shape[0], tuple(weight_shape[2:]), stride=tuple(o["stride"]),
            padding=0, dilation=tuple(o["dilation"]), groups=groups, bias="bias" in spec_op["params"],
        )
        self.tflite_op, self.options = spec_op["op"], dict(o)
        self.input_names, self.output_names = list(spec_op["inputs"]), list(spec_op["outputs"])

    def forward(self, x):
        if self.options["padding"] == "SAME":
            (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
            top, bottom = _same_padding(x.shape[2], kh, sh, dh)
            left, right = _same_padding(x.shape[3], kw, sw, dw)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return _activation(super().forward(x), self.options["activation"])


class ConvTranspose2d(nn.ConvTranspose2d):
    """TRANSPOSE_CONV and MediaPipe's Convolution2DTransposeBias (transposed conv + bias)."""

    def __init__(self, spec_op: dict):
        weight_shape = spec_op["params"]["weight"]  # I, O, kh, kw
        o = spec_op["options"]
        super().__init__(weight_shape[0], weight_shape[1], tuple(weight_shape[2:]), stride=tuple(o["stride"]),
                         padding=0, bias="bias" in spec_op["params"])
        self.tflite_op, self.options = spec_op["op"], dict(o)
        self.input_names, self.output_names = list(spec_op["inputs"]), list(spec_op["outputs"])

    def forward(self, x):
        y = super().forward(x)
        if self.options["padding"] == "SAME":
            # Full output is (in-1)*s + k; SAME keeps in*s of it, cropping total//2 at the start.
            crops = []
            for axis, (k, s) in enumerate(zip(self.kernel_size, self.stride)):
                size = x.shape[2 + axis]
                total = max((size - 1) * s + k - size * s, 0)
                crops.append((total // 2, total // 2 + size * s))
            y = y[:, :, crops[0][0]:crops[0][1], crops[1][0]:crops[1][1]]
        return _activation(y, self.options["activation"])


ELEMENTWISE = {"ADD": torch.add, "SUB": torch.sub, "MUL": torch.mul, "DIV": torch.div,
               "SQUARED_DIFFERENCE": lambda a, b: torch.square(a - b)}


class Elementwise(TFLiteOp):
    """ADD, SUB, MUL, DIV, SQUARED_DIFFERENCE ((a - b)^2) with broadcasting, constant operands as
    buffers, and the fused activation."""

    def __init__(self, spec_op: dict):
        super().__init__(spec_op)
        for key, shape in spec_op["params"].items():
            self.register_buffer(key, torch.zeros(shape))
        self.operands = list(spec_op["options"]["operands"])

    def forward(self, *inputs):
        runtime = iter(inputs)
        a, b = (getattr(self, k) if k.startswith("constant_") else next(runtime) for k in self.operands)
        y = ELEMENTWISE[self.tflite_op](a, b)
        return _activation(y, self.options["activation"])


class Activation(TFLiteOp):
    """RELU, RELU6, HARD_SWISH (x * relu6(x + 3) / 6), LOGISTIC (sigmoid), TANH, and the unary
    NEG, SQRT, RSQRT (1 / sqrt)."""

    def forward(self, x):
        if self.tflite_op == "RELU":
            return F.relu(x)
        if self.tflite_op == "RELU6":
            return x.clamp(0.0, 6.0)
        if self.tflite_op == "HARD_SWISH":
            return F.hardswish(x)
        if self.tflite_op == "LOGISTIC":
            return torch.sigmoid(x)
        if self.tflite_op == "NEG":
            return -x
        if self.tflite_op == "SQRT":
            return torch.sqrt(x)
        if self.tflite_op == "RSQRT":
            return torch.rsqrt(x)
        return torch.tanh(x)


class PReLU(TFLiteOp):
    """PRELU with a per-channel (or broadcast) slope ``alpha``: max(x, 0) + alpha * min(x, 0)."""

    def __init__(self, spec_op: dict):
        super().__init__(spec_op)
        self.alpha = nn.Parameter(torch.full(spec_op["params"]["alpha"], 0.25))

    def forward(self, x):
        alpha = self.alpha
        per_channel = x.dim() >= 2 and alpha.dim() == x.dim() and alpha.numel() == x.shape[1] \
            and alpha.shape[1] == x.shape[1]
        if per_channel:  # torch's fused kernel: the same values, ~6x faster than the expression below
            return F.prelu(x, alpha.reshape(-1))
        return F.relu(x) - alpha * F.relu(-x)


class Pool2d(TFLiteOp):
    """AVERAGE_POOL_2D / MAX_POOL_2D with TF SAME/VALID padding (SAME averages exclude padding).

    Averages are summed in the order of LiteRT's CPU kernel (XNNPACK's
    ``f32_avgpool_minmax_ukernel_9p``), which is bit-exact on the general selfie segmenter's ten
    global pools: the window's elements are taken **column by column** (``kx`` outer, ``ky``
    inner, XNNPACK's indirection order), in groups of 9 (the last one padded with zeros); each
    group is summed as a tree, ``((i2+i3) + (i4+i5)) + (((i0+i1)+i8) + (i6+i7))``, and added to a
    running float32 total, which is finally multiplied by the float32 ``1/count``. torch's
    ``avg_pool2d`` sums the window row by row, sequentially: over a 64x64 window that rounds
    differently by up to ~2e-5 relative (3.9e-5 on a pooled value of 2.2), and the segmenter's
    squeeze-and-excitation gates and decoder amplify it to 6.4e-4 on the output mask. The sum is
    made of plain additions of the same terms, so its gradient is the exact average's.

    What remains between this port and LiteRT is ulp-level rounding in the convolutions: XNNPACK
    accumulates each output from its bias with one FMA per term (``ky``, ``kx``, input channel
    order; depthwise taps ``kx`` outer, ``ky`` inner), oneDNN/torch does not. Amplified by the
    general segmenter, that noise reaches 9.5e-5 on its mask (42 FairFace photos, worst
    fairface_0469); emulating those FMA chains (measured bit-exact per layer, ~5x slower
    forward) would take it to ~2e-5.
    """

    def forward(self, x):
        (kh, kw), (sh, sw) = self.options["kernel"], self.options["stride"]
        pad = None
        if self.options["padding"] == "SAME":
            top, bottom = _same_padding(x.shape[2], kh, sh)
            left, right = _same_padding(x.shape[3], kw, sw)
            pad = (left, right, top, bottom) if any((top, bottom, left, right)) else None
        if self.tflite_op == "MAX_POOL_2D":
            if pad:
                x = F.pad(x, pad, value=float("-inf"))
            y = F.max_pool2d(x, (kh, kw), (sh, sw))
        elif x.dtype != torch.float32 or kh * kw == 1:
            y = self._exact_average(x, pad, kh, kw, sh, sw)
        else:
            with torch.no_grad():
                y = self._xnnpack_average(x.detach(), pad, kh, kw, sh, sw)
            if torch.is_grad_enabled() and x.requires_grad:  # backward through the exact average: cheap
                y = _value_with_gradient_of(y, self._exact_average(x, pad, kh, kw, sh, sw))
        return _activation(y, self.options["activation"])

    @staticmethod
    def _exact_average(x, pad, kh, kw, sh, sw):
        if not pad:
            return F.avg_pool2d(x, (kh, kw), (sh, sw))
        ones = torch.ones_like(x[:1, :1])
        return F.avg_pool2d(F.pad(x, pad), (kh, kw), (sh, sw)) / F.avg_pool2d(F.pad(ones, pad), (kh, kw), (sh, sw))

    @staticmethod
    def _xnnpack_average(x, pad, kh, kw, sh, sw):
        n, c = x.shape[:2]
        if pad:
            x = F.pad(x, pad)
        out_h, out_w = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
        if (out_h, out_w) == (1, 1):  # global pooling (the common case): no copy of the window
            window = x[:, :, :kh, :kw].transpose(2, 3).reshape(n, c, kh * kw, 1)
        else:
            window = F.unfold(x, (kh, kw), stride=(sh, sw)).reshape(n, c, kh, kw, out_h * out_w)
            window = window.transpose(2, 3).reshape(n, c, kh * kw, out_h * out_w)
        groups = -(-(kh * kw) // 9)
        window = F.pad(window, (0, 0, 0, groups * 9 - kh * kw)).reshape(n, c, groups, 9, -1)
        i = window.unbind(3)
        partial = ((i[2] + i[3]) + (i[4] + i[5])) + (((i[0] + i[1]) + i[8]) + (i[6] + i[7]))
        # the running float32 total over the groups, left to right (numpy's accumulate does not reorder)
        total = torch.from_numpy(np.add.accumulate(partial.contiguous().numpy(), axis=2)[:, :, -1])
        if pad:  # TF SAME: divide by the number of real pixels under each window
            ones = F.pad(torch.ones(1, 1, x.shape[2] - pad[2] - pad[3], x.shape[3] - pad[0] - pad[1],
                                    dtype=x.dtype, device=x.device), pad)
            count = F.avg_pool2d(ones, (kh, kw), (sh, sw), divisor_override=1).reshape(1, 1, -1)
            scale = (1.0 / count.double()).to(x.dtype)
        else:
            scale = torch.tensor(1.0 / (kh * kw), dtype=x.dtype, device=x.device)
        return (total * scale).reshape(n, c, out_h, out_w)


class _ValueWithGradientOf(torch.autograd.Function):
    """Forward: ``value``; backward: the gradient of ``surrogate``, the same function computed in
    another summation order (a straight-through estimator that leaves the forward value untouched)."""

    @staticmethod
    def forward(ctx, value, surrogate):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return None, grad


def _value_with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    return _ValueWithGradientOf.apply(value.detach(), surrogate)


class Mean(TFLiteOp):
    """MEAN over constant axes.

    LiteRT's CPU kernel (XNNPACK) sums float32 values one after another, in NHWC order, then
    multiplies by 1/n. Over thousands of pixels that rounds differently from torch's pairwise sum
    by up to ~2e-5 relative, and the landscape segmenter's ten squeeze-and-excitation blocks
    amplify it to ~3e-3 on the output mask. So for float32 spatial means the forward value is
    that sequential float32 sum (numpy's ``add.accumulate`` does not reorder), while the gradient
    is the exact mean's (a straight-through estimator: the two differ by rounding only).
    """

    def forward(self, x):
        axes, keep = self.options["axes"], self.options["keep_dims"]
        exact = x.mean(dim=axes, keepdim=keep)
        if x.dtype != torch.float32 or x.dim() != 4 or axes != [2, 3]:
            return exact
        n, c, h, w = x.shape
        rows = x.detach().permute(2, 3, 0, 1).reshape(h * w, n * c).cpu().numpy()
        total = np.add.accumulate(rows, axis=0)[-1] * np.float32(1.0 / (h * w))
        sequential = torch.from_numpy(total).to(x.device).reshape(exact.shape)
        return _value_with_gradient_of(sequential, exact)


class Sum(TFLiteOp):
    """SUM over constant axes (module layout)."""

    def forward(self, x):
        return x.sum(dim=self.options["axes"], keepdim=self.options["keep_dims"])


class Pad(TFLiteOp):
    """PAD with zeros; ``pads`` are (before, after) per axis in module layout."""

    def forward(self, x):
        flat = [p for before_after in reversed(self.options["pads"]) for p in before_after]
        return F.pad(x, flat)


class ResizeBilinear(TFLiteOp):
    """RESIZE_BILINEAR with TFLite's coordinate rules.

    Source coordinate of output pixel ``i``: ``align_corners``: ``i * (in - 1) / (out - 1)``;
    ``half_pixel_centers``: ``(i + 0.5) * in / out - 0.5``; neither (legacy TF):
    ``i * in / out``. The two neighbours are ``floor`` (clamped at 0) and ``ceil`` (clamped at
    ``in - 1``), weighted by the fractional part, as in TFLite's reference kernel.
    """

    def forward(self, x):
        out_h, out_w = self.options["size"]
        rows = self._weights(x.shape[2], out_h, x)
        cols = self._weights(x.shape[3], out_w, x)
        (r0, r1, rf), (c0, c1, cf) = rows, cols
        # index_select gathers what x[:, :, r0] does; its backward (index_add) is ~10x faster
        top = x.index_select(2, r0) * (1 - rf)[:, None] + x.index_select(2, r1) * rf[:, None]
        return top.index_select(3, c0) * (1 - cf) + top.index_select(3, c1) * cf

    def _weights(self, size_in: int, size_out: int, like: torch.Tensor):
        if self.options["align_corners"] and size_out > 1:
            scale = (size_in - 1) / (size_out - 1)
        else:
            scale = size_in / size_out
        i = torch.arange(size_out, dtype=torch.float32, device=like.device)
        src = (i + 0.5) * scale - 0.5 if self.options["half_pixel_centers"] else i * scale
        lower = torch.floor(src)
        frac = (src - lower).to(like.dtype)
        low = lower.long().clamp(min=0, max=size_in - 1)
        high = torch.ceil(src).long().clamp(min=0, max=size_in - 1)
        return low, high, frac


class Concatenation(TFLiteOp):
    """CONCATENATION; constant operands (buffers) are repeated over the batch."""

    def __init__(self, spec_op: dict):
        super().__init__(spec_op)
        for key, shape in spec_op["params"].items():
            self.register_buffer(key, torch.zeros(shape))
        self.operands = spec_op["options"].get("operands")

    def forward(self, *inputs):
        if self.operands:
            runtime = iter(inputs)
            batch = inputs[0].shape[0]
            inputs = [getattr(self, k).expand(batch, *getattr(self, k).shape[1:]) if k.startswith("constant_")
                      else next(runtime) for k in self.operands]
        return _activation(torch.cat(inputs, dim=self.options["axis"]), self.options["activation"])


def _as_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _as_module_layout(y: torch.Tensor) -> torch.Tensor:
    return y.permute(0, 3, 1, 2) if y.dim() == 4 else y


class Transpose(TFLiteOp):
    """TRANSPOSE with the file's permutation, applied in TFLite's layout (NHWC for rank 4)."""

    def forward(self, x):
        return _as_module_layout(_as_nhwc(x).permute(*self.options["perm"]))


class StridedSlice(TFLiteOp):
    """STRIDED_SLICE in TFLite's layout: begin/end/strides with begin, end and shrink-axis masks.

    The batch axis is never sliced (checked at conversion): a shrink of axis 0 keeps it, so the
    batch dimension stays free.
    """

    def forward(self, x):
        o = self.options
        y = _as_nhwc(x)
        index = [slice(None)]
        for axis in range(1, y.dim()):
            bit = 1 << axis
            if o["shrink_axis_mask"] & bit:
                index.append(o["begin"][axis])
                continue
            start = None if o["begin_mask"] & bit else o["begin"][axis]
            stop = None if o["end_mask"] & bit else o["end"][axis]
            index.append(slice(start, stop, o["strides"][axis]))
        y = y[tuple(index)]
        return _as_module_layout(y) if x.dim() == 4 else y


class Reshape(TFLiteOp):
    """RESHAPE in TFLite's (NHWC) element order; the leading (batch) dimension stays free."""

    def forward(self, x):
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        y = x.reshape(-1, *self.options["shape"][1:])
        return y.permute(0, 3, 1, 2) if y.dim() == 4 else y


class DepthToSpace(TFLiteOp):
    """DEPTH_TO_SPACE, TF's "DCR" order: out[h*b+i, w*b+j, c] = in[h, w, (i*b + j)*C + c]."""

    def forward(self, x):
        n, c, h, w = x.shape
        b = self.options["block_size"]
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // (b * b), h * b, w * b)


OP_MODULES = {
    "CONV_2D": Conv2d, "DEPTHWISE_CONV_2D": Conv2d,
    "TRANSPOSE_CONV": ConvTranspose2d, "CUSTOM:Convolution2DTransposeBias": ConvTranspose2d,
    "ADD": Elementwise, "SUB": Elementwise, "MUL": Elementwise,
    "RELU": Activation, "RELU6": Activation, "HARD_SWISH": Activation, "LOGISTIC": Activation,
    "TANH": Activation, "NEG": Activation, "SQRT": Activation, "RSQRT": Activation, "PRELU": PReLU,
    "DIV": Elementwise, "SQUARED_DIFFERENCE": Elementwise, "SUM": Sum, "TRANSPOSE": Transpose,
    "STRIDED_SLICE": StridedSlice,
    "AVERAGE_POOL_2D": Pool2d, "MAX_POOL_2D": Pool2d, "MEAN": Mean, "PAD": Pad,
    "RESIZE_BILINEAR": ResizeBilinear, "CONCATENATION": Concatenation, "RESHAPE": Reshape,
    "DEPTH_TO_SPACE": DepthToSpace,
}


# ----------------------------------------------------------------------------------------------
# The graph module
# ----------------------------------------------------------------------------------------------


class TFLiteModule(nn.Module):
    """A TFLite graph as torch modules, run in the file's op order.

    Built from a spec (see :func:`read_tflite`) with random-initialised parameters; load real
    weights with ``load_state_dict`` or build both at once with :func:`load_tflite`. Rank-4
    tensors are NCHW (see the module docstring). ``forward`` returns one tensor for a
    single-output graph, else a tuple in the file's output order.
    """

    def __init__(self, spec: dict, *, name: str = "tflite"):
        super().__init__()
        self.name = name
        self.spec = spec
        self.input_names = [t["name"] for t in spec["inputs"]]
        self.output_names = [t["name"] for t in spec["outputs"]]
        self.ops = nn.ModuleDict()
        for spec_op in spec["ops"]:
            module_class = OP_MODULES.get(spec_op["op"])
            if module_class is None:
                raise TFLiteConversionError(f"{name}: operator {spec_op['op']} is not supported")
            self.ops[spec_op["name"]] = module_class(spec_op)
        # Which op produces each tensor, and where each tensor is last read (to free memory).
        self._last_use: dict[str, int] = {}
        for position, module in enumerate(self.ops.values()):
            for tensor in module.input_names:
                self._last_use[tensor] = position
        self.tensor_names = set(self.input_names) | {t for m in self.ops.values() for t in m.output_names}
        self._init_random()
        _weights_in_one_buffer(self)

    @torch.no_grad()
    def _init_random(self):
        for module in self.ops.values():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.reset_parameters()

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        """Input shapes in module layout (NCHW for images), batch 1."""
        return [tuple(_to_module_layout(t["shape"])) for t in self.spec["inputs"]]

    @property
    def engine(self) -> str:
        """What runs no-gradient passes: ``"litert"`` (the file itself, in LiteRT) or ``"torch"``.

        See :meth:`use_engine`. Passes that need gradients, hooks or changed weights always run
        in torch, whatever this says.
        """
        return "litert" if self.__dict__.get("_reference") is not None else "torch"

    def use_engine(self, engine: str = "auto", source=None, *, outputs=()) -> "TFLiteModule":
        """Choose the engine of no-gradient passes; returns the module.

        ``"litert"`` runs the ``.tflite`` file (``source``: path or bytes; default the file this
        module was loaded from) in LiteRT, the reference runtime, which is 5-10x faster than the
        torch graph on a CPU. The file's weights must equal the module's, exactly (checked here).
        ``outputs`` names intermediate tensors that :meth:`intermediates` should also get from
        LiteRT (they are added to the file's outputs). ``"torch"`` always runs the torch graph;
        ``"auto"`` picks LiteRT when ``ai-edge-litert`` is installed and a file is known, else
        torch; ``$AUTOPSY_TFLITE_ENGINE`` overrides ``"auto"`` (``torch`` to compare the port).
        """
        if engine == "auto":
            engine = os.environ.get(ENGINE_ENV, "").strip() or "auto"
        if engine not in ("auto", *ENGINES):
            raise ValueError(f"engine must be one of {', '.join(ENGINES)} or 'auto', got {engine!r}")
        source = source if source is not None else self.__dict__.get("_source")
        if engine == "torch" or (engine == "auto" and (source is None or not litert_available())):
            self.__dict__["_reference"] = None
            return self
        if source is None:
            raise ValueError(f"{self.name}: engine='litert' runs the .tflite file; pass source= (its path or bytes)")
        if not litert_available():
            raise ValueError(f"{self.name}: engine='litert' needs the ai-edge-litert package "
                             "(pip install ai-edge-litert), or use engine='torch'")
        self.__dict__["_reference"] = LiteRTEngine(self, source, outputs=outputs)
        return self

    def forward(self, *inputs: torch.Tensor):
        reference = self._reference_for(inputs, self.output_names)
        if reference is not None:
            values = reference.run(inputs, self.output_names)
        else:
            values = self._run(inputs, keep=())
        outputs = tuple(values[n] for n in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def intermediates(self, *inputs: torch.Tensor, names) -> dict[str, torch.Tensor]:
        """Named tensors from one forward pass (module names, e.g. ``"conv2d_12"``), NCHW."""
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in self.tensor_names]
        if unknown:
            raise KeyError(f"{self.name}: no tensor named {unknown}; see sorted(module.tensor_names)")
        reference = self._reference_for(inputs, names)
        if reference is not None:
            return reference.run(inputs, names)
        values = self._run(inputs, keep=names)
        return {n: values[n] for n in names}

    def _reference_for(self, inputs, names) -> "LiteRTEngine | None":
        """The LiteRT engine if this pass may run there: no gradient wanted, no hooks, the file's weights."""
        reference = self.__dict__.get("_reference")
        # forward passes self.output_names itself, which LiteRT always keeps: no set to build
        if reference is None or (names is not self.output_names and not set(names) <= reference.available):
            return None
        if torch.is_grad_enabled() and (any(t.requires_grad for t in inputs)
                                        or any(p.requires_grad for p in self.parameters())):
            return None
        if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in inputs):
            return None
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
            return None
        if _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks:
            return None
        state = self.__dict__.get("_state")
        if state is None or not state.current():
            state = self.__dict__["_state"] = _WeightState(self)
        if state.hooked():
            return None  # a hook (probe, Grad-CAM) must see the pass
        return reference if state.unchanged(reference) else None

    def _run(self, inputs, keep):
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.name}: expected {len(self.input_names)} input(s), got {len(inputs)}")
        for tensor, shape in zip(inputs, self.input_shapes):
            if tensor.dim() != len(shape) or tuple(tensor.shape[1:]) != shape[1:]:
                raise ValueError(
                    f"{self.name}: input of shape {tuple(tensor.shape)} does not match the model's "
                    f"{('N',) + shape[1:]} (rank-4 inputs are NCHW)"
                )
        values = dict(zip(self.input_names, inputs))
        protected = set(self.output_names) | set(keep)
        for position, module in enumerate(self.ops.values()):
            out = module(*(values[n] for n in module.input_names))
            values[module.output_names[0]] = out
            for tensor in module.input_names:
                if self._last_use.get(tensor) == position and tensor not in protected:
                    values.pop(tensor, None)
        return values


def _to_module_layout(shape):
    shape = list(shape)
    return [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else shape


#: Parameters, buffers and submodules registered anywhere since import (a module's tensors may have been swapped).
_REGISTRATIONS = [0]
#: ``.data`` taken from a :class:`FileWeight` anywhere since import (a write PyTorch does not count may follow).
_DATA_TAKEN = [0]


def _count_registration(*args) -> None:
    _REGISTRATIONS[0] += 1


for _register in ("register_module_parameter_registration_hook", "register_module_buffer_registration_hook",
                  "register_module_module_registration_hook"):
    getattr(nn.modules.module, _register)(_count_registration)


class FileWeight(nn.Parameter):
    """A :class:`TFLiteModule` parameter: an ``nn.Parameter`` whose ``.data`` is watched.

    PyTorch counts every in-place write to a tensor in its version counter, except writes through
    ``.data`` (``w.data[0] = 0``, ``w.data.copy_(...)``): ``.data`` is a view with a counter of its
    own. The LiteRT engine must see such edits (it runs the file's weights), so taking or setting
    ``.data`` is counted here and makes the next pass compare the weights' values.
    """

    @property
    def data(self):
        _DATA_TAKEN[0] += 1
        return torch.Tensor.data.__get__(self)

    @data.setter
    def data(self, value):
        _DATA_TAKEN[0] += 1
        torch.Tensor.data.__set__(self, value)


def _weights_in_one_buffer(module: TFLiteModule) -> None:
    """Make the ops' float32 parameters and buffers views of one flat tensor (``module._weights``).

    Views share their base's version counter, so a write to any weight moves that one counter: the
    engine's per-pass check reads one number instead of one per tensor (see :class:`_WeightState`).
    Made outside inference mode even inside an inference region: weights made there could never
    take part in a gradient (saliency) and count no writes.
    """
    entries = [(op, name, tensor) for op in module.ops.values() for d in (op._parameters, op._buffers)
               for name, tensor in d.items() if tensor is not None and tensor.dtype == torch.float32]
    offset = 0
    with torch.inference_mode(False), torch.no_grad():
        flat = torch.empty(sum(t.numel() for _, _, t in entries))
        for op, name, tensor in entries:
            view = flat[offset:offset + tensor.numel()].view(tensor.shape).copy_(tensor)
            offset += tensor.numel()
            setattr(op, name, FileWeight(view, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else view)
    module.__dict__["_weights"] = flat


class _WeightState:
    """A module's parameters and buffers, to tell cheaply whether they still hold the file's weights.

    Each pass reads write counters and compares their values with the last seen; values are compared
    (a digest) only when something changed. A :class:`TFLiteModule`'s weights share one counter (views
    of ``module._weights``): one read, ~0.1 us. Otherwise (a deep copy, an unpickled module) every
    tensor's counter and data pointer are read (~10 us). Tensors swapped for others show up as a
    registration (:data:`_REGISTRATIONS`), ``.data`` taken from a weight as :data:`_DATA_TAKEN`: both
    make a new state. Writes from outside PyTorch (through a NumPy view of a weight) are not seen:
    run such experiments with ``module.use_engine("torch")``.
    """

    def __init__(self, module: TFLiteModule):
        self.registrations, self.data_taken = _REGISTRATIONS[0], _DATA_TAKEN[0]
        self.modules = [module, module.ops, *module.ops.values()]  # op modules hold their tensors directly
        self.tensors = [t for m in self.modules for d in (m._parameters, m._buffers) for t in d.values() if t is not None]
        self.hooks = [d for m in self.modules for d in (m._forward_hooks, m._forward_pre_hooks)]  # registering fills these
        self.untracked = any(t.is_inference() for t in self.tensors)
        self.shared = None if self.untracked else self._shared_counter(module.__dict__.get("_weights"))
        self.module, self.seen, self.differs = module, None, None
        self.no_hooks_at = None  # RemovableHandle.next_id when no hook was found

    def __deepcopy__(self, memo):
        return None  # a copy makes its own state on its first pass

    def current(self) -> bool:
        """Whether this state still describes the module's tensors (none swapped, no ``.data`` taken)."""
        return self.registrations == _REGISTRATIONS[0] and self.data_taken == _DATA_TAKEN[0]

    def _shared_counter(self, flat):
        """``flat`` if every tensor shares its version counter (a write to one moves it) and every
        parameter watches its ``.data``; else None. Tested by moving the counter."""
        if flat is None or flat.is_inference() or any(
                isinstance(t, nn.Parameter) and not isinstance(t, FileWeight) for t in self.tensors):
            return None
        before = list(map(_VERSION, self.tensors))
        torch.autograd.graph.increment_version(flat)
        return flat if [v - 1 for v in map(_VERSION, self.tensors)] == before else None

    def hooked(self) -> bool:
        """Whether a forward hook sits on the module or one of its ops. Every hook registration takes
        a number from torch's handle counter, so "none" stays true until that counter moves."""
        handles = RemovableHandle.next_id
        if handles == self.no_hooks_at:
            return False
        if any(self.hooks):
            self.no_hooks_at = None  # checked again at each pass until the hook is removed
            return True
        self.no_hooks_at = handles
        return False

    def unchanged(self, reference: "LiteRTEngine") -> bool:
        if self.untracked:  # inference tensors (made in inference_mode) count no writes: compare values
            return _state_digest(self.module) == reference.digest
        if self.shared is not None:
            versions = self.shared._version
        else:
            versions = (list(map(_VERSION, self.tensors)), list(map(torch.Tensor.data_ptr, self.tensors)))
        if versions == self.seen:
            return True
        if versions == self.differs:
            return False
        same = _state_digest(self.module) == reference.digest
        if same:
            self.seen = versions
        else:
            self.differs = versions
        return same


_VERSION = operator.attrgetter("_version")


# ----------------------------------------------------------------------------------------------
# The reference runtime as an engine
# ----------------------------------------------------------------------------------------------

#: Engines of a :class:`TFLiteModule`'s no-gradient passes (:meth:`TFLiteModule.use_engine`).
ENGINES = ("litert", "torch")
#: Overrides ``engine="auto"`` everywhere (``torch`` runs every pass in the port, to compare).
ENGINE_ENV = "AUTOPSY_TFLITE_ENGINE"


def litert_available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


class LiteRTEngine:
    """A module's own ``.tflite`` file in LiteRT (XNNPACK), behind the module's torch interface.

    Why: the port is a graph of ~200 small torch ops and spends most of its time between them;
    LiteRT runs the same file 5-10x faster on a CPU (``benchmarks/mediapipe_throughput.py``).
    The lab keeps one measured truth whichever engine computes it: the two agree to the parity
    tolerance of ``tests/test_tflite.py`` (``tests/test_engines_parity.py``), and only passes that
    need no gradient, see no hook and use the file's own weights come here (see
    :meth:`TFLiteModule._reference_for`); everything else runs the torch graph.

    Inputs and outputs keep the module's conventions (rank-4 tensors NCHW, a free batch axis).
    Batches run :attr:`CHUNK` images per invoke, the file adapted once per batch size where its
    graph pins the batch to 1 (:func:`_adapt`: BlazeFace's RESHAPEs, the blendshape model's extra
    token and last slice); the intermediate tensors named in ``outputs`` are appended to the
    subgraph's outputs, so LiteRT keeps them. Interpreters use :func:`autopsy.threads.current` threads.
    """

    KEEP = 4  # interpreters kept, one per batch size (a run uses one or two)
    #: Images per invoke. Larger batches spill a small CPU's caches: on 2 cores, chunks of 4 ran
    #: 1.0-1.2x LiteRT's own batch-16 (or 16-invoke) rate on every model, 16 at once 0.88-1.01x
    #: (``benchmarks/mediapipe_throughput.py`` records the result). XNNPACK computes each image alike
    #: in any batch, so the chunk size does not change outputs (tests/test_engines_parity.py).
    CHUNK = 4

    def __init__(self, module: TFLiteModule, source, *, outputs=()):
        data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
        spec, weights = read_tflite(data)
        state = module.ops.state_dict()
        different = sorted(k for k, v in weights.items() if k not in state or not torch.equal(state[k], torch.from_numpy(v)))
        if different or spec["ops"] != module.spec["ops"]:
            raise ValueError(f"{module.name}: the .tflite file given as the LiteRT engine's source is not this module's "
                             f"network ({'weights differ: ' + ', '.join(different[:5]) if different else 'other graph'})")
        self.data, self.name = data, module.name
        self.index = _tensor_indices(data)
        unknown = [n for n in outputs if n not in self.index]
        if unknown:
            raise KeyError(f"{module.name}: no tensor named {unknown} to add to LiteRT's outputs")
        self.extra = [n for n in dict.fromkeys(outputs) if n not in module.output_names]
        self.outputs = list(module.output_names)
        self.available = set(module.output_names) | set(self.extra)
        self.inputs = list(module.input_names)
        self.interpreters: dict[int, object] = {}
        self.digest = _state_digest(module)
        # tensors that lost the batch axis in the file, less those whose slice _adapt turns back
        restored = _restored_batch_outputs(data)
        self.batchless = {n for n in _batchless_tensors(module) if self.index.get(n) not in restored}

    def __deepcopy__(self, memo):
        return self  # a copy of the module shares the engine; its weights are checked at each pass

    def __getstate__(self):
        return {**self.__dict__, "interpreters": {}}  # interpreters cannot travel between processes

    def run(self, inputs, names) -> dict[str, torch.Tensor]:
        # Layout changes are NumPy views (a torch op costs ~1 us; between invokes, several percent).
        arrays = [(t.detach() if t.requires_grad else t).numpy() for t in inputs]
        arrays = [a.transpose(0, 2, 3, 1) if a.ndim == 4 else a for a in arrays]  # NCHW -> NHWC
        batch = len(arrays[0])
        chunks = [self._run_chunk([a[k:k + self.CHUNK] for a in arrays], names) for k in range(0, batch, self.CHUNK)]
        found = chunks[0] if len(chunks) == 1 else {n: np.concatenate([c[n] for c in chunks]) for n in names}
        # back to the module's layout: NCHW (channels-last in memory), a batch axis on every output
        return {n: torch.from_numpy(a.transpose(0, 3, 1, 2) if a.ndim == 4 else a) for n, a in found.items()}

    def _run_chunk(self, arrays, names) -> dict[str, np.ndarray]:
        runner = self._runner(len(arrays[0]))
        if runner is not None:
            return self._invoke(*runner, arrays, names)
        # this file cannot take the batch in one invoke: one image at a time, as LiteRT's users do
        parts = [self._invoke(*self._runner(1), [a[k:k + 1] for a in arrays], names) for k in range(len(arrays[0]))]
        return {n: np.concatenate([part[n] for part in parts]) for n in names}

    def _invoke(self, interpreter, input_indices, arrays, names) -> dict[str, np.ndarray]:
        for index, array in zip(input_indices, arrays):
            if array.flags.c_contiguous or array.ndim != 4:  # channels-last images and other tensors: a memcpy
                interpreter.set_tensor(index, np.ascontiguousarray(array))
            else:  # NCHW images: plane by plane into LiteRT's buffer (NumPy, single-threaded: torch's copy
                # wakes OpenMP workers that then spin beside XNNPACK's, 10-40% slower passes)
                buffer = interpreter.tensor(index)()
                try:
                    for c in range(array.shape[-1]):
                        buffer[..., c] = array[..., c]
                finally:
                    del buffer  # LiteRT's own memory: no reference may outlive this pass (nor an error)
        interpreter.invoke()
        found = {n: interpreter.get_tensor(self.index[n]) for n in names}  # copies: LiteRT reuses its buffers
        for name in self.batchless.intersection(names):  # the file dropped the batch axis; the port keeps it
            found[name] = found[name][None]
        return found

    def _runner(self, batch: int):
        """(interpreter, input tensor indices) for ``batch`` images in one invoke, or None where the file
        cannot be adapted to that batch (its graph pins the batch some other way)."""
        if batch not in self.interpreters:
            from ai_edge_litert.interpreter import Interpreter

            from autopsy.threads import current

            if len(self.interpreters) >= self.KEEP:
                self.interpreters.pop(next(iter(self.interpreters)))
            interpreter = Interpreter(model_content=_adapt(self.data, [self.index[n] for n in self.extra], batch),
                                      num_threads=current())
            inputs = interpreter.get_input_details()
            try:
                for detail in inputs:
                    if detail["shape"][0] != batch:
                        interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]], strict=False)
                interpreter.allocate_tensors()
                shapes_ok = all(interpreter.get_tensor(self.index[n]).shape[0] == batch and n not in self.batchless
                                for n in [*self.outputs, *self.extra])
            except (RuntimeError, ValueError):
                shapes_ok = False
            self.interpreters[batch] = (interpreter, [d["index"] for d in inputs]) if shapes_ok or batch == 1 else None
        return self.interpreters[batch]


def _batchless_tensors(module: TFLiteModule) -> set[str]:
    """Tensors that lost the batch axis in the file: downstream of a STRIDED_SLICE that shrinks axis 0
    (the blendshape model's output takes item 0 of its batch). The port keeps the axis; so must the engine."""
    lost: set[str] = set()
    for op in module.ops.values():
        shrinks_batch = isinstance(op, StridedSlice) and op.options["shrink_axis_mask"] & 1
        if shrinks_batch or any(name in lost for name in op.input_names):
            lost.update(op.output_names)
    return lost


def _tensor_indices(data: bytes) -> dict[str, int]:
    """Module tensor name (as :func:`read_tflite` names them) -> tensor index in the file."""
    model, _, _ = _open_model(data)
    graph = model.Subgraphs(0)
    names = _short_names([graph.Tensors(i).Name().decode("utf-8", "replace") for i in range(graph.TensorsLength())])
    return {name: i for i, name in enumerate(names)}


def _adapt(data: bytes, extra_outputs: list[int], batch: int) -> bytes:
    """The file made to take ``batch`` images in one invoke, keeping ``extra_outputs`` too.

    Where the graph pins the batch to 1, it is freed: RESHAPE targets that start with 1 start with
    ``batch``; batch-1 constants concatenated with the images (the blendshape model's extra token,
    through its DEQUANTIZE) are tiled ``batch`` times; a last STRIDED_SLICE that takes item 0 of the
    batch and drops the axis keeps the whole axis (the port's convention). ``extra_outputs`` are
    appended to the subgraph's outputs. Flatbuffer edits: int32s in place, and longer vectors
    written after the buffer's end with their field pointed there (offsets point forward, so
    appending keeps the file valid).
    """
    import struct

    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    in_place = [(position, batch) for position in _reshape_batch_entries(model, graph)]
    for options in _batch_slices(model, graph).values():  # keep the whole batch axis, as the port does
        in_place += [(options._tab.Pos + options._tab.Offset(6), options.EndMask() | 1),
                     (options._tab.Pos + options._tab.Offset(12), options.ShrinkAxisMask() & ~1)]
    vectors = []  # (field position, item count, packed items, alignment of the items)
    if batch > 1:
        for tensor, stored in _batch_one_constants(model, graph):
            shape = [batch, *(int(v) for v in tensor.ShapeAsNumpy()[1:])]
            if stored is not None:
                tiled = stored.DataAsNumpy().tobytes() * batch  # Buffer.data: a byte vector
                vectors.append((stored._tab.Pos + stored._tab.Offset(4), len(tiled), tiled, 16))
            vectors.append((tensor._tab.Pos + tensor._tab.Offset(4), len(shape), struct.pack(f"<{len(shape)}i", *shape), 4))
    if extra_outputs:
        outputs = [int(v) for v in graph.OutputsAsNumpy()] + list(extra_outputs)
        vectors.append((graph._tab.Pos + graph._tab.Offset(8), len(outputs), struct.pack(f"<{len(outputs)}i", *outputs), 4))

    buffer = bytearray(data)
    for position, value in in_place:
        struct.pack_into("<i", buffer, position, value)
    for field, count, items, align in vectors:
        buffer += bytes(-(len(buffer) + 4) % align)  # the items (after the 4-byte length) aligned
        vector = len(buffer)
        buffer += struct.pack("<I", count) + items
        struct.pack_into("<I", buffer, field, vector - field)
    return bytes(buffer)


def _operators(model, graph, opcode: str):
    """The subgraph's operators of one kind, in file order."""
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        if _opcode_name(model, op) == opcode:
            yield op


def _reshape_batch_entries(model, graph) -> list[int]:
    """Byte positions of the first int32 of every RESHAPE target (shape constant or ``new_shape``) that is 1."""
    import tflite

    positions = []
    for op in _operators(model, graph, "RESHAPE"):
        if op.InputsLength() > 1 and op.Inputs(1) >= 0:
            stored = model.Buffers(graph.Tensors(int(op.Inputs(1))).Buffer())
            if stored.DataLength() >= 4:
                positions.append(stored._tab.Vector(stored._tab.Offset(4)))  # Buffer.data
        table = op.BuiltinOptions()
        if table is not None:
            options = tflite.ReshapeOptions()
            options.Init(table.Bytes, table.Pos)
            if options.NewShapeLength():
                positions.append(options._tab.Vector(options._tab.Offset(4)))  # ReshapeOptions.new_shape
    return [p for p in positions if int.from_bytes(model._tab.Bytes[p:p + 4], "little", signed=True) == 1]


def _batch_one_constants(model, graph):
    """(tensor, its stored buffer or None) for each batch-1 constant that a CONCATENATION on another
    axis than the batch joins to tensors computed from the images; through a DEQUANTIZE both the
    float16 constant (with its data) and the DEQUANTIZE's output (shape only) are listed."""
    import tflite

    producers = {int(graph.Operators(k).Outputs(0)): graph.Operators(k) for k in range(graph.OperatorsLength())}

    def constant(index: int):
        """(tensor, stored buffer) behind ``index``: a constant itself, or a DEQUANTIZE of one; else None."""
        stored = model.Buffers(graph.Tensors(index).Buffer())
        if stored.DataLength():
            return [(graph.Tensors(index), stored)]
        producer = producers.get(index)
        if producer is not None and _opcode_name(model, producer) == "DEQUANTIZE":
            source = constant(int(producer.Inputs(0)))
            return source and [(graph.Tensors(index), None), *source]
        return None

    found = []
    for op in _operators(model, graph, "CONCATENATION"):
        options = tflite.ConcatenationOptions()
        options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        if options.Axis() % graph.Tensors(int(op.Outputs(0))).ShapeLength() == 0:
            continue  # joined along the batch: nothing to tile
        inputs = {int(v): constant(int(v)) for v in op.InputsAsNumpy()}
        if all(inputs.values()):
            continue  # constants only: the batch never reaches this op
        for index, tensors in inputs.items():
            shape = graph.Tensors(index).ShapeAsNumpy()
            if tensors and len(shape) >= 2 and shape[0] == 1:
                found += tensors
    return found


def _batch_slices(model, graph) -> dict:
    """Output tensor index -> options of each STRIDED_SLICE that takes item 0 of the batch and drops
    the axis (the blendshape model's last op) and whose output only leaves the graph, where the
    file stores the end-mask field that :func:`_adapt` sets to keep the whole axis."""
    import tflite

    read = {int(i) for k in range(graph.OperatorsLength()) for i in graph.Operators(k).InputsAsNumpy()}
    outputs = {int(i) for i in graph.OutputsAsNumpy()}
    found = {}
    for op in _operators(model, graph, "STRIDED_SLICE"):
        if op.BuiltinOptions() is None:
            continue
        options = tflite.StridedSliceOptions()
        options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        out = int(op.Outputs(0))
        if not options.ShrinkAxisMask() & 1 or out in read or out not in outputs or not options._tab.Offset(6):
            continue
        begin, strides = (model.Buffers(graph.Tensors(int(op.Inputs(i))).Buffer()) for i in (1, 3))
        if not (begin.DataLength() and strides.DataLength()):
            continue
        first_begin, first_stride = (int(b.DataAsNumpy()[:4].view("<i4")[0]) for b in (begin, strides))
        if (first_begin == 0 or options.BeginMask() & 1) and first_stride == 1:
            found[out] = options
    return found


def _restored_batch_outputs(data: bytes) -> set[int]:
    """Tensor indices whose batch axis :func:`_adapt` restores (see :func:`_batch_slices`)."""
    model, _, _ = _open_model(data)
    return set(_batch_slices(model, model.Subgraphs(0)))


def _state_digest(module: nn.Module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_tflite(source, *, name: str | None = None, engine: str = "torch") -> TFLiteModule:
    """Convert a ``.tflite`` file (path or bytes) into a :class:`TFLiteModule` with its weights.

    ``engine`` chooses what runs its no-gradient passes (:meth:`TFLiteModule.use_engine`): the
    converter's default is the torch graph itself; ``"auto"`` or ``"litert"`` runs the file in LiteRT.
    """
    spec, weights = read_tflite(source)
    display = name or (Path(source).stem if isinstance(source, (str, os.PathLike)) else "tflite")
    module = TFLiteModule(spec, name=display)
    state = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}
    missing, unexpected = module.ops.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.endswith("num_batches_tracked")]:
        raise TFLiteConversionError(f"{display}: weights do not fit the graph (missing {missing}, unexpected {unexpected})")
    module.__dict__["_source"] = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source)
    return module.use_engine(engine).eval()


def save_spec(spec: dict, path) -> None:
    """Write a spec as JSON, one op per line (diff-friendly)."""
    lines = ["{", f' "format": {json.dumps(spec["format"])},',
             f' "inputs": {json.dumps(spec["inputs"])},', f' "outputs": {json.dumps(spec["outputs"])},',
             ' "ops": [']
    lines += [("  " + json.dumps(op, separators=(",", ":")) + ",") for op in spec["ops"]]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" ]", "}"]
    Path(path).write_text("\n".join(lines) + "\n")


def load_spec(path) -> dict:
    return json.loads(Path(path).read_text())
