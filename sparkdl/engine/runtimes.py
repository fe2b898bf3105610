"""Inference runtimes: one Keras model, run by TensorFlow, OpenVINO or LiteRT.

:func:`compileModel` turns a loaded Keras model into a :class:`Predictor` whose
``predict(batch)`` takes what ``model.predict_on_batch`` takes (one array, or a list in
``model.inputs`` order) and returns one float32 array. The conversion path is the same for
both converted runtimes: the model is exported once, as Keras 3 recommends, to a TensorFlow
SavedModel whose inputs are named ``input_0``, ``input_1``, ... in ``model.inputs`` order, and
then

- ``"openvino"``: ``openvino.convert_model(savedModelDir)``, compiled for the CPU with one
  stream of ``threads`` threads, not pinned to cores (several Spark tasks share a machine),
  and an explicit inference precision: OpenVINO's own default on a CPU with bfloat16
  instructions is bf16, which is not what ``fp32`` promises;
- ``"litert"``: ``tf.lite.TFLiteConverter.from_saved_model`` with the built-in op set only
  (no TensorFlow "select ops", which the ``ai-edge-litert`` interpreter cannot run), then
  ``ai_edge_litert.interpreter.Interpreter(num_threads=threads)`` (XNNPACK).

``"auto"`` resolves by :func:`resolveRuntime`: on a task with a GPU, TensorFlow; else
OpenVINO when it is installed, then LiteRT, then TensorFlow. OpenVINO comes first because it
was never slower than LiteRT in ``benchmarks/bench_runtimes.py`` (on par for the mobile
models, 1.3x faster on ResNet50, and it takes models with variable input sizes without a
re-plan per shape). With ``"auto"`` a runtime that is missing or cannot convert the model is
a logged fallback to TensorFlow, never a failed task; a runtime named explicitly raises
:class:`RuntimeUnavailableError`, one line naming the runtime, the model and, for a
conversion failure, the layer.

Precision: ``"fp32"`` (default) agrees with Keras within 1e-4 on ImageNet features (tested);
``"bf16"`` is OpenVINO only, on CPUs with bfloat16 instructions (AVX512_BF16 or AMX), and
trades agreement for speed (see the docs' runtime guide for the measured difference).

Nothing here imports TensorFlow, OpenVINO or LiteRT at import time.
"""
import logging
import os
import re
import shutil
import tempfile

import numpy as np

from sparkdl.param.shared import PRECISIONS, RUNTIMES  # the params' values, declared once

__all__ = [
    "RUNTIMES",
    "PRECISIONS",
    "RuntimeUnavailableError",
    "Predictor",
    "compileModel",
    "resolveRuntime",
    "installed",
    "checkRuntime",
    "checkPrecision",
]


_MODULES = {"openvino": "openvino", "litert": "ai_edge_litert"}
_EXTRAS = {"openvino": "sparkdl[openvino]", "litert": "sparkdl[litert]"}
#: ``"auto"``'s order of preference on a CPU (see the module docstring for why).
AUTO_ORDER = ("openvino", "litert")

_log = logging.getLogger("sparkdl.engine.runtimes")


class RuntimeUnavailableError(RuntimeError):
    """A runtime cannot run a model: not installed, no bf16 on this CPU, or a layer it
    cannot convert. The message is one line naming the runtime, the model and the layer."""


def _oneOf(what, value, choices):
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}; "
                         f"got {value!r}")
    return value


def checkRuntime(value):
    """``value`` if it is one of :data:`RUNTIMES`, else a ``ValueError`` naming the choices."""
    return _oneOf("runtime", value, RUNTIMES)


def checkPrecision(value):
    """``value`` if it is one of :data:`PRECISIONS`, else a ``ValueError``."""
    return _oneOf("precision", value, PRECISIONS)


def installed(runtime):
    """Whether ``runtime``'s package can be imported here (TensorFlow: always True)."""
    if runtime == "tensorflow":
        return True
    import importlib.util

    return importlib.util.find_spec(_MODULES[runtime]) is not None


