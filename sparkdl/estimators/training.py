"""The estimator's training loop, run in a Spark task or in each HorovodRunner rank.

:func:`trainRank` is the one code path: single-process training is rank 0 of 1. With more
ranks, each streams its shard of the stored rows (:func:`sparkdl.estimators.store.shard`),
the optimizer averages gradients over all ranks every step, and every rank runs the same
number of steps per epoch.
"""
__all__ = ["trainRank", "trainTask", "trainJobs", "checkSlots", "EpochTimer"]


def _prepareTraining(modelBytes, safeMode, optimizer, loss, fitParams, seed, distributed):
    """Set up TensorFlow and compile the model; return (model, fit arguments, batch size,
    validation cut, shuffle)."""
    from sparkdl.engine import runtime
    from sparkdl.engine.shipping import modelFromBytes

    runtime.configure()
    import keras

    keras.utils.set_random_seed(seed % 2**32)  # shuffling, dropout, optimizer state: reproducible
    model = modelFromBytes(modelBytes, safeMode)
    fitParams = dict(fitParams)
    batchSize = int(fitParams.pop("batch_size", 32))
    validationSplit = float(fitParams.pop("validation_split", 0.0))
    shuffle = fitParams.pop("shuffle", True)
    opt = keras.optimizers.get(optimizer)
    if distributed:
        from sparkdl.horovod.tensorflow.keras import DistributedOptimizer

        opt = DistributedOptimizer(opt)
    # XLA cannot compile the collective ops of the distributed optimizer.
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"],
                  **({"jit_compile": False} if distributed else {}))
    return model, fitParams, batchSize, int(round(validationSplit * 1000)), shuffle


