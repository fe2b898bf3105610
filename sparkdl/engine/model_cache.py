"""Per-Python-worker cache of loaded models, keyed by the model's content hash and the task's
device (:meth:`sparkdl.engine.shipping.Handle.cacheKeyOn`).

It lives in this importable module (not in a UDF closure, which Spark unpickles anew for every
task), so with Spark's default ``spark.python.worker.reuse=true`` a worker loads a model once
and reuses it for all later tasks and batches. Caveats, as for ``pyspark.ml.model_cache``:
a worker that Spark ends (idle timeout, ``worker.reuse=false``) loses its cache; each
concurrent task runs in its own worker, so N task slots hold up to N copies of a model; the
cache is bounded (:data:`MAX_MODELS`, least recently used evicted) so a long session that
uses many models does not grow without limit.

After each load the worker's heap is frozen (:func:`sparkdl.utils.worker.refreezeWorkerHeap`):
PySpark's daemon runs a full ``gc.collect()`` after every task of a reused worker, and with
TensorFlow and a model in the process that walk alone cost about half a second of CPU per
task, more than a small task's inference. Frozen objects are skipped by later collections; the
heap is unfrozen and collected again at the next load, so an evicted model's reference cycles
are still freed.
"""
import threading
from collections import OrderedDict

from sparkdl.utils.worker import refreezeWorkerHeap, unfreezeWorkerHeap

__all__ = ["get", "loadCount", "clear", "MAX_MODELS"]

#: Models kept per worker before the least recently used is evicted.
MAX_MODELS = 4

_models = OrderedDict()
_loads = {}
_lock = threading.Lock()


def get(key, load):
    """Return the model cached under ``key`` (a model key, or ``(model key, device)``),
    calling ``load()`` only on a miss."""
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        model = load()
        _models[key] = model
        counted = key[0] if isinstance(key, tuple) else key  # a model, on any device
        _loads[counted] = _loads.get(counted, 0) + 1
        while len(_models) > MAX_MODELS:
            _models.popitem(last=False)
        refreezeWorkerHeap()
        return model


def loadCount(key):
    """How many times this worker has loaded ``key`` (for tests and diagnostics); for a key
    ``(model key, device)``, loads of the model key count on every device."""
    return _loads.get(key, 0)


def clear():
    """Drop every cached model and unfreeze the heap."""
    with _lock:
        _models.clear()
        unfreezeWorkerHeap()