def cpuHasBf16():
    """Whether OpenVINO sees bfloat16 support on this CPU (False without OpenVINO)."""
    if not installed("openvino"):
        return False
    import openvino as ov

    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:
        return False


def resolveRuntime(runtime, precision="fp32", gpus=None):
    """The runtime ``"auto"`` stands for here (other values are returned as they are).

    :param gpus: the task's GPUs (``None`` or empty: none); with a GPU, TensorFlow runs it.
    """
    checkRuntime(runtime)
    checkPrecision(precision)
    if runtime != "auto":
        return runtime
    if gpus:
        return "tensorflow"
    for candidate in AUTO_ORDER:
        if installed(candidate):
            return candidate
    return "tensorflow"


class Predictor:
    """A model ready to predict with one runtime.

    :ivar runtime: ``"tensorflow"``, ``"openvino"`` or ``"litert"``: what actually runs.
    :ivar precision: ``"fp32"`` or ``"bf16"``.
    :ivar modelName: how errors and logs name the model.
    :ivar note: why ``"auto"`` fell back to TensorFlow, or None.
    """

    runtime = precision = modelName = None
    note = None

    def predict(self, batch):
        """``batch`` (an array, or a list of arrays in ``model.inputs`` order) -> float32
        array of the model's (single) output, one row per input row."""
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.modelName} on {self.runtime} {self.precision}>"


class _KerasPredictor(Predictor):
    runtime = "tensorflow"

    def __init__(self, model, modelName, precision="fp32"):
        self.model, self.modelName, self.precision = model, modelName, precision

    def predict(self, batch):
        return self.model.predict_on_batch(batch)


class _OpenVinoPredictor(Predictor):
    runtime = "openvino"

    def __init__(self, compiled, names, modelName, precision):
        self.compiled, self.names = compiled, names
        self.modelName, self.precision = modelName, precision
        self.request = compiled.create_infer_request()
        self.output = compiled.output(0)

    def predict(self, batch):
        arrays = batch if isinstance(batch, (list, tuple)) else [batch]
        feed = {name: np.ascontiguousarray(a) for name, a in zip(self.names, arrays)}
        # The output tensor is reused by the next infer: copy it out.
        return np.array(self.request.infer(feed, share_inputs=True)[self.output], copy=True)


class _LiteRtPredictor(Predictor):
    runtime = "litert"

    def __init__(self, interpreter, names, modelName):
        self.interpreter, self.names, self.modelName = interpreter, names, modelName
        self.precision = "fp32"
        self.runner = interpreter.get_signature_runner("serve")
        self.outputName = sorted(self.runner.get_output_details())[0]

    def predict(self, batch):
        arrays = batch if isinstance(batch, (list, tuple)) else [batch]
        feed = {name: np.ascontiguousarray(a) for name, a in zip(self.names, arrays)}
        # The runner resizes the inputs (a no-op for an unchanged shape) and copies the output.
        return self.runner(**feed)[self.outputName]


