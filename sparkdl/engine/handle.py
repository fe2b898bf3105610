"""Models shipped to executors: ``.keras`` bytes in a broadcast, loaded once per worker."""
import hashlib
import os
import tempfile
import threading
from collections import OrderedDict

__all__ = ["ModelHandle", "modelToBytes", "modelFromBytes", "cachedHandle", "kerasModelBytes",
           "kerasFileFormat", "relaxBatchDimension"]


def modelToBytes(model):
    """Serialize a Keras model to Keras 3 ``.keras`` bytes."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def modelFromBytes(data, safeMode=True):
    """Load a Keras model from ``.keras`` bytes (``safe_mode`` as in ``keras.saving``)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        with open(path, "wb") as f:
            f.write(data)
        return keras.saving.load_model(path, compile=False, safe_mode=safeMode)


def relaxBatchDimension(model):
    """Run ``predict_on_batch`` on zero batches of 1 and 2 rows, so that Keras's predict
    function is traced once for every batch size.

    Keras traces it as a ``tf.function`` with ``reduce_retracing``: the first call traces for
    its exact batch size and the first call with another size traces again, generalized to
    any size. Without this, every worker paid that second trace (about 1 s for MobileNetV2)
    at its first short batch, e.g. a partition's last rows. Models whose inputs have unknown
    non-batch dimensions or non-numeric types are left alone.
    """
    import numpy as np

    try:
        specs = [(tuple(t.shape[1:]), np.dtype(t.dtype)) for t in model.inputs]
    except (AttributeError, TypeError, ValueError):
        return
    if not specs or any(None in shape for shape, _ in specs) \
            or any(dtype.kind not in "biuf" for _, dtype in specs):
        return
    for rows in (1, 2):
        batch = [np.zeros((rows,) + shape, dtype) for shape, dtype in specs]
        model.predict_on_batch(batch[0] if len(batch) == 1 else batch)


class ModelHandle:
    """A model serialized once on the driver and broadcast to the executors.

    Pickles small (the broadcast's id, the content hash), so it can sit in a UDF closure;
    :meth:`load` on an executor returns the worker's cached model, loading it on first use.

    :param data: the model's ``.keras`` bytes.
    :param safeMode: load with Keras ``safe_mode`` (refuses Lambda bytecode).
    """

    def __init__(self, data, safeMode=True):
        from pyspark import SparkContext

        self.key = hashlib.sha256(data).hexdigest()
        self.safeMode = bool(safeMode)
        self.size = len(data)
        self._broadcast = SparkContext.getOrCreate().broadcast(data)

    def load(self):
        """The loaded Keras model (on an executor: from this worker's cache)."""
        from sparkdl.engine import model_cache, runtime

        runtime.configure()

        def loadModel():
            model = modelFromBytes(self._broadcast.value, self.safeMode)
            relaxBatchDimension(model)
            return model

        return model_cache.get(self.key, loadModel)


_handles = OrderedDict()
_handlesLock = threading.Lock()
_MAX_HANDLES = 8


def cachedHandle(key, build, safeMode=True):
    """Driver-side: the handle for ``key``, built (``build() -> .keras bytes``) only once per
    SparkContext, so repeated ``transform`` calls neither rebuild nor rebroadcast a model."""
    from pyspark import SparkContext

    fullKey = (SparkContext.getOrCreate().applicationId, key)
    with _handlesLock:
        if fullKey in _handles:
            _handles.move_to_end(fullKey)
            return _handles[fullKey]
    handle = ModelHandle(build(), safeMode=safeMode)
    with _handlesLock:
        _handles[fullKey] = handle
        while len(_handles) > _MAX_HANDLES:
            _handles.popitem(last=False)
    return handle


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def kerasFileFormat(path):
    """``".keras"`` (a zip) or ``".h5"`` (HDF5) from the file's content, whatever its name
    (1.x-era HDF5 models often have none); None for anything else. HDF5 puts its signature
    at byte 0, or after a user block of 512, 1024, 2048... bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head == b"PK\x03\x04":
            return ".keras"
        offset = 0
        while True:
            f.seek(offset)
            block = f.read(len(_HDF5_SIGNATURE))
            if block == _HDF5_SIGNATURE:
                return ".h5"
            if len(block) < len(_HDF5_SIGNATURE) or offset >= 1 << 20:
                return None
            offset = 512 if offset == 0 else offset * 2


def kerasModelBytes(source, safeMode=True):
    """A Keras model, or the path of a ``.keras`` / legacy ``.h5`` file on the driver, as
    ``.keras`` bytes, checked by loading it as executors will (``safe_mode=safeMode``). A file
    is recognised by its content (zip or HDF5), not its name.

    :raises FileNotFoundError: the path does not exist (the message names it).
    :raises ValueError: the file cannot be loaded; for a Lambda layer holding Python bytecode
        under ``safeMode=True``, the message says how to opt in.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if isinstance(source, keras.Model):
        return modelToBytes(source)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"modelFile {path!r} does not exist on the driver")
    kind = None if os.path.isdir(path) else kerasFileFormat(path)
    if kind is None:
        raise ValueError(f"modelFile {path!r} must be a Keras .keras file (a zip) or legacy "
                         ".h5 file (HDF5); its content is neither")
    try:
        with tempfile.TemporaryDirectory() as d:
            loadable = path
            if not path.endswith((kind, ".hdf5") if kind == ".h5" else kind):
                # Keras picks the format by extension: give it a name that says the content
                loadable = os.path.join(d, "model" + kind)
                os.symlink(os.path.abspath(path), loadable)
            model = keras.saving.load_model(loadable, compile=False, safe_mode=bool(safeMode))
    except ValueError as e:
        if safeMode and "safe_mode" in str(e):
            raise ValueError(
                f"modelFile {path!r} holds Python bytecode (e.g. a Lambda layer), which Keras "
                "refuses to load with safe_mode=True. If you trust this file, set the stage's "
                f"safeMode param to False. Keras said: {e}") from e
        raise ValueError(f"modelFile {path!r} could not be loaded by Keras: {e}") from e
    if kind == ".keras":
        with open(path, "rb") as f:
            return f.read()
    return modelToBytes(model)  # legacy .h5 -> .keras, the one format executors load
