"""KerasImageFileEstimator: Keras training as a Spark ML Estimator whose data never visits
the driver, and whose fitted model serves through the same loader and engine it trained with.
"""
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
import zlib

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasLabelCol, HasOutputCol, HasSeed
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType, StringType

from sparkdl.param.persistence import SparkDLReadable, SparkDLWritable
from sparkdl.param.shared import HasBatchSize, HasImageLoader, HasKerasModel
from sparkdl.transformers.keras_image import KerasImageFileTransformer, _toOutputMode

__all__ = ["KerasImageFileEstimator", "KerasImageFileModel"]

logger = logging.getLogger(__name__)

#: Params a paramMap of fitMultiple / CrossValidator may change (as in the original library).
TUNABLE_PARAMS = ("kerasOptimizer", "kerasLoss", "kerasFitParams", "outputCol", "outputMode")

#: model.fit arguments sparkdl passes on; the data arguments are sparkdl's own.
FIT_PARAMS = ("epochs", "batch_size", "validation_split", "verbose", "shuffle",
              "class_weight", "initial_epoch", "steps_per_epoch", "validation_freq")

#: The default ``seed``: derived from the class name like Spark ML's, but the same in every
#: process (a CRC, not Python's per-process randomized ``hash``).
DEFAULT_SEED = zlib.crc32(b"sparkdl.KerasImageFileEstimator")