def compileModel(model, runtime="tensorflow", precision="fp32", threads=None, modelName=None,
                 gpus=None, key=None):
    """A :class:`Predictor` of a Keras model on ``runtime`` at ``precision``.

    :param model: a loaded Keras 3 model with a single output, or a function that returns
        one, called only when needed (not for a conversion found in the machine's cache).
    :param runtime: one of :data:`RUNTIMES`.
    :param precision: one of :data:`PRECISIONS`.
    :param threads: threads for OpenVINO / LiteRT (default: this machine's CPU count); the
        engine passes the Spark task's CPUs.
    :param modelName: how messages name the model, e.g. ``"modelFile '/m.keras'"`` (default:
        ``"model '<the Keras model's name>'"``).
    :param gpus: the task's GPUs, for ``"auto"``.
    :param key: the model's content key (sha256 of its ``.keras`` bytes); with it, the
        converted model is kept in this machine's cache (:func:`cacheDir`), so the Python
        workers of one machine convert a model once, not once each.
    :raises RuntimeUnavailableError: an explicitly named runtime is not installed, cannot run
        ``precision`` on this CPU, or cannot convert one of the model's layers.
    """
    checkRuntime(runtime)
    checkPrecision(precision)
    getModel = _Lazy(model)
    if modelName is None:
        modelName = f"model {model.name!r}" if hasattr(model, "predict_on_batch") else "the model"
    threads = max(1, int(threads or os.cpu_count() or 1))
    if runtime != "auto":
        return _compile(getModel, runtime, precision, threads, modelName, key)
    chosen = resolveRuntime(runtime, precision, gpus)
    if precision == "bf16" and not (chosen == "openvino" and cpuHasBf16()):
        note = (f"precision 'bf16' needs OpenVINO on a CPU with bfloat16 instructions, "
                f"which this worker lacks (auto chose {chosen!r}); running fp32")
        _log.warning("sparkdl: %s: %s", modelName, note)
        precision = "fp32"
    if chosen == "tensorflow":
        return _KerasPredictor(getModel(), modelName)
    try:
        return _compile(getModel, chosen, precision, threads, modelName, key)
    except RuntimeUnavailableError as e:
        # auto never fails a job: TensorFlow runs every model Keras loads.
        _log.warning("sparkdl: runtime 'auto' falls back to TensorFlow: %s", e)
        predictor = _KerasPredictor(getModel(), modelName)
        predictor.note = str(e)
        return predictor


class _Lazy:
    """A Keras model, or a function returning one, called at most once."""

    def __init__(self, model):
        self._model = model if hasattr(model, "predict_on_batch") else None
        self._load = None if self._model is not None else model

    def __call__(self):
        if self._model is None:
            self._model = self._load()
        return self._model


def _compile(getModel, runtime, precision, threads, modelName, key):
    if runtime == "tensorflow":
        if precision != "fp32":
            raise RuntimeUnavailableError(
                f"runtime 'tensorflow' runs {modelName} in fp32 only; precision "
                "'bf16' needs runtime 'openvino' (or 'auto')")
        return _KerasPredictor(getModel(), modelName)
    if not installed(runtime):
        raise RuntimeUnavailableError(
            f"runtime {runtime!r} is not installed on this worker (pip install "
            f"'{_EXTRAS[runtime]}'), so it cannot run {modelName}; use runtime "
            "'auto' to fall back to TensorFlow")
    if runtime == "litert" and precision != "fp32":
        raise RuntimeUnavailableError(
            f"runtime 'litert' runs {modelName} in fp32 only; precision 'bf16' needs "
            "runtime 'openvino'")
    if runtime == "openvino" and precision == "bf16" and not cpuHasBf16():
        raise RuntimeUnavailableError(
            f"precision 'bf16' for {modelName} needs a CPU with bfloat16 instructions "
            "(AVX512_BF16 or AMX), which this worker's CPU lacks; use precision 'fp32'")
    with _converted(runtime, key, getModel, modelName) as (path, names):
        if runtime == "openvino":
            return _openVino(path, names, precision, threads, modelName)
        return _liteRt(path, names, threads, modelName)


def _inputSpecs(model):
    import tensorflow as tf

    return [tf.TensorSpec(tuple(t.shape), t.dtype, name=f"input_{i}")
            for i, t in enumerate(model.inputs)]


def _servingFunction(model):
    """The model's inference call, taking its inputs as positional arguments."""
    single = len(model.inputs) == 1

    def serve(*inputs):
        return model(inputs[0] if single else list(inputs), training=False)
    return serve


