"""The engine's one model-shipping layer: a model source -> its content key -> a handle -> the
worker's cached model.

1. A **source** says what to ship: :func:`kerasFile` (a ``.keras`` / legacy ``.h5`` path on
   the driver), :func:`kerasBytes` (``.keras`` bytes, e.g. carried by a saved stage),
   :func:`kerasObject` (an in-memory ``keras.Model``), :func:`registryModel` (a registry name
   + weights) or :func:`savedModel` (a :class:`sparkdl.graph.input.TFInputGraph` signature).
   Its ``key`` names its content (a file by path, mtime, size and ``safeMode``; bytes by
   their hash), so a source is read on the driver only when its key is new.
2. :func:`handleFor` turns a source into a **handle**, once per key and Spark application:
   the model's bytes are shipped once (a broadcast on a classic session, a session artifact
   on Spark Connect; the one place that knows how is
   :func:`_ship`) and the handle, which pickles small, goes into the UDF's closure. One LRU of
   handles on the driver (:data:`MAX_HANDLES`).
3. On an executor, :meth:`Handle.load` returns the worker's cached :class:`LoadedModel`
   (:mod:`sparkdl.engine.model_cache`, one LRU per Python worker, keyed by content hash and
   the task's device, :func:`sparkdl.engine.runtime.taskDevice`), loading it on first use
   after :func:`sparkdl.engine.runtime.configure`. Every UDF builder
   calls ``loaded.predict(batch)``: the one place where a model runs.

On the driver, :meth:`Handle.inspect` reads the loaded model once per handle (e.g. its
signature), and :meth:`Handle.data` returns the shipped bytes (e.g. for training). The layer
takes the caller's ``SparkSession`` (a stage's ``dataset.sparkSession``, a registrar's active
session) and needs no ``SparkContext`` outside :func:`_ship` and :func:`_sessionKey`, and
none at all on Spark Connect, where models travel as session artifacts (:class:`_SessionFile`).

Keras files and bytes load with ``safe_mode=safeMode``; a refusal becomes one message
(:func:`safeModeRefusal`) that says how the caller opts in (``advice``).
"""
import copy
import hashlib
import os
import tempfile
import threading
from collections import OrderedDict

from sparkdl.utils.session import is_connect

__all__ = [
    "Source",
    "kerasFile",
    "kerasBytes",
    "kerasObject",
    "registryModel",
    "savedModel",
    "handleFor",
    "Handle",
    "LoadedModel",
    "MAX_HANDLES",
    "STAGE_ADVICE",
    "safeModeRefusal",
    "modelToBytes",
    "modelFromBytes",
    "kerasModelBytes",
    "kerasFileFormat",
    "relaxBatchDimension",
]

#: How a stage's user opts in to a model holding Python bytecode.
STAGE_ADVICE = "set the stage's safeMode param to False"


def safeModeRefusal(what, advice, error):
    """The one message for a model that Keras refused to load under ``safe_mode=True``."""
    return ValueError(
        f"{what} holds Python bytecode (e.g. a Lambda layer), which Keras refuses to load with "
        f"safe_mode=True. If you trust it, {advice}. Keras said: {error}")


def _isSafeModeRefusal(error):
    return isinstance(error, ValueError) and "safe_mode" in str(error)


# -- Keras models as bytes -------------------------------------------------------------------

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