def trainRank(modelBytes, safeMode, storeDir, optimizer, loss, fitParams, kind, seed,
              rank=0, size=1):
    """Train on rank ``rank`` of ``size`` (single-process training: rank 0 of 1).

    Streams this rank's shard of the stored rows into ``model.fit``; with ``size > 1`` the
    gradients are averaged over all ranks every step and each rank cycles through its shard
    for the same number of steps per epoch. Only rank 0 validates.

    :return: on rank 0, ``(weights as .keras bytes, history, {"workerRows", "stepsPerEpoch"})``;
        None on the other ranks.
    """
    from sparkdl.engine.shipping import modelToBytes
    from sparkdl.estimators.store import shard, tfDataset, usableRows

    distributed = size > 1
    model, fitParams, batchSize, cut, shuffle = _prepareTraining(
        modelBytes, safeMode, optimizer, loss, fitParams, seed + rank, distributed)
    inputShape = tuple(model.inputs[0].shape[1:])
    plan = usableRows(storeDir, False, cut)
    workerRows = [sum(len(p) for _, p in shard(plan, r, size)) for r in range(size)]
    timer = EpochTimer()
    callbacks = [timer]
    if distributed:
        from sparkdl.horovod.tensorflow.keras import BroadcastGlobalVariablesCallback, LogCallback

        if min(workerRows) == 0:
            raise ValueError(f"numWorkers={size} needs at least {size} usable training rows, "
                             f"got {sum(workerRows)}")
        # Every rank must run the same number of steps (each step averages gradients over
        # all ranks): each cycles through its shard endlessly, the same steps everywhere.
        steps = int(fitParams.pop("steps_per_epoch", None)
                    or max(1, sum(workerRows) // (size * batchSize)))
        fitParams["steps_per_epoch"] = steps
        callbacks = [BroadcastGlobalVariablesCallback(0), _MetricAverage(), timer]
        if rank == 0 and fitParams.get("verbose", 1):
            callbacks.append(LogCallback())
    else:
        steps = int(fitParams.get("steps_per_epoch") or -(-workerRows[0] // batchSize))
    fitParams["verbose"] = fitParams.get("verbose", 1) if rank == 0 else 0
    validation = None
    if rank == 0 and cut:
        # Only rank 0 validates, on the whole validation fold (no collective ops involved).
        validation = tfDataset(usableRows(storeDir, True, cut), inputShape, kind, batchSize)
    history = model.fit(
        tfDataset(shard(plan, rank, size), inputShape, kind, batchSize,
                  (seed + rank) % 2**32 if shuffle else None, repeat=distributed),
        validation_data=validation, callbacks=callbacks,
        shuffle=False, **fitParams)  # tf.data shuffles, not Keras
    if rank != 0:
        return None
    result = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    result["epoch_seconds"] = timer.seconds
    return modelToBytes(model), result, {"workerRows": workerRows, "stepsPerEpoch": steps}


def trainTask(modelBytes, safeMode, storeDir, optimizer, loss, fitParams, kind, seed):
    """:func:`trainRank` in a HorovodRunner rank: its rank and size come from Horovod."""
    from sparkdl import horovod as shvd

    return trainRank(modelBytes, safeMode, storeDir, optimizer, loss, fitParams, kind, seed,
                     rank=shvd.rank(), size=shvd.size())


def _MetricAverage():
    """A Keras callback averaging each epoch's training metrics over all ranks (each ran the
    same number of steps, so this is the metric over all their rows), as Horovod's
    MetricAverageCallback does. Validation metrics are rank 0's own (only it validates)."""
    import keras
    import numpy as np

    from sparkdl.horovod.tensorflow import allreduce

    class MetricAverage(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            keys = sorted(k for k in logs if not k.startswith("val_"))
            if keys:
                values = np.array([float(logs[k]) for k in keys], np.float64)
                mean = np.asarray(allreduce(values, average=True))
                for k, v in zip(keys, mean):
                    logs[k] = float(v)

    return MetricAverage()


def EpochTimer():
    """A Keras callback recording each epoch's wall time (for fitSummary and benchmarks)."""
    import time

    import keras

    class _EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return _EpochTimer()


def checkSlots(spark, numWorkers):
    """Driver-side, before any data is stored: with ``numWorkers > 1``, HorovodRunner's own
    check that the cluster has that many task slots (fails at once, saying how many)."""
    if numWorkers > 1:
        from sparkdl.horovod.runner import check_slots

        check_slots(spark, numWorkers)


def trainJobs(spark, jobs, handle, storeDir, kind, seed, numWorkers):
    """Driver-side: train one model per job ``(index, optimizer, loss, fitParams)``, starting
    from the model of ``handle`` (:func:`sparkdl.engine.shipping.handleFor`).

    With ``numWorkers == 1`` every job is one Spark task (all in parallel, reading the shipped
    model); with more, one HorovodRunner job per param map, one after another (each takes
    ``numWorkers`` task slots at once).

    :return: ``{index: trainRank's rank-0 result}``.
    """
    if numWorkers > 1:
        from sparkdl.horovod import HorovodRunner

        results = {}
        for i, optimizer, loss, fitParams in jobs:
            runner = HorovodRunner(np=numWorkers, driver_log_verbosity="log_callback_only")
            results[i] = runner.run(trainTask, modelBytes=handle.data(), safeMode=handle.safeMode,
                                    storeDir=storeDir, optimizer=optimizer, loss=loss,
                                    fitParams=fitParams, kind=kind, seed=seed)
        return results
    return _trainInTasks(spark, jobs, handle, storeDir, kind, seed)


#: Largest piece of a task's result in one row: Spark Connect caps a result batch at a few MB.
RESULT_CHUNK_BYTES = 256 * 1024


def _trainInTasks(spark, jobs, handle, storeDir, kind, seed):
    """One task per job, all in parallel, as a DataFrame job (``mapInArrow``), so it runs on a
    classic and a Spark Connect session alike; each result (the trained ``.keras`` bytes and
    the history) comes back cloudpickled, in chunks."""
    import pyarrow as pa
    from pyspark import cloudpickle

    schema = pa.schema([("job", pa.int64()), ("seq", pa.int64()), ("data", pa.binary())])

    def train(batches):
        from pyspark import cloudpickle as pickler

        from sparkdl.engine import runtime

        for batch in batches:
            for n in batch.column(0).to_pylist():
                i, optimizer, loss, fitParams = jobs[n]
                with runtime.taskScope():  # on this task's GPU (or the CPU), not the worker's
                    result = trainRank(handle.data(), handle.safeMode, storeDir, optimizer,
                                       loss, fitParams, kind, seed)
                data = pickler.dumps((i, result))
                chunks = [data[at:at + RESULT_CHUNK_BYTES]
                          for at in range(0, len(data), RESULT_CHUNK_BYTES)]
                for at in range(0, len(chunks), 16):
                    part = chunks[at:at + 16]
                    yield pa.RecordBatch.from_pydict(
                        {"job": [n] * len(part), "seq": list(range(at, at + len(part))),
                         "data": part}, schema=schema)

    rows = spark.range(len(jobs), numPartitions=len(jobs)) \
        .mapInArrow(train, "job long, seq long, data binary").collect()
    parts = {}
    for row in rows:
        parts.setdefault(row.job, []).append((row.seq, bytes(row.data)))
    results = {}
    for pieces in parts.values():
        i, result = cloudpickle.loads(b"".join(chunk for _, chunk in sorted(pieces)))
        results[i] = result
    return results
