"""Read a PyTorch state dict into NumPy arrays without importing torch.

Checkpoints are pickles, so they are treated as untrusted input: the unpickler resolves only
``collections.OrderedDict``, the two ``torch._utils`` tensor-rebuild functions (replaced by
NumPy equivalents) and the ``torch.*Storage`` type tags; every other global is refused.
Both PyTorch's legacy (non-zip) format and the zip format of ``torch.save`` are read.
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

__all__ = ["load_state_dict"]

# torch/serialization.py: MAGIC_NUMBER and PROTOCOL_VERSION of the legacy format.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for a ``torch.<Name>Storage`` class: a dtype tag, deliberately not callable."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A storage named by a persistent id; its bytes are attached once they have been read."""

    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel
        self.array = None  # 1-D np.ndarray of `numel` elements once read


class _StorageView:
    """Legacy storage view: ``numel`` elements of ``base`` starting at element ``offset``."""

    def __init__(self, base, offset, numel):
        self.base, self.offset, self.numel = base, offset, numel
        self.dtype = base.dtype

    @property
    def array(self):
        return self.base.array[self.offset:self.offset + self.numel]


class _TensorSpec:
    """What ``torch._utils._rebuild_tensor_v2`` was asked to build, materialised later."""

    def __init__(self, storage, storage_offset, size, stride):
        if not isinstance(storage, (_Storage, _StorageView)):
            raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
        self.storage = storage
        self.offset = _nonneg_int(storage_offset, "storage offset")
        self.size = tuple(_nonneg_int(s, "size") for s in size)
        self.stride = tuple(_nonneg_int(s, "stride") for s in stride)
        if len(self.size) != len(self.stride):
            raise pickle.UnpicklingError(
                f"size {self.size} and stride {self.stride} differ in rank")
        if all(self.size):  # bounds check: as_strided must never read outside the storage
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if last >= storage.numel:
                raise pickle.UnpicklingError(
                    f"tensor of size {self.size}, stride {self.stride}, offset {self.offset} "
                    f"reaches past its storage of {storage.numel} elements"
                )

    def materialise(self):
        data = self.storage.array
        if not all(self.size):
            return np.zeros(self.size, dtype=data.dtype)
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:],
            shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)


def _nonneg_int(value, what):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise pickle.UnpicklingError(f"bad tensor {what}: {value!r}")
    return value


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorSpec(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorSpec):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a state dict needs; storages come from ``storage_for``."""

    def __init__(self, file, storage_for=None):
        super().__init__(file)
        self._storage_for = storage_for

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from an untrusted checkpoint"
            ) from None

    def persistent_load(self, pid):
        if self._storage_for is None:
            raise pickle.UnpicklingError("unexpected persistent id in a header pickle")
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        return self._storage_for(pid[1:])


def _storage_type(tag):
    if not isinstance(tag, _StorageType):
        raise pickle.UnpicklingError(f"unsupported storage type {tag!r:.80}")
    return tag.dtype


def _load_legacy(f):
    """torch's legacy format: magic, protocol, sys_info, main pickle, storage keys, storages."""
    header = _RestrictedUnpickler(f)
    if header.load() != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint (bad magic number)")
    protocol = _RestrictedUnpickler(f).load()
    if protocol != _LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy PyTorch checkpoint protocol {protocol!r}")
    sys_info = _RestrictedUnpickler(f).load()
    byteorder = "<" if sys_info.get("little_endian", True) else ">"

    storages = {}

    def storage_for(data):
        # (storage_type, root_key, location, numel, view_metadata)
        if len(data) != 5:
            raise pickle.UnpicklingError("malformed legacy storage record")
        tag, key, _location, numel, view = data
        dtype = _storage_type(tag).newbyteorder(byteorder)
        key = str(key)
        if key not in storages:
            storages[key] = _Storage(dtype, key, _nonneg_int(numel, "storage size"))
        base = storages[key]
        if view is None:
            return base
        _view_key, offset, view_numel = view
        if _nonneg_int(offset, "view offset") + _nonneg_int(view_numel, "view size") > base.numel:
            raise pickle.UnpicklingError("storage view reaches past its storage")
        return _StorageView(base, offset, view_numel)

    result = _RestrictedUnpickler(f, storage_for).load()
    keys = _RestrictedUnpickler(f).load()
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise ValueError("storage key list does not match the storages the checkpoint uses")
    for key in map(str, keys):
        storage = storages[key]
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"checkpoint truncated before storage {key}")
        (numel,) = struct.unpack(byteorder + "q", raw)
        if numel != storage.numel:
            raise ValueError(f"storage {key} holds {numel} elements, expected {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise ValueError(f"checkpoint truncated inside storage {key}")
        storage.array = np.frombuffer(data, dtype=storage.dtype)
    return result


def _load_zip(path):
    """torch.save's zip format: ``<dir>/data.pkl`` plus one ``<dir>/data/<key>`` per storage."""
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError(f"{path}: zip file is not a PyTorch checkpoint (no data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in zf.namelist():
            byteorder = "<" if zf.read(prefix + "byteorder").strip() == b"little" else ">"
        storages = {}

        def storage_for(data):
            # (storage_type, key, location, numel)
            if len(data) != 4:
                raise pickle.UnpicklingError("malformed storage record")
            tag, key, _location, numel = data
            key = str(key)
            if key not in storages:
                dtype = _storage_type(tag).newbyteorder(byteorder)
                storage = _Storage(dtype, key, _nonneg_int(numel, "storage size"))
                try:
                    raw = zf.read(f"{prefix}data/{key}")
                except KeyError:
                    raise ValueError(f"{path}: storage {key} missing") from None
                if len(raw) != storage.numel * dtype.itemsize:
                    raise ValueError(f"{path}: storage {key} has {len(raw)} bytes, "
                                     f"expected {storage.numel} x {dtype.itemsize}")
                storage.array = np.frombuffer(raw, dtype=dtype)
                storages[key] = storage
            return storages[key]

        with zf.open(pkl[0]) as f:
            return _RestrictedUnpickler(io.BytesIO(f.read()), storage_for).load()


def _flatten(obj):
    """The checkpoint's tensors as ``{name: ndarray}``; accepts ``{"state_dict": {...}}`` too."""
    if isinstance(obj, dict) and not all(isinstance(v, _TensorSpec) for v in obj.values()):
        inner = obj.get("state_dict")
        if isinstance(inner, dict):
            return _flatten(inner)
        raise ValueError("checkpoint is not a flat state dict of tensors")
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    return {str(k): v.materialise() for k, v in obj.items()}


def load_state_dict(path):
    """Loads a PyTorch ``state_dict`` checkpoint as NumPy arrays, without torch.

    The file is unpickled with a restricted unpickler that refuses every global except those a
    plain state dict needs, so a malicious checkpoint raises ``pickle.UnpicklingError`` instead
    of running code.

    Args:
        path: path of a ``.pth``/``.pt`` file written by ``torch.save(model.state_dict(), ...)``,
            in either the legacy (non-zip) format or the zip format.

    Returns:
        dict mapping each parameter/buffer name to a NumPy array with the tensor's shape and
        dtype, in the checkpoint's order.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        return _flatten(_load_zip(path))
    with open(path, "rb") as f:
        return _flatten(_load_legacy(f))
