"""Helpers for code that runs inside a Spark task's Python worker, below every other floor.

- :func:`iterChunks`: re-cuts the Arrow batches a UDF receives into fixed-size chunks.
- :func:`freezeWorkerHeap` / :func:`refreezeWorkerHeap` / :func:`unfreezeWorkerHeap`: the
  worker heap's :func:`gc.freeze` state. PySpark's daemon runs a full ``gc.collect()`` after
  every task of a reused worker; with only PySpark, pyarrow and pandas imported that took
  about 55 ms (a third of decoding 30 photos), with TensorFlow and a model loaded about half a
  second. Frozen objects are skipped by later collections.
- :func:`taskCpus` / :func:`taskGpus`: the resources Spark gave the running task.
"""
import gc
import os
import threading

import pyarrow as pa

__all__ = ["iterChunks", "freezeWorkerHeap", "refreezeWorkerHeap", "unfreezeWorkerHeap",
           "taskCpus", "taskGpus"]


def iterChunks(batches, size):
    """Re-cut an iterator of Arrow batches (an array or a tuple of arrays) into chunks of
    ``size`` rows (the last may be smaller): large batches are split, which bounds the memory
    of a UDF whose output is larger than its input, and small ones merged, so that a model
    sees full batches whatever the upstream cut (e.g. a chained decode UDF's chunks)."""
    pending, rows, isTuple = [], 0, False

    def emit():
        arrays = pending[0] if len(pending) == 1 else tuple(
            pa.concat_arrays([part[k] for part in pending]) for k in range(len(pending[0])))
        return arrays if isTuple else arrays[0]

    for batch in batches:
        isTuple = isinstance(batch, tuple)
        arrays = batch if isTuple else (batch,)
        n, start = len(arrays[0]), 0
        while start < n:
            take = min(size - rows, n - start)
            pending.append(tuple(a.slice(start, take) for a in arrays))
            rows, start = rows + take, start + take
            if rows == size:
                yield emit()
                pending, rows = [], 0
    if pending:
        yield emit()


_heapLock = threading.RLock()
_frozen = False


def refreezeWorkerHeap():
    """Collect everything (e.g. an evicted model's reference cycles), then freeze what is left
    alive. Called after each model load."""
    global _frozen
    with _heapLock:
        unfreezeWorkerHeap()
        gc.freeze()
        _frozen = True


def freezeWorkerHeap():
    """Freeze this worker's heap once, for UDFs that load no model (decoding, loaders); call it
    at the start of a UDF."""
    if not _frozen:
        with _heapLock:
            if not _frozen:
                refreezeWorkerHeap()


def unfreezeWorkerHeap():
    """Unfreeze and collect the heap (e.g. when a worker's model cache is cleared)."""
    global _frozen
    with _heapLock:
        gc.unfreeze()
        gc.collect()
        _frozen = False


def taskCpus():
    """CPU cores of the running Spark task (``spark.task.cpus``); all of the machine's outside
    a task."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return max(1, int(ctx.cpus())) if ctx is not None else max(1, os.cpu_count() or 1)


def taskGpus():
    """GPU addresses Spark gave the running task (``[]`` for none), or None outside a task."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return None
    gpu = ctx.resources().get("gpu")
    return list(gpu.addresses) if gpu is not None else []
