"""Read a PyTorch state dict into NumPy arrays without importing torch.

Checkpoints are pickles, so they are treated as untrusted input: the unpickler resolves only
``collections.OrderedDict``, the two ``torch._utils`` tensor-rebuild functions (replaced by
NumPy equivalents) and the ``torch.*Storage`` type tags; every other global is refused.
Both PyTorch's legacy (non-zip) format and the zip format of ``torch.save`` are read.

Every allocation is bounded by the file's size: a storage, a zip member or a tensor that
claims more bytes than the whole file holds is refused before anything is read or built, and
all tensors together may take at most twice the file (identical views are built once).
"""
import collections
import functools
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

# Tensors of more dimensions than NumPy allows are refused outright.
_MAX_DIMS = 32

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


class _Limit:
    """The file's size: what no storage, zip member or tensor may exceed."""

    def __init__(self, path, nbytes):
        self.path, self.nbytes = path, nbytes

    def check(self, nbytes, what):
        if nbytes > self.nbytes:
            raise ValueError(f"{self.path}: {what} would take {nbytes} bytes, more than the "
                             f"whole checkpoint file ({self.nbytes} bytes); the file is "
                             "corrupt or malicious")


class _TensorSpec:
    """What ``torch._utils._rebuild_tensor_v2`` was asked to build, materialised later."""

    def __init__(self, limit, storage, storage_offset, size, stride):
        if not isinstance(storage, (_Storage, _StorageView)):
            raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
        self.storage = storage
        self.offset = _nonneg_int(storage_offset, "storage offset")
        if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)) or \
                len(size) > _MAX_DIMS:
            raise pickle.UnpicklingError(f"bad tensor shape {size!r:.80}")
        self.size = tuple(_nonneg_int(s, "size") for s in size)
        self.stride = tuple(_nonneg_int(s, "stride") for s in stride)
        if len(self.size) != len(self.stride):
            raise pickle.UnpicklingError(
                f"size {self.size} and stride {self.stride} differ in rank")
        self.nbytes = storage.dtype.itemsize
        for n in self.size:
            self.nbytes *= n
        limit.check(self.nbytes, f"a tensor of shape {self.size}")
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