def exportSavedModel(model, path):
    """Export ``model``'s inference function to a SavedModel at ``path`` (endpoint
    ``serve``, inputs ``input_0``, ... in ``model.inputs`` order); returns the input names."""
    import keras

    if len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs; sparkdl runs "
                         "single-output models")
    specs = _inputSpecs(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", _servingFunction(model), input_signature=specs)
    archive.write_out(path, verbose=False)
    return [s.name for s in specs]


# ---------------------------------------------------------------------------------------------
# Conversion, and this machine's cache of converted models.

#: Converted models kept in :func:`cacheDir` before the least recently used are deleted.
MAX_CACHED = 16
_FILES = {"openvino": "model.xml", "litert": "model.tflite"}


def cacheDir():
    """This machine's cache of converted models, private to the user: ``$SPARKDL_RUNTIME_CACHE``
    or ``<tmp>/sparkdl-runtimes-<uid>``; None (no cache) when it cannot be made private."""
    path = os.environ.get("SPARKDL_RUNTIME_CACHE") or os.path.join(
        tempfile.gettempdir(), f"sparkdl-runtimes-{os.getuid()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError:
        return None
    # Another user's (or a world-writable) directory could hand us a tampered model.
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return path


def _version(runtime):
    from importlib.metadata import PackageNotFoundError, version

    try:  # the converter's version: openvino's, or TensorFlow's for LiteRT
        return version("openvino" if runtime == "openvino" else "tensorflow")
    except PackageNotFoundError:
        return "unknown"


class _converted:
    """Context manager: ``(path of the converted model file, input names)``, converted now or
    found in :func:`cacheDir` (with a content ``key``); two workers converting the same model
    at once take turns (a file lock), so the second finds the first's result."""

    def __init__(self, runtime, key, getModel, modelName):
        self.runtime, self.key, self.getModel, self.modelName = runtime, key, getModel, modelName
        self.tmp = None

    def __enter__(self):
        root = cacheDir() if self.key else None
        if root is None:
            self.tmp = tempfile.mkdtemp(prefix="sparkdl-convert-")
            return self._convert(os.path.join(self.tmp, "model"))
        import fcntl

        entry = os.path.join(root, f"{self.key}-{self.runtime}-{_version(self.runtime)}")
        with open(entry + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.exists(os.path.join(entry, "names.txt")):
                staging = f"{entry}.tmp{os.getpid()}"
                shutil.rmtree(staging, ignore_errors=True)
                try:
                    self._convert(staging)
                    shutil.rmtree(entry, ignore_errors=True)  # a half-written leftover
                    os.rename(staging, entry)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
                _prune(root)
        os.utime(entry)
        with open(os.path.join(entry, "names.txt")) as f:
            return os.path.join(entry, _FILES[self.runtime]), f.read().split()

    def __exit__(self, *exc):
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _convert(self, folder):
        """Export and convert into ``folder``; the same result as reading it from the cache."""
        model = self.getModel()
        os.makedirs(folder)
        savedModel = os.path.join(folder, "saved_model")
        names = exportSavedModel(model, savedModel)
        target = os.path.join(folder, _FILES[self.runtime])
        try:
            if self.runtime == "openvino":
                import openvino as ov

                # compress_to_fp16=False: save_model halves the weights by default.
                ov.save_model(ov.convert_model(savedModel), target, compress_to_fp16=False)
            else:
                import tensorflow as tf

                converter = tf.lite.TFLiteConverter.from_saved_model(
                    savedModel, signature_keys=["serve"])
                # Built-in ops only: the ai-edge-litert interpreter has no TF "select ops".
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
                with open(target, "wb") as f:
                    f.write(converter.convert())
        except Exception as e:  # OpConversionFailure, ConverterError: op names in the text
            raise _conversionError(self.runtime, model, self.modelName, e) from e
        finally:
            shutil.rmtree(savedModel, ignore_errors=True)
        with open(os.path.join(folder, "names.txt"), "w") as f:
            f.write("\n".join(names))
        return target, names


def _prune(root):
    """Keep the :data:`MAX_CACHED` most recently used converted models."""
    entries = [os.path.join(root, e) for e in os.listdir(root)
               if os.path.isdir(os.path.join(root, e)) and ".tmp" not in e]
    entries.sort(key=os.path.getmtime, reverse=True)
    for old in entries[MAX_CACHED:]:
        shutil.rmtree(old, ignore_errors=True)
        try:
            os.remove(old + ".lock")
        except OSError:
            pass


def _openVino(path, names, precision, threads, modelName):
    import openvino as ov

    config = {
        "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
    }
    core = ov.Core()
    try:
        compiled = core.compile_model(core.read_model(path), "CPU", config)
    except RuntimeError as e:
        raise RuntimeUnavailableError(
            f"runtime 'openvino' cannot compile {modelName}: "
            + " ".join(str(e).split())[:300]) from e
    byName = {}
    for port in compiled.inputs:
        for name in port.get_names():
            byName[name] = port.get_any_name()
    missing = [n for n in names if n not in byName]
    if missing:
        raise RuntimeUnavailableError(
            f"runtime 'openvino' converted {modelName} without its inputs {missing}")
    return _OpenVinoPredictor(compiled, [byName[n] for n in names], modelName, precision)


def _liteRt(path, names, threads, modelName):
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=path, num_threads=threads)
    except (RuntimeError, ValueError) as e:
        raise RuntimeUnavailableError(
            f"runtime 'litert' cannot load {modelName}: "
            + " ".join(str(e).split())[:300]) from e
    return _LiteRtPredictor(interpreter, names, modelName)


# ---------------------------------------------------------------------------------------------
# Which layer a converter refused.

_OP_PATTERNS = (
    re.compile(r"No conversion rule found for operations: ([\w, .]+)"),  # OpenVINO
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),   # TFLite converter
    re.compile(r"(?:Custom|Flex) ops: ([\w, .]+)"),
    re.compile(r"'tf\.(\w+)' op is not supported"),
)


def _failedOps(message):
    ops = []
    for pattern in _OP_PATTERNS:
        for match in pattern.finditer(message):
            ops += [o.strip().removeprefix("tf.") for o in match.group(1).split(",")]
    return list(dict.fromkeys(o for o in ops if o))


def _layersRunning(model, ops):
    """Names of ``model``'s layers whose traced inference graph holds an op of a type in
    ``ops`` (TensorFlow names its ops ``<model>/<layer>[_N]/...``)."""
    import tensorflow as tf

    if not ops:
        return []
    concrete = tf.function(_servingFunction(model)).get_concrete_function(*_inputSpecs(model))
    graph = concrete.graph.as_graph_def()
    nodes = list(graph.node)
    for function in graph.library.function:
        nodes += list(function.node_def)
    layerNames = {layer.name for layer in model._flatten_layers(include_self=False)}
    found = []
    for node in nodes:
        if node.op not in ops:
            continue
        for part in node.name.split("/"):
            base = re.sub(r"_\d+$", "", part)
            for candidate in (part, base):
                if candidate in layerNames and candidate not in found:
                    found.append(candidate)
                    break
            else:
                continue
            break
    return found


def _conversionError(runtime, model, modelName, error):
    message = str(error)
    ops = _failedOps(message)
    try:
        layers = _layersRunning(model, set(ops))
    except Exception:  # naming the layer is a courtesy; never hide the real error
        layers = []
    if layers:
        what = (f"layer{'s' if len(layers) > 1 else ''} {', '.join(map(repr, layers))} "
                f"(op{'s' if len(ops) > 1 else ''} {', '.join(ops)})")
    elif ops:
        what = f"op{'s' if len(ops) > 1 else ''} {', '.join(ops)}"
    else:
        what = "a layer: " + " ".join(message.split())[:300]
    return RuntimeUnavailableError(
        f"runtime {runtime!r} cannot convert {modelName}: unsupported {what}; use "
        "runtime 'tensorflow' (or 'auto', which falls back to it)")