def kerasModelBytes(path, safeMode=True, advice=STAGE_ADVICE):
    """The ``.keras`` bytes of a ``.keras`` / legacy ``.h5`` file on the driver, checked by
    loading it as executors will (``safe_mode=safeMode``). A file is recognised by its content
    (zip or HDF5), not its name.

    :raises FileNotFoundError: the path does not exist (the message names it).
    :raises ValueError: the file cannot be loaded; for a Lambda layer holding Python bytecode
        under ``safeMode=True``, the message ends with ``advice``.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    path = os.fspath(path)
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
        if safeMode and _isSafeModeRefusal(e):
            raise safeModeRefusal(f"modelFile {path!r}", advice, e) from e
        raise ValueError(f"modelFile {path!r} could not be loaded by Keras: {e}") from e
    if kind == ".keras":
        with open(path, "rb") as f:
            return f.read()
    return modelToBytes(model)  # legacy .h5 -> .keras, the one format executors load


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


# -- loaded models ---------------------------------------------------------------------------

class LoadedModel:
    """A model loaded in a worker: :meth:`predict` is where the engine runs every model.

    :param model: a :class:`sparkdl.engine.runtimes.Predictor` of a Keras model on its runtime
        (``kind="keras"``) or a SavedModel signature (``kind="savedmodel"``, see
        :func:`sparkdl.engine.savedmodel.loadSignature`).
    :param device: the device the engine chose for the task that loaded it
        (:func:`sparkdl.engine.runtime.taskDevice`: ``"/GPU:<i>"``, ``"/CPU:0"``, or None
        outside a Spark task); TensorFlow models load and run there.
    :ivar runtime: what runs it: ``"tensorflow"``, ``"openvino"`` or ``"litert"``.
    :ivar device: as the parameter.
    :ivar tfDevice: where TensorFlow runs it: ``device``, or ``"/CPU:0"`` when TensorFlow
        here lacks that GPU (:func:`sparkdl.engine.runtime.tfDevice`); None for the CPU-only
        runtimes.
    """

    def __init__(self, model, kind="keras", device=None, tfDevice=None):
        self.model = model
        self.kind = kind
        self.runtime = getattr(model, "runtime", "tensorflow")
        self.precision = getattr(model, "precision", "fp32")
        self.device = device
        self.tfDevice = tfDevice if self.runtime == "tensorflow" else None

    def predict(self, batch):
        """The model's outputs for one batch: a Keras model takes an array (or a list, one per
        input) and returns an array; a signature takes and returns ``{name: array}``."""
        from sparkdl.engine.runtime import deviceScope

        with deviceScope(self.tfDevice):
            return self.model(batch) if self.kind == "savedmodel" \
                else self.model.predict(batch)


# -- sources ---------------------------------------------------------------------------------

class Source:
    """What to ship: ``key`` names the content, ``build()`` returns its bytes (run once per
    key on the driver), ``kind`` is ``"keras"`` or ``"savedmodel"``.

    :param what: how messages name the model (e.g. ``"modelFile '/m.keras'"``).
    """

    def __init__(self, kind, key, build, safeMode=True, what="the model", **options):
        self.kind = kind
        self.key = key
        self.build = build
        self.safeMode = bool(safeMode)
        self.what = what
        self.options = options


def kerasFile(path, safeMode=True, advice=STAGE_ADVICE):
    """A ``.keras`` / legacy ``.h5`` file on the driver (read and checked when first shipped,
    again when it changes)."""
    path = os.fspath(path)
    stat = os.stat(path) if os.path.exists(path) else None
    key = ("keras-file", os.path.abspath(path), stat and stat.st_mtime_ns, stat and stat.st_size,
           bool(safeMode))
    return Source("keras", key, lambda: kerasModelBytes(path, safeMode, advice), safeMode,
                  what=f"modelFile {path!r}")


def kerasBytes(data, safeMode=True, what="the model"):
    """``.keras`` bytes (e.g. those a saved stage carries)."""
    data = bytes(data)
    key = ("keras-bytes", hashlib.sha256(data).hexdigest(), bool(safeMode))
    return Source("keras", key, lambda: data, safeMode, what=what)


def kerasObject(model, safeMode=True):
    """An in-memory ``keras.Model`` (serialized now)."""
    return kerasBytes(modelToBytes(model), safeMode)


def registryModel(entry, weights, includeTop, pooling):
    """A model of sparkdl's registry (:mod:`sparkdl.models.registry`), built on the driver;
    ``weights=None`` is a seeded random init, so a saved stage reproduces its outputs."""
    def build():
        from sparkdl.models.registry import buildModel

        if weights is None:
            import keras

            keras.utils.set_random_seed(0)
        return modelToBytes(buildModel(entry, weights=weights, include_top=includeTop,
                                       pooling=pooling))

    return Source("keras", ("registry", entry.name, weights, includeTop, pooling), build,
                  what=f"model {entry.name!r}")


def savedModel(graph):
    """A :class:`sparkdl.graph.input.TFInputGraph`: its SavedModel zip and signature."""
    return Source("savedmodel", ("savedmodel", graph.key, graph.signatureDefKey, graph.tags),
                  lambda: bytes(graph), what=f"signature {graph.signatureDefKey!r}",
                  signatureDefKey=graph.signatureDefKey, tags=graph.tags)


# -- handles ---------------------------------------------------------------------------------

class Handle:
    """A model shipped once from the driver. Pickles small (the shipped data's reference and
    the key), so it can sit in a UDF closure.

    :ivar key: the worker cache's key: the content hash (and, for a SavedModel, the signature
        and tags).
    :ivar size: bytes shipped.
    """

    def __init__(self, source, data, shipped):
        self.kind = source.kind
        self.safeMode = source.safeMode
        self.what = source.what
        self.options = dict(source.options)
        digest = hashlib.sha256(data).hexdigest()
        if self.kind == "savedmodel":
            tags = ",".join(self.options.get("tags") or ())
            self.key = f"savedmodel:{digest}:{self.options['signatureDefKey']}:{tags}"
        else:
            self.key = digest
        self.size = len(data)
        self._shipped = shipped
        self._inspected = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_inspected"] = {}  # driver-side memo, not shipped
        return state

    def data(self):
        """The shipped bytes (``.keras`` bytes or the SavedModel zip), on the driver or an
        executor."""
        return self._shipped.value

    def _open(self):
        """Load the model from :meth:`data` (no cache)."""
        if self.kind == "savedmodel":
            from sparkdl.engine.savedmodel import loadSignature

            return loadSignature(self.data(), self.key, self.options["signatureDefKey"],
                                 self.options.get("tags"))
        model = modelFromBytes(self.data(), self.safeMode)
        relaxBatchDimension(model)
        return model

    #: What runs a Keras model (:mod:`sparkdl.engine.runtimes`); set by :meth:`using`.
    runtime, precision = "tensorflow", "fp32"

    def using(self, runtime="tensorflow", precision="fp32"):
        """This handle, its Keras model run by ``runtime`` at ``precision`` (the stages'
        ``runtime`` / ``precision`` params); the shipped data is shared."""
        from sparkdl.engine import runtimes

        view = copy.copy(self)
        view.runtime = runtimes.checkRuntime(runtime)
        view.precision = runtimes.checkPrecision(precision)
        return view

    @property
    def cacheKey(self):
        """The worker cache's key: :attr:`key`, plus the runtime unless TensorFlow fp32."""
        if self.kind != "keras" or (self.runtime, self.precision) == ("tensorflow", "fp32"):
            return self.key
        return f"{self.key}:{self.runtime}:{self.precision}"

    def cacheKeyOn(self, device):
        """The worker cache's key of this model placed on ``device``: ``(cacheKey, device)``
        when the device decides anything (TensorFlow, and ``"auto"``, which picks TensorFlow
        on a GPU task); :attr:`cacheKey` alone for a CPU-only runtime (one copy for all
        devices) and outside a task."""
        if device is None or self.runtime in ("openvino", "litert"):
            return self.cacheKey
        return (self.cacheKey, device)

    def _compile(self, threads=None, gpus=None):
        """A :class:`~sparkdl.engine.runtimes.Predictor` of the Keras model on this handle's
        runtime; the converted model is shared by the machine's workers (content key)."""
        from sparkdl.engine import runtimes

        return runtimes.compileModel(self._open, self.runtime, self.precision, threads=threads,
                                     modelName=self.what, gpus=gpus, key=self.key)

    def load(self):
        """The :class:`LoadedModel` for the running task (on an executor: from this worker's
        cache), on the task's device (:func:`sparkdl.engine.runtime.taskDevice`), chosen for
        every task: a reused worker runs tasks that Spark gave different GPUs."""
        from sparkdl.engine import model_cache, runtime

        settings = runtime.configure()
        device = runtime.taskDevice()

        def build():
            placed = runtime.tfDevice(device)
            with runtime.deviceScope(placed):
                if self.kind == "savedmodel":
                    model = self._open()
                else:
                    # "auto" runs TensorFlow on a GPU that TensorFlow has, else a CPU runtime
                    gpus = [placed] if placed and placed.startswith("/GPU:") else []
                    model = self._compile(settings["cpus"], gpus)
            return LoadedModel(model, self.kind, device, placed)

        return model_cache.get(self.cacheKeyOn(device), build)

    def resolveRuntime(self):
        """Driver-side: ``(runtime, precision, note)`` that this machine runs the model with
        (``"auto"`` resolved, fallbacks included; ``note`` says why it fell back, or None).
        Converts the model here, into the machine's cache, so local workers find it there;
        on a cluster, executors resolve for themselves and may differ (e.g. a GPU task)."""
        predictor = self._compile(threads=1)
        return predictor.runtime, predictor.precision, predictor.note

    def inspect(self, read, advice=STAGE_ADVICE, what=None):
        """Driver-side: ``read(model)`` of the loaded Keras model, computed once per handle
        (e.g. its signature), for checks before any Spark job.

        :raises ValueError: Keras refused the model under ``safe_mode``: the message names
            ``what`` (default: the source's name) and ends with ``advice``.
        """
        if read not in self._inspected:
            try:
                model = modelFromBytes(self.data(), self.safeMode)
            except ValueError as e:
                if self.safeMode and _isSafeModeRefusal(e):
                    raise safeModeRefusal(what or self.what, advice, e) from e
                raise
            self._inspected[read] = read(model)
        return self._inspected[read]


