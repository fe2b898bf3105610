"""Per-Python-worker cache of loaded models, keyed by the model's content hash.

It lives in this importable module (not in a UDF closure, which Spark unpickles anew for every
task), so with Spark's default ``spark.python.worker.reuse=true`` a worker loads a model once
and reuses it for all later tasks and batches. Caveats, as for ``pyspark.ml.model_cache``:
a worker that Spark ends (idle timeout, ``worker.reuse=false``) loses its cache; each
concurrent task runs in its own worker, so N task slots hold up to N copies of a model; the
cache is bounded (:data:`MAX_MODELS`, least recently used evicted) so a long session that
uses many models does not grow without limit.

After each load the worker's heap is frozen (:func:`gc.freeze`): PySpark's daemon runs a full
``gc.collect()`` after every task of a reused worker, and with TensorFlow and a model in the
process that walk alone cost about half a second of CPU per task, more than a small task's
inference. Frozen objects are skipped by later collections; the heap is unfrozen and
collected again at the next load, so an evicted model's reference cycles are still freed.
"""
import gc
import threading
from collections import OrderedDict

__all__ = ["get", "loadCount", "clear", "freezeWorkerHeap", "MAX_MODELS"]

#: Models kept per worker before the least recently used is evicted.
MAX_MODELS = 4

_models = OrderedDict()
_loads = {}
_lock = threading.Lock()
_frozen = False


def get(key, load):
    """Return the model cached under ``key``, calling ``load()`` only on a miss."""
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        model = load()
        _models[key] = model
        _loads[key] = _loads.get(key, 0) + 1
        while len(_models) > MAX_MODELS:
            _models.popitem(last=False)
        _refreeze()
        return model


def _refreeze():
    """Collect everything (evicted models included), then freeze what is left alive."""
    global _frozen
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _frozen = True


def freezeWorkerHeap():
    """Freeze this worker's heap once, for UDFs that load no model (decoding, loaders).

    With only PySpark, pyarrow and pandas imported, the daemon's full collection after each
    task took about 55 ms: a third of reading 30 photos. Call it at the start of a UDF.
    """
    if not _frozen:
        with _lock:
            if not _frozen:
                _refreeze()


def loadCount(key):
    """How many times this worker has loaded ``key`` (for tests and diagnostics)."""
    return _loads.get(key, 0)


def clear():
    global _frozen
    with _lock:
        _models.clear()
        gc.unfreeze()
        gc.collect()
        _frozen = False