def _rebuild_tensor_v2(limit, storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorSpec(limit, storage, storage_offset, size, stride)


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


class _RestrictedUnpickler(pickle._Unpickler):
    """Resolves only the globals a state dict needs; storages come from ``storage_for``.

    The pure-Python unpickler, because the C one allocates what a length opcode claims
    (``BINBYTES8`` of 4 TiB) before reading it; this one reads it through the file, which
    refuses reads past its end (:class:`_BoundedReader`).
    """

    def __init__(self, file, storage_for=None, limit=None):
        super().__init__(file)
        self._storage_for = storage_for
        self._limit = limit

    def find_class(self, module, name):
        try:
            found = _ALLOWED_GLOBALS[(module, name)]
            if found is _rebuild_tensor_v2:
                return functools.partial(_rebuild_tensor_v2, self._limit)
            return found
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


class _BoundedReader:
    """A file that refuses to read past its end, so that a pickle opcode claiming a huge
    length fails as truncated instead of allocating that length."""

    def __init__(self, f, size):
        self._f, self._size = f, size

    def _left(self):
        return max(0, self._size - self._f.tell())

    def read(self, n=-1):
        left = self._left()
        if n is None or n < 0:
            n = left
        elif n > left and left > 0:
            raise pickle.UnpicklingError(f"pickle data was truncated: {n} bytes wanted, "
                                         f"{left} left in the file")
        return self._f.read(min(n, left))

    def readline(self, n=-1):
        left = self._left()
        return self._f.readline(left if n is None or n < 0 else min(n, left))

    def tell(self):
        return self._f.tell()


def _load_legacy(f, limit):
    """torch's legacy format: magic, protocol, sys_info, main pickle, storage keys, storages."""
    f = _BoundedReader(f, limit.nbytes)
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
            numel = _nonneg_int(numel, "storage size")
            limit.check(numel * dtype.itemsize, f"storage {key} of {numel} elements")
            storages[key] = _Storage(dtype, key, numel)
        base = storages[key]
        if view is None:
            return base
        _view_key, offset, view_numel = view
        if _nonneg_int(offset, "view offset") + _nonneg_int(view_numel, "view size") > base.numel:
            raise pickle.UnpicklingError("storage view reaches past its storage")
        return _StorageView(base, offset, view_numel)

    result = _RestrictedUnpickler(f, storage_for, limit).load()
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
        if nbytes > limit.nbytes - f.tell():
            raise ValueError(f"checkpoint truncated inside storage {key}")
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise ValueError(f"checkpoint truncated inside storage {key}")
        storage.array = np.frombuffer(data, dtype=storage.dtype)
    return result


def _load_zip(path, limit):
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
                limit.check(storage.numel * dtype.itemsize,
                            f"storage {key} of {storage.numel} elements")
                try:
                    info = zf.getinfo(f"{prefix}data/{key}")
                except KeyError:
                    raise ValueError(f"{path}: storage {key} missing") from None
                if info.file_size != storage.numel * dtype.itemsize:
                    raise ValueError(f"{path}: storage {key} has {info.file_size} bytes, "
                                     f"expected {storage.numel} x {dtype.itemsize}")
                raw = zf.read(info)
                storage.array = np.frombuffer(raw, dtype=dtype)
                storages[key] = storage
            return storages[key]

        limit.check(zf.getinfo(pkl[0]).file_size, pkl[0])
        with zf.open(pkl[0]) as f:
            data = f.read()
        return _RestrictedUnpickler(_BoundedReader(io.BytesIO(data), len(data)), storage_for,
                                    limit).load()


def _flatten(obj, limit):
    """The checkpoint's tensors as ``{name: ndarray}``; accepts ``{"state_dict": {...}}`` too."""
    if isinstance(obj, dict) and not all(isinstance(v, _TensorSpec) for v in obj.values()):
        inner = obj.get("state_dict")
        if isinstance(inner, dict):
            return _flatten(inner, limit)
        raise ValueError("checkpoint is not a flat state dict of tensors")
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    # Views sharing memory (tied weights, expanded buffers) could otherwise multiply the file:
    # identical views are built once, and all of them together get twice the file's size.
    built, total = {}, 0
    for spec in obj.values():
        key = (id(spec.storage), spec.offset, spec.size, spec.stride)
        if key not in built:
            total += spec.nbytes
            built[key] = None
    _Limit(limit.path, 2 * limit.nbytes).check(total, f"the {len(obj)} tensors together")
    out = {}
    for k, spec in obj.items():
        key = (id(spec.storage), spec.offset, spec.size, spec.stride)
        if built[key] is None:
            built[key] = spec.materialise()
        out[str(k)] = built[key]
    return out


def load_state_dict(path):
    """Loads a PyTorch ``state_dict`` checkpoint as NumPy arrays, without torch.

    The file is unpickled with a restricted unpickler that refuses every global except those a
    plain state dict needs, so a malicious checkpoint raises ``pickle.UnpicklingError`` instead
    of running code; one that claims more data than the file holds (a huge storage, a huge
    tensor over a tiny storage through zero strides) raises ``ValueError`` before allocating.

    Args:
        path: path of a ``.pth``/``.pt`` file written by ``torch.save(model.state_dict(), ...)``,
            in either the legacy (non-zip) format or the zip format.

    Returns:
        dict mapping each parameter/buffer name to a NumPy array with the tensor's shape and
        dtype, in the checkpoint's order.
    """
    path = os.fspath(path)
    limit = _Limit(path, os.path.getsize(path))
    if zipfile.is_zipfile(path):
        return _flatten(_load_zip(path, limit), limit)
    with open(path, "rb") as f:
        return _flatten(_load_legacy(f, limit), limit)