#: Handles kept on the driver before the least recently used is dropped.
MAX_HANDLES = 8

_handles = OrderedDict()
_handlesLock = threading.Lock()


def _sessionKey(spark):
    """What a handle is valid for: the Spark application of ``spark`` (on Spark Connect, the
    session: its artifacts are its own)."""
    if is_connect(spark):
        return ("connect", spark.session_id)
    return spark.sparkContext.applicationId


class _SessionFile:
    """Spark Connect's native channel for a model: a session artifact file
    (``addArtifacts(..., file=True)``), uploaded by the client in chunks (so models above
    Connect's gRPC message limit ship) and fetched once per executor; a Python worker reads it
    from :class:`pyspark.SparkFiles`. Named by the content hash, so the same bytes again in a
    session (another stage, a copy of the file) upload nothing. Pickles as its name only."""

    def __init__(self, spark, data):
        self.name = f"sparkdl-{hashlib.sha256(data).hexdigest()}.bin"
        self._data = data
        key = (spark.session_id, self.name)
        with _uploadLock:
            if key not in _uploaded:
                with tempfile.TemporaryDirectory() as d:
                    path = os.path.join(d, self.name)
                    with open(path, "wb") as f:
                        f.write(data)
                    spark.addArtifacts(path, file=True)
                _uploaded.add(key)

    def __getstate__(self):
        return {"name": self.name, "_data": None}

    @property
    def value(self):
        if self._data is not None:  # on the driver
            return self._data
        from pyspark import SparkFiles

        with open(SparkFiles.get(self.name), "rb") as f:
            return f.read()


_uploaded = set()  # (session id, artifact name) uploaded by this client
_uploadLock = threading.Lock()


def _ship(spark, data):
    """Send ``data`` to the executors once; returns an object whose ``value`` is the data:
    a broadcast on a classic session (in executor memory, no file), a session artifact on
    Spark Connect (which has no broadcast)."""
    if is_connect(spark):
        return _SessionFile(spark, data)
    return spark.sparkContext.broadcast(data)


def handleFor(source, spark):
    """Driver-side: the :class:`Handle` of ``source`` in ``spark``'s application, built and
    shipped only when its key is new, so repeated ``transform`` calls neither rebuild nor
    reship a model.

    :param source: a :class:`Source` (:func:`kerasFile`, :func:`kerasBytes`...).
    :param spark: the caller's SparkSession (a stage's ``dataset.sparkSession``).
    """
    fullKey = (_sessionKey(spark), source.key)
    with _handlesLock:
        if fullKey in _handles:
            _handles.move_to_end(fullKey)
            return _handles[fullKey]
    data = source.build()
    handle = Handle(source, data, _ship(spark, data))
    with _handlesLock:
        _handles[fullKey] = handle
        while len(_handles) > MAX_HANDLES:
            _handles.popitem(last=False)
    return handle
