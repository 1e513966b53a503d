"""The .vxm reader on the real fastgaze.vxm (from the mirror) and on damaged copies of it."""

import struct

import numpy as np
import pytest
import torch

from autopsy.assets import fetch
from autopsy.models.vxm import (
    MAGIC,
    GaussianBlur,
    VxmFormatError,
    build_network,
    layer_specs,
    load_vxm,
    load_weights,
    read_vxm,
)
from incidents.twitter_crop.model import FASTGAZE, FASTGAZE_LAYERS


@pytest.fixture(scope="module")
def vxm_path(mirror):
    return fetch(FASTGAZE)


@pytest.fixture(scope="module")
def entries(vxm_path):
    return read_vxm(vxm_path)


def test_reads_real_file(entries):
    assert len(entries) == 239
    assert entries["layerCount"] == 19
    assert entries["0w"].shape == (43, 3, 3, 3) and entries["0w"].dtype == np.float32
    assert entries["17w"].shape == (1, 2, 1, 1)
    assert entries["14alpha"].shape == (1,)
    assert entries["18KernelSize"] == 19 and entries["18Std"] == 3
    specs = layer_specs(entries)
    assert len(specs) == 19
    assert tuple(specs) == FASTGAZE_LAYERS


def test_network_names_and_weights(vxm_path, entries):
    net = load_vxm(vxm_path)
    names = dict(net.layers.named_children())
    for name in ("conv0", "relu0", "pool2", "pool11", "conv14", "prelu14", "conv17", "blur18"):
        assert name in names
    assert net.stride == 16
    assert isinstance(names["blur18"], torch.nn.Identity)  # read, never applied, as in Twitter's binary
    assert names["pool2"].ceil_mode and names["pool2"].kernel_size == 2
    assert torch.equal(net.layers.conv9.weight, torch.from_numpy(entries["9w"]))
    assert torch.equal(net.layers.prelu16.weight, torch.from_numpy(entries["16alpha"]))


def _entries_bytes(data: bytes):
    """(key, value offset, value length) for every entry of a .vxm byte string."""
    out, pos = [], 8
    for _ in range(struct.unpack_from("<I", data, 4)[0]):
        (kl,) = struct.unpack_from("<I", data, pos)
        key = data[pos + 4 : pos + 4 + kl - 1].decode()
        pos += 4 + kl
        (vl,) = struct.unpack_from("<I", data, pos)
        out.append((key, pos + 4, vl))
        pos += 4 + vl
    return out


def _write(tmp_path, data, name="bad.vxm"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def raw(vxm_path):
    return vxm_path.read_bytes()


def test_truncated_file(raw, tmp_path):
    path = _write(tmp_path, raw[: len(raw) // 2])
    with pytest.raises(VxmFormatError, match=r"bad\.vxm.*offset \d+.*truncated"):
        read_vxm(path)


def test_bad_magic(raw, tmp_path):
    with pytest.raises(VxmFormatError, match="bad magic"):
        read_vxm(_write(tmp_path, b"XXXX" + raw[4:]))


def test_wrong_entry_count(raw, tmp_path):
    more = MAGIC + struct.pack("<I", 240) + raw[8:]
    with pytest.raises(VxmFormatError, match="truncated"):
        read_vxm(_write(tmp_path, more))
    fewer = MAGIC + struct.pack("<I", 238) + raw[8:]
    with pytest.raises(VxmFormatError, match="trailing bytes"):
        read_vxm(_write(tmp_path, fewer))


def test_shape_size_mismatch(raw, tmp_path):
    data = bytearray(raw)
    byte_entries = {e[0]: e for e in _entries_bytes(raw)}
    struct.pack_into("<i", data, byte_entries["0w.shape"][1], 44)  # 44x3x3x3 declared, 43x3x3x3 stored
    with pytest.raises(VxmFormatError, match=r"'0w': shape list \(43, 3, 3, 3\) disagrees"):
        read_vxm(_write(tmp_path, bytes(data)))
    struct.pack_into("<i", data, byte_entries["0w.shape[0]"][1], 44)  # now consistent metadata, wrong size
    with pytest.raises(VxmFormatError, match=r"'0w' has 4644 bytes but shape \(44, 3, 3, 3\).*needs 4752"):
        read_vxm(_write(tmp_path, bytes(data)))


def test_bad_dtype_and_layer_count(raw, tmp_path):
    data = bytearray(raw)
    _, offset, _ = next(e for e in _entries_bytes(raw) if e[0] == "0w.dtype")
    data[offset : offset + 7] = b"float16"
    with pytest.raises(VxmFormatError, match="unsupported dtype 'float16'"):
        read_vxm(_write(tmp_path, bytes(data)))
    data = bytearray(raw)
    _, offset, _ = next(e for e in _entries_bytes(raw) if e[0] == "layerCount")
    struct.pack_into("<i", data, offset, 20)
    with pytest.raises(VxmFormatError, match="layer 19 of 20"):
        read_vxm(_write(tmp_path, bytes(data)))


def test_missing_layer_key(raw, tmp_path):
    data = bytearray(raw)
    _, offset, _ = next(e for e in _entries_bytes(raw) if e[0] == "5Pool")
    # rename the key "5Pool" to "5Poox": layer 5 then lacks its pool size
    key_at = raw.index(b"5Pool\x00")
    data[key_at : key_at + 5] = b"5Poox"
    with pytest.raises(VxmFormatError, match=r"layer 5 \(max pooling\) lacks \['5Pool'\]"):
        read_vxm(_write(tmp_path, bytes(data)))


def test_architecture_mismatch_refused(entries):
    net = build_network(list(FASTGAZE_LAYERS[:-1]))
    with pytest.raises(VxmFormatError, match="architecture does not match"):
        load_weights(net, entries)


def test_blur_keeps_size_and_mass():
    blur = GaussianBlur(19, 3.0, "replicate")
    x = torch.ones(2, 3, 7, 12)
    y = blur(x)
    assert y.shape == x.shape
    assert torch.allclose(y, x, atol=1e-5)  # replicate padding leaves a constant map unchanged
    assert torch.allclose(blur.kernel.sum(), torch.tensor(1.0))


def test_binary_defaults_and_ablations(entries):
    """Pooling rounds up (NNPACK) and the blur is off unless asked for; bad options are refused."""
    specs = layer_specs(entries)
    x = torch.randn(1, 3, 50, 37)
    binary = build_network(specs).eval()
    assert binary(x).shape == (1, 1, 4, 3) and binary.output_size(50, 37) == (4, 3)
    floor = build_network(specs, ceil_mode=False).eval()
    assert floor(x).shape == (1, 1, 3, 2) and floor.output_size(50, 37) == (3, 2)
    blurred = build_network(specs, blur="replicate")
    assert isinstance(blurred.layers.blur18, GaussianBlur) and blurred.layers.blur18.padding_mode == "replicate"
    with pytest.raises(ValueError, match="blur must be one of"):
        build_network(specs, blur="gaussian")