_SPARSE_LOSSES = {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"}
_DENSE_ONLY_LOSSES = {"categorical_crossentropy", "CategoricalCrossentropy", "kl_divergence",
                      "categorical_hinge", "CategoricalHinge"}


def _toOptimizer(value):
    """A Keras optimizer name (e.g. "adam") or its config dict; checked with keras."""
    if isinstance(value, str):
        config = value
    elif isinstance(value, dict):
        config = dict(value)
    else:
        raise TypeError(f"kerasOptimizer must be a Keras optimizer name or config dict, got "
                        f"{type(value).__name__}")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    try:
        keras.optimizers.get(config)
    except (ValueError, TypeError) as e:
        raise ValueError(f"kerasOptimizer {value!r} is not a Keras optimizer: {e}") from None
    return config


def _toLoss(value):
    value = TypeConverters.toString(value)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    try:
        keras.losses.get(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"kerasLoss {value!r} is not a Keras loss: {e}") from None
    return value


def _toFitParams(value):
    if not isinstance(value, dict):
        raise TypeError(f"kerasFitParams must be a dict of model.fit arguments, got "
                        f"{type(value).__name__}")
    unknown = sorted(set(value) - set(FIT_PARAMS))
    if unknown:
        raise ValueError(f"kerasFitParams has arguments sparkdl does not pass to model.fit: "
                         f"{unknown}; supported: {list(FIT_PARAMS)}")
    json.dumps(value)  # must persist as JSON
    return dict(value)


def _toNumWorkers(value):
    if isinstance(value, bool) or not TypeConverters._is_integer(value) or int(value) < 1:
        raise ValueError(f"numWorkers must be an integer >= 1, got {value!r}")
    return int(value)


class _EstimatorParams(HasInputCol, HasOutputCol, HasLabelCol, HasKerasModel, HasImageLoader,
                       HasBatchSize, HasSeed):
    kerasOptimizer = Param(Params._dummy(), "kerasOptimizer",
                           "Keras optimizer: a name (e.g. 'adam') or a config dict",
                           typeConverter=_toOptimizer)
    kerasLoss = Param(Params._dummy(), "kerasLoss",
                      "Keras loss name; with integer labels use a sparse loss "
                      "(e.g. 'sparse_categorical_crossentropy'), with one-hot vector labels a "
                      "dense one (e.g. 'categorical_crossentropy')", typeConverter=_toLoss)
    kerasFitParams = Param(Params._dummy(), "kerasFitParams",
                           "arguments for model.fit: " + ", ".join(FIT_PARAMS),
                           typeConverter=_toFitParams)
    outputMode = Param(Params._dummy(), "outputMode",
                       "fitted model output: 'vector' or 'image' (see KerasImageFileTransformer)",
                       typeConverter=_toOutputMode)
    storeDir = Param(Params._dummy(), "storeDir",
                     "directory (any URI Spark and pyarrow read) where fit materializes the "
                     "training data once; must be readable by every executor. Default: a "
                     "temporary directory under spark.local.dir, removed after fit",
                     typeConverter=TypeConverters.toString)

    numWorkers = Param(Params._dummy(), "numWorkers",
                       "number of processes training one model data-parallel (HorovodRunner); "
                       "1 trains in a single Spark task", typeConverter=_toNumWorkers)

    def getNumWorkers(self):
        return self.getOrDefault(self.numWorkers)

    def setNumWorkers(self, value):
        return self._set(numWorkers=value)

    def getKerasOptimizer(self):
        return self.getOrDefault(self.kerasOptimizer)

    def setKerasOptimizer(self, value):
        return self._set(kerasOptimizer=value)

    def getKerasLoss(self):
        return self.getOrDefault(self.kerasLoss)

    def setKerasLoss(self, value):
        return self._set(kerasLoss=value)

    def getKerasFitParams(self):
        return self.getOrDefault(self.kerasFitParams)

    def setKerasFitParams(self, value):
        return self._set(kerasFitParams=value)

    def getOutputMode(self):
        return self.getOrDefault(self.outputMode)

    def setOutputMode(self, value):
        return self._set(outputMode=value)

    def setInputCol(self, value):
        return self._set(inputCol=value)

    def setOutputCol(self, value):
        return self._set(outputCol=value)

    def setLabelCol(self, value):
        return self._set(labelCol=value)

    def setSeed(self, value):
        return self._set(seed=value)


class KerasImageFileModel(KerasImageFileTransformer, Model):
    """The model fitted by :class:`KerasImageFileEstimator`: it transforms exactly like
    :class:`sparkdl.KerasImageFileTransformer` (same ``imageLoader``, same engine) with the
    trained weights, which it carries when saved.

    ``fitSummary`` (not persisted) holds the training rows used, the rows skipped and why,
    the Keras history, ``numWorkers``, ``workerRows`` (training rows of each worker's shard;
    one entry with one worker) and ``stepsPerEpoch``.
    """

    fitSummary = None


def _materialize(dataset, inputCol, labelCol, loader, storeDir):
    """Write (x, label, fold) for every usable row to Parquet under ``storeDir`` once.

    :return: dict with the row counts, the sample shape and the label kind.
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT

    labelType = dataset.schema[labelCol].dataType
    if isinstance(labelType, VectorUDT):
        label, kind = vector_to_array(F.col(labelCol), "float32"), "onehot"
    elif isinstance(labelType, IntegralType):
        label, kind = F.col(labelCol).cast("int"), "index"
    else:
        raise TypeError(f"labelCol {labelCol!r} must be a one-hot ML vector (dense or sparse) "
                        f"or an integer class index, got {labelType.simpleString()}")
    loaded = dataset.select(
        _loadUdf(loader)(F.col(inputCol)).alias("_loaded"), label.alias("label"),
        # a fixed split of the rows for validation_split, stable across epochs and tasks
        (F.abs(F.xxhash64(F.col(inputCol))) % 1000).cast("int").alias("fold"))
    # Small row groups keep a training task's read buffer small; "loaded" lets the counts
    # below read no tensor column at all.
    loaded.select(F.col("_loaded.x").alias("x"), F.col("_loaded.error").alias("error"),
                  F.col("_loaded.x").isNotNull().alias("loaded"), "label", "fold") \
        .write.mode("overwrite").option("parquet.block.size", 16 * 1024 * 1024).parquet(storeDir)
    stored = dataset.sparkSession.read.parquet(storeDir).select("loaded", "error", "label")
    counts = stored.select(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("error").isNotNull().cast("int")).alias("loaderErrors"),
        F.sum((F.col("error").isNull() & ~F.col("loaded")).cast("int")).alias("nullUris"),
        F.sum((F.col("error").isNull() & F.col("loaded") & F.col("label").isNull())
              .cast("int")).alias("nullLabels"),
    ).first().asDict()
    counts = {k: int(v or 0) for k, v in counts.items()}
    counts["usable"] = counts["rows"] - counts["loaderErrors"] - counts["nullUris"] - counts["nullLabels"]
    return counts, kind


def _loadUdf(loader):
    from typing import Iterator

    import pyarrow as pa

    @F.arrow_udf("struct<x:array<float>,error:string>")
    def load(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        import numpy as np

        from sparkdl.engine.model_cache import freezeWorkerHeap
        from sparkdl.image.arrow import iterChunks

        freezeWorkerHeap()
        for uris in iterChunks(batches, 64):
            xs, errors = [], []
            for uri in uris.to_pylist():
                x = error = None
                if uri is not None:
                    try:
                        x = np.asarray(loader(uri), np.float32).ravel()
                    except Exception as e:  # the user's loader: keep the reason, skip the row
                        error = f"imageLoader failed: {type(e).__name__}: {e}"
                xs.append(x)
                errors.append(error)
            yield pa.StructArray.from_arrays(
                [pa.array(xs, pa.list_(pa.float32())), pa.array(errors, pa.string())],
                names=["x", "error"])

    return load


def _usableRows(storeDir, validation, cut):
    """The store's row groups in a fixed order (files by path, row groups in file order), each
    with the positions of its usable rows in the training (or validation) fold.

    Reads only the small columns: the tensor column is read by :func:`_readRows`.
    """
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    plan = []
    data = ds.dataset(storeDir, format="parquet")
    for fragment in sorted(data.get_fragments(), key=lambda f: f.path):
        for group in fragment.split_by_row_group():
            t = group.to_table(columns=["error", "loaded", "label", "fold"])
            inFold = (pc.less(t["fold"], cut) if validation
                      else pc.greater_equal(t["fold"], cut))
            usable = pc.and_(pc.and_(pc.is_null(t["error"]), t["loaded"]),
                             pc.and_(pc.is_valid(t["label"]), inFold))
            plan.append((group, np.flatnonzero(usable.to_numpy(zero_copy_only=False))))
    return plan


def _shard(plan, rank, size):
    """Rank ``rank``'s part of ``plan`` (from :func:`_usableRows`): the ``rank``-th of
    ``size`` contiguous ranges of the usable rows in plan order, sizes differing by at most
    one row. The shards are disjoint, cover every usable row, and each rank reads only the row
    groups its range touches."""
    total = sum(len(positions) for _, positions in plan)
    lo, hi = total * rank // size, total * (rank + 1) // size
    part, start = [], 0
    for group, positions in plan:
        a, b = max(lo - start, 0), min(hi - start, len(positions))
        if a < b:
            part.append((group, positions[a:b]))
        start += len(positions)
    return part


def _readRows(part, inputShape, kind):
    """Yield (x, y) numpy batches of the rows of ``part``, one row group at a time."""
    import numpy as np

    for group, positions in part:
        t = group.to_table(columns=["x", "label"]).take(positions)
        x = t.column("x").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        x = x.reshape((len(t),) + inputShape)
        label = t.column("label").combine_chunks()
        y = (label.flatten().to_numpy(zero_copy_only=False).reshape(len(t), -1)
             if kind == "onehot" else label.to_numpy(zero_copy_only=False))
        yield x.astype(np.float32, copy=False), y


def _tfDataset(part, inputShape, kind, batchSize, shuffleSeed=None, repeat=False):
    """A tf.data pipeline streaming ``part``'s rows in batches of ``batchSize``; shuffled
    within a bounded buffer when ``shuffleSeed`` is given (memory is the batch's, not the
    data's); endless with ``repeat`` (cycling through the rows)."""
    import tensorflow as tf

    ySpec = (tf.TensorSpec((None, None), tf.float32) if kind == "onehot"
             else tf.TensorSpec((None,), tf.int32))
    spec = (tf.TensorSpec((None,) + inputShape, tf.float32), ySpec)
    d = tf.data.Dataset.from_generator(lambda: _readRows(part, inputShape, kind),
                                       output_signature=spec).unbatch()
    if shuffleSeed is not None:
        d = d.shuffle(4 * batchSize, seed=shuffleSeed)
    if repeat:
        d = d.repeat()
    return d.batch(batchSize).prefetch(1)


def _prepareTraining(modelBytes, safeMode, optimizer, loss, fitParams, seed, distributed):
    """Set up TensorFlow and compile the model; return (model, fit arguments, batch size,
    validation split, shuffle)."""
    from sparkdl.engine import runtime
    from sparkdl.engine.handle import modelFromBytes

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


def _trainOne(modelBytes, safeMode, storeDir, optimizer, loss, fitParams, kind, seed):
    """Runs inside a Spark task: stream the stored rows into model.fit, return the weights."""
    from sparkdl.engine.handle import modelToBytes

    model, fitParams, batchSize, cut, shuffle = _prepareTraining(
        modelBytes, safeMode, optimizer, loss, fitParams, seed, distributed=False)
    inputShape = tuple(model.inputs[0].shape[1:])
    train = _usableRows(storeDir, False, cut)
    rows = sum(len(p) for _, p in train)
    timer = _EpochTimer()
    history = model.fit(
        _tfDataset(train, inputShape, kind, batchSize, seed % 2**32 if shuffle else None),
        validation_data=(_tfDataset(_usableRows(storeDir, True, cut), inputShape, kind,
                                    batchSize) if cut else None),
        callbacks=[timer], shuffle=False, **fitParams)  # tf.data shuffles, not Keras
    result = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    result["epoch_seconds"] = timer.seconds
    steps = fitParams.get("steps_per_epoch") or -(-rows // batchSize)
    return modelToBytes(model), result, {"workerRows": [rows], "stepsPerEpoch": int(steps)}


def _trainRank(modelBytes, safeMode, storeDir, optimizer, loss, fitParams, kind, seed):
    """Runs in each HorovodRunner rank: train on this rank's shard with gradients averaged
    over all ranks; rank 0 returns the weights, others None."""
    from sparkdl import horovod as shvd
    from sparkdl.engine.handle import modelToBytes

    rank, size = shvd.rank(), shvd.size()
    model, fitParams, batchSize, cut, shuffle = _prepareTraining(
        modelBytes, safeMode, optimizer, loss, fitParams, seed + rank, distributed=True)
    from sparkdl.horovod.tensorflow.keras import BroadcastGlobalVariablesCallback, LogCallback

    inputShape = tuple(model.inputs[0].shape[1:])
    plan = _usableRows(storeDir, False, cut)
    workerRows = [sum(len(p) for _, p in _shard(plan, r, size)) for r in range(size)]
    if min(workerRows) == 0:
        raise ValueError(f"numWorkers={size} needs at least {size} usable training rows, "
                         f"got {sum(workerRows)}")
    # Every rank must run the same number of steps (each step averages gradients over all
    # ranks): each cycles through its shard endlessly, the same steps per epoch everywhere.
    steps = int(fitParams.pop("steps_per_epoch", None)
                or max(1, sum(workerRows) // (size * batchSize)))
    verbose = fitParams.pop("verbose", 1)
    validation = None
    if rank == 0 and cut:
        # Only rank 0 validates, on the whole validation fold (no collective ops involved).
        validation = _tfDataset(_usableRows(storeDir, True, cut), inputShape, kind, batchSize)
    timer = _EpochTimer()
    callbacks = [BroadcastGlobalVariablesCallback(0), _MetricAverage(), timer]
    if rank == 0 and verbose:
        callbacks.append(LogCallback())
    history = model.fit(
        _tfDataset(_shard(plan, rank, size), inputShape, kind, batchSize,
                   (seed + rank) % 2**32 if shuffle else None, repeat=True),
        validation_data=validation, steps_per_epoch=steps, callbacks=callbacks,
        verbose=verbose if rank == 0 else 0, shuffle=False, **fitParams)
    if rank != 0:
        return None
    result = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    result["epoch_seconds"] = timer.seconds
    return modelToBytes(model), result, {"workerRows": workerRows, "stepsPerEpoch": steps}


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


def _EpochTimer():
    """A Keras callback recording each epoch's wall time (for fitSummary and benchmarks)."""
    import time

    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


class _FitMultipleIterator:
    """Thread-safe iterator of (index, model): the first ``next`` trains every param map at
    once, one Spark task each; later calls hand out the results."""

    def __init__(self, train, count):
        self._train = train
        self._count = count
        self._results = None
        self._next = 0
        self._lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            if self._results is None:
                self._results = self._train()
            if self._next >= self._count:
                raise StopIteration
            index = self._next
            self._next += 1
        return index, self._results[index]


class KerasImageFileEstimator(Estimator, _EstimatorParams, SparkDLReadable, SparkDLWritable):
    """Trains a Keras image model (a ``.keras`` file on the driver) on the images named by
    ``inputCol`` and the labels in ``labelCol``; ``fit`` returns a
    :class:`KerasImageFileModel`, which transforms like
    :class:`sparkdl.KerasImageFileTransformer`.

    Data path: ``fit`` runs ``imageLoader`` on the executors and writes its outputs with the
    labels once to Parquet under ``storeDir``; each training task streams them from there in
    batches (``tf.data``, bounded shuffle buffer). Nothing is collected to the driver, and
    training memory is bounded by the batch, not by the dataset. Train and serve use the
    same ``imageLoader`` and the same channel order.

    Labels: a one-hot ML vector (dense or sparse) with a dense loss such as
    ``categorical_crossentropy``, or an integer class index with a sparse loss such as
    ``sparse_categorical_crossentropy``. Rows whose loader fails or whose label is null are
    skipped and counted (logged, and in the model's ``fitSummary``); no usable row is an
    error.

    ``fitMultiple`` trains all param maps in parallel, one Spark task each (so
    ``CrossValidator``/``TrainValidationSplit`` train their grids concurrently); param maps
    may change ``kerasOptimizer``, ``kerasLoss``, ``kerasFitParams``, ``outputCol`` and
    ``outputMode``. The trained models return to the driver together as task results, so the
    driver needs about *model size x param maps* within ``spark.driver.memory`` and
    ``spark.driver.maxResultSize`` (a warning is logged past half of either).

    ``seed`` (default: derived from the class name as in Spark ML, and the same in every
    process) seeds Keras's random generators and the shuffle in each training
    task, so the same data in the same order, model and params train the same weights. (A
    shuffle upstream, such as ``repartition``, may order rows differently in each run.)

    ``numWorkers`` (default 1: one Spark task per model) > 1 trains each model data-parallel
    on that many processes with :class:`sparkdl.HorovodRunner` (``backend="auto"``): they
    start from the same weights, each streams its own shard of the usable training rows (a
    contiguous range, sizes differing by at most one row) and every step applies the
    gradients averaged over all of them (:mod:`sparkdl.horovod.tensorflow.keras`).

    - ``batch_size`` in ``kerasFitParams`` is then per worker (the Horovod convention): a
      step trains on ``numWorkers * batch_size`` rows. The learning rate is not scaled.
    - Every worker runs the same number of steps per epoch, ``steps_per_epoch`` if given,
      else ``usable training rows // (numWorkers * batch_size)`` (at least 1); each cycles
      through its shard, so an epoch boundary need not be a shard boundary.
    - With ``validation_split``, worker 0 validates on the whole validation fold; the
      training metrics in the history are averaged over the workers.
    - The cluster needs ``numWorkers`` free task slots at once (a barrier job): with fewer
      slots in total, ``fit`` fails at once saying how many there are. ``fitMultiple`` then
      trains its param maps one after another, each a HorovodRunner job.
    - ``fitSummary`` adds ``numWorkers``, ``workerRows`` (rows per worker's shard) and
      ``stepsPerEpoch``.

    >>> from sparkdl import KerasImageFileEstimator
    >>> estimator = KerasImageFileEstimator(
    ...     inputCol="uri", outputCol="prediction", labelCol="label", imageLoader=loader,
    ...     modelFile="/tmp/cnn.keras", kerasOptimizer="adam",
    ...     kerasLoss="sparse_categorical_crossentropy",
    ...     kerasFitParams={"epochs": 5, "batch_size": 32})               # doctest: +SKIP
    >>> model = estimator.fit(train)                                      # doctest: +SKIP
    >>> model.transform(test).select("uri", "prediction").show()           # doctest: +SKIP
    >>> model.save("/tmp/cnn-model")                                      # doctest: +SKIP
    """

    @keyword_only
    def __init__(self, inputCol=None, outputCol=None, outputMode="vector", labelCol=None,
                 modelFile=None, imageLoader=None, kerasOptimizer="adam", kerasLoss=None,
                 kerasFitParams=None, batchSize=64, safeMode=True, storeDir=None, seed=None,
                 numWorkers=1):
        super().__init__()
        self._setDefault(outputMode="vector", kerasOptimizer="adam",
                         kerasFitParams={"verbose": 1}, batchSize=64, safeMode=True,
                         numWorkers=1)
        # PySpark's HasSeed default, hash(class name), changes with every Python process
        # (string hashing is randomized), so two runs of one script trained different models.
        self._setDefault(seed=DEFAULT_SEED)
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        self._set(**kwargs)

    @keyword_only
    def setParams(self, inputCol=None, outputCol=None, outputMode="vector", labelCol=None,
                  modelFile=None, imageLoader=None, kerasOptimizer="adam", kerasLoss=None,
                  kerasFitParams=None, batchSize=64, safeMode=True, storeDir=None, seed=None,
                  numWorkers=1):
        """Sets params for this KerasImageFileEstimator."""
        return self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    _blobParams = {**HasKerasModel._blobParams, "imageLoader": "pickle"}

    def _validate(self, dataset, paramMaps):
        for name in ("inputCol", "labelCol", "outputCol", "kerasLoss"):
            if not self.isDefined(self.getParam(name)):
                raise ValueError(f"{name} must be set")
        if self.getImageLoader() is None:
            raise ValueError("imageLoader must be set to a function uri -> numpy array "
                             "(the model's input, preprocessed)")
        for col, param in ((self.getInputCol(), "inputCol"), (self.getLabelCol(), "labelCol")):
            if col not in dataset.columns:
                raise ValueError(f"{param} {col!r} is not a column of the DataFrame "
                                 f"{dataset.columns}")
        if not isinstance(dataset.schema[self.getInputCol()].dataType, StringType):
            raise TypeError(f"inputCol {self.getInputCol()!r} must hold image URIs (string), "
                            f"got {dataset.schema[self.getInputCol()].dataType.simpleString()}")
        for paramMap in paramMaps:
            names = {p.name for p in paramMap}
            if names - set(TUNABLE_PARAMS):
                raise ValueError(f"param maps may only change {list(TUNABLE_PARAMS)}, got "
                                 f"{sorted(names - set(TUNABLE_PARAMS))}")

    def _checkLossForLabels(self, loss, kind):
        if kind == "index" and loss in _DENSE_ONLY_LOSSES:
            raise ValueError(f"kerasLoss {loss!r} needs one-hot vector labels, but labelCol "
                             f"{self.getLabelCol()!r} holds class indices: use "
                             "'sparse_categorical_crossentropy'")
        if kind == "onehot" and loss in _SPARSE_LOSSES:
            raise ValueError(f"kerasLoss {loss!r} needs integer class labels, but labelCol "
                             f"{self.getLabelCol()!r} holds vectors: use "
                             "'categorical_crossentropy'")

    def _fit(self, dataset):
        return next(self.fitMultiple(dataset, [{}]))[1]

    def fitMultiple(self, dataset, paramMaps):
        """Fits a model per param map, in parallel Spark tasks (with ``numWorkers`` > 1: one
        HorovodRunner job after another); returns a thread-safe iterator of
        ``(index, model)``."""
        paramMaps = list(paramMaps)
        self._validate(dataset, paramMaps)
        estimators = [self.copy(paramMap) for paramMap in paramMaps]

        def train():
            return self._trainAll(dataset, estimators)

        return _FitMultipleIterator(train, len(paramMaps))

    def _storeDir(self, spark):
        if self.isDefined(self.storeDir):
            return self.getOrDefault(self.storeDir), False
        base = spark.conf.get("spark.local.dir", None) or tempfile.gettempdir()
        return os.path.join(base.split(",")[0], f"sparkdl-fit-{uuid.uuid4().hex}"), True

    def _trainAll(self, dataset, estimators):
        spark = dataset.sparkSession
        numWorkers = self.getNumWorkers()
        if numWorkers > 1:
            # HorovodRunner's own check, before the data is materialized: with fewer task
            # slots than numWorkers it fails at once, saying how many there are.
            import time

            from sparkdl.horovod.runner import _check_cluster

            _check_cluster(spark.sparkContext, numWorkers, time.monotonic() + 600)
        storeDir, temporary = self._storeDir(spark)
        try:
            counts, kind = _materialize(dataset, self.getInputCol(), self.getLabelCol(),
                                        self.getImageLoader(), storeDir)
            skipped = {k: counts[k] for k in ("loaderErrors", "nullUris", "nullLabels")}
            if counts["usable"] == 0:
                raise ValueError(f"no usable training rows in {counts['rows']} rows "
                                 f"(skipped: {skipped})")
            if any(skipped.values()):
                logger.warning("KerasImageFileEstimator skips %s of %s rows: %s",
                               sum(skipped.values()), counts["rows"], skipped)
            for est in estimators:
                est._checkLossForLabels(est.getKerasLoss(), kind)
            modelBytes = self._kerasModelBytes()
            # trained models return to the driver together, all param maps at once
            from sparkdl.estimators.driver_memory import checkDriverMemory

            checkDriverMemory(spark, len(modelBytes), len(estimators) if numWorkers == 1 else 1)
            jobs = [(i, est.getKerasOptimizer(), est.getKerasLoss(), est.getKerasFitParams())
                    for i, est in enumerate(estimators)]
            safeMode = self.getSafeMode()
            seed = self.getSeed()
            if numWorkers > 1:
                results = self._trainDistributed(jobs, modelBytes, safeMode, storeDir, kind,
                                                 seed, numWorkers)
            else:
                bc = spark.sparkContext.broadcast(modelBytes)

                def run(job):
                    i, optimizer, loss, fitParams = job
                    return i, _trainOne(bc.value, safeMode, storeDir, optimizer, loss,
                                        fitParams, kind, seed)

                results = dict(spark.sparkContext.parallelize(jobs, len(jobs)).map(run)
                               .collect())
                bc.unpersist()
        finally:
            if temporary:
                shutil.rmtree(storeDir, ignore_errors=True)
        models = []
        for i, est in enumerate(estimators):
            weights, history, info = results[i]
            model = KerasImageFileModel(
                inputCol=est.getInputCol(), outputCol=est.getOutputCol(),
                imageLoader=est.getImageLoader(), outputMode=est.getOutputMode(),
                batchSize=est.getBatchSize(), safeMode=est.getSafeMode())
            model._set(modelBytes=weights)
            model.fitSummary = dict(counts, history=history, numWorkers=numWorkers, **info)
            models.append(model)
        return models

    @staticmethod
    def _trainDistributed(jobs, modelBytes, safeMode, storeDir, kind, seed, numWorkers):
        """One HorovodRunner job per param map, one after another (each takes numWorkers
        task slots at once)."""
        from sparkdl.horovod import HorovodRunner

        results = {}
        for i, optimizer, loss, fitParams in jobs:
            runner = HorovodRunner(np=numWorkers, driver_log_verbosity="log_callback_only")
            results[i] = runner.run(_trainRank, modelBytes=modelBytes, safeMode=safeMode,
                                    storeDir=storeDir, optimizer=optimizer, loss=loss,
                                    fitParams=fitParams, kind=kind, seed=seed)
        return results
