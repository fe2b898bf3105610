"""KerasImageFileEstimator: Keras training as a Spark ML Estimator whose data never visits
the driver, and whose fitted model serves through the same loader and engine it trained with.

This module holds the params and the stages; the data store is
:mod:`sparkdl.estimators.store`, the training loop :mod:`sparkdl.estimators.training`.
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

from sparkdl.param.persistence import SparkDLReadable, SparkDLWritable
from sparkdl.param.shared import HasBatchSize, HasImageLoader
from sparkdl.transformers.keras_image import KerasImageFileTransformer
from sparkdl.transformers.stage import (HasKerasModel, HasOutputMode, checkColumn,
                                        checkStringColumn)

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
                       HasBatchSize, HasSeed, HasOutputMode):
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
    storeDir = Param(Params._dummy(), "storeDir",
                     "directory where fit materializes the training data once: a local or "
                     "HDFS path (written by Spark) or an object store URI such as "
                     "s3://bucket/dir or s3a://bucket/dir (written through pyarrow); must be "
                     "readable by every executor. Default: a temporary directory under "
                     "spark.local.dir, removed after fit",
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

    Before any training, ``fit`` checks the data against the model and fails with one line
    naming the column: ``imageLoader``'s arrays for the first few labelled rows must have the
    model's input shape; with a sparse loss every usable label must be a class index of the
    model's output, and one-hot labels must be as wide as the output.

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
        checkStringColumn(dataset, self.getInputCol(), "inputCol")
        checkColumn(dataset, self.getLabelCol(), "labelCol")
        for paramMap in paramMaps:
            names = {p.name for p in paramMap}
            if names - set(TUNABLE_PARAMS):
                raise ValueError(f"param maps may only change {list(TUNABLE_PARAMS)}, got "
                                 f"{sorted(names - set(TUNABLE_PARAMS))}")

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
        from sparkdl.engine.image_file_udf import modelShapes
        from sparkdl.estimators.checks import checkLabels, checkLoaderShape
        from sparkdl.estimators.store import materialize
        from sparkdl.estimators.training import checkSlots, trainJobs

        numWorkers = self.getNumWorkers()
        checkSlots(spark, numWorkers)  # before the data is materialized
        handle = self._kerasModelHandle(spark)
        shapes = handle.inspect(modelShapes)
        inputShape, outputShape = ((shapes[0][0], shapes[1][0]) if shapes and
                                   len(shapes[0]) == 1 and len(shapes[1]) == 1 else (None, None))
        # before the data is materialized: a sample of the loader's arrays
        checkLoaderShape(dataset, self.getInputCol(), self.getLabelCol(), self.getImageLoader(),
                         inputShape)
        storeDir, temporary = self._storeDir(spark)
        try:
            counts, kind = materialize(dataset, self.getInputCol(), self.getLabelCol(),
                                       self.getImageLoader(), storeDir)
            skipped = {k: counts[k] for k in ("loaderErrors", "nullUris", "nullLabels")}
            if counts["usable"] == 0:
                raise ValueError(f"no usable training rows in {counts['rows']} rows "
                                 f"(skipped: {skipped})")
            if any(skipped.values()):
                logger.warning("KerasImageFileEstimator skips %s of %s rows: %s",
                               sum(skipped.values()), counts["rows"], skipped)
            for est in estimators:  # every usable row's label, before any training
                checkLabels(counts, kind, est.getKerasLoss(), outputShape, self.getLabelCol())
            # trained models return to the driver together, all param maps at once
            from sparkdl.estimators.driver_memory import checkDriverMemory

            checkDriverMemory(spark, handle.size, len(estimators) if numWorkers == 1 else 1)
            jobs = [(i, est.getKerasOptimizer(), est.getKerasLoss(), est.getKerasFitParams())
                    for i, est in enumerate(estimators)]
            results = trainJobs(spark, jobs, handle, storeDir, kind, self.getSeed(), numWorkers)
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
