"""KerasTransformer: a user's Keras model applied to array column(s)."""
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasInputCols, HasOutputCol

from sparkdl.param.persistence import SparkDLReadable, SparkDLWritable
from sparkdl.param.shared import HasBatchSize
from sparkdl.transformers.stage import HasKerasModel, checkColumn

__all__ = ["KerasTransformer"]


class KerasTransformer(Transformer, HasInputCol, HasInputCols, HasOutputCol, HasKerasModel,
                       HasBatchSize, SparkDLReadable, SparkDLWritable):
    """Applies a Keras model (a ``.keras`` or legacy ``.h5`` file on the driver) to array
    columns: each row's arrays are the model's input tensors, ``outputCol`` is the model's
    output for that row, flattened, as ``array<float>``.

    - ``inputCol`` for a single-input model; ``inputCols`` (one column per model input, in
      the order of ``model.inputs``) for a multi-input model.
    - A column is an array of integers or floats (cast to the input's dtype), either *flat*
      (``prod(shape)`` values in C order, e.g. 24 values for an input of shape ``(3, 4, 2)``)
      or *nested* with one level per dimension (``array<array<array<float>>>``); an ML
      ``Vector`` column counts as flat.
    - A null row, a null element, or an array of the wrong length gives a null output; the
      job does not fail. A row of a multi-input model is predicted only when all its inputs
      are valid.
    - The model must have one output and fully known input shapes (except the batch
      dimension); column types and ranks are checked against ``model.inputs`` when
      ``transform`` is called, before any Spark job.
    - The model is read and checked on the driver once, shipped to the executors once
      (broadcast), loaded once per Python worker, and run with ``predict_on_batch`` on
      ``batchSize`` rows at a time (None, the default: as many rows as fit in 16 MiB of
      input, at most the Arrow batch Spark sends: 4096 rows from Parquet, else
      ``spark.sql.execution.arrow.maxRecordsPerBatch``). Keras ``safe_mode`` is on: a model with a Lambda layer
      holding Python bytecode is refused unless ``safeMode=False`` (only for trusted files).
    - ``save``/``load`` (alone or in a ``PipelineModel``) carry the model's bytes: the loaded
      stage no longer reads ``modelFile``.

    >>> import keras, numpy as np
    >>> from sparkdl import KerasTransformer
    >>> model = keras.Sequential([keras.Input((4, 6)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(3)])
    >>> model.save("/tmp/mlp.keras")
    >>> df = spark.createDataFrame([(np.ones((4, 6)).tolist(),)], "x array<array<float>>")
    >>> transformer = KerasTransformer(inputCol="x", outputCol="y", modelFile="/tmp/mlp.keras")
    >>> len(transformer.transform(df).first().y)
    3
    >>> transformer.write().overwrite().save("/tmp/keras-transformer")
    >>> KerasTransformer.load("/tmp/keras-transformer").transform(df).count()
    1
    """

    _blobParams = dict(HasKerasModel._blobParams)

    @keyword_only
    def __init__(self, inputCol=None, outputCol=None, modelFile=None, batchSize=None,
                 inputCols=None, safeMode=True):
        super().__init__()
        self._setDefault(batchSize=None, safeMode=True)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, inputCol=None, outputCol=None, modelFile=None, batchSize=None,
                  inputCols=None, safeMode=True):
        """Sets params for this KerasTransformer."""
        return self._set(**self._input_kwargs)

    def _inputColumnNames(self):
        """``[(param, column), ...]`` from inputCol or inputCols (exactly one must be set)."""
        hasCol, hasCols = self.isSet(self.inputCol), self.isSet(self.inputCols)
        if hasCol and hasCols:
            raise ValueError("set either inputCol (single-input model) or inputCols "
                             "(multi-input model), not both")
        if hasCol:
            return [("inputCol", self.getInputCol())]
        if hasCols and self.getInputCols():
            return [(f"inputCols[{k}]", c) for k, c in enumerate(self.getInputCols())]
        raise ValueError("inputCol (single-input model) or inputCols (multi-input model) "
                         "must be set")

    def _transform(self, dataset):
        from sparkdl.engine.tensor_udf import signatureOf, tensorColumn, tensorModelUdf

        columns = self._inputColumnNames()
        for param, column in columns:
            checkColumn(dataset, column, param)
        if not self.isDefined(self.outputCol):
            raise ValueError("outputCol must be set")
        handle = self._kerasModelHandle(dataset.sparkSession)
        try:
            inputs = handle.inspect(signatureOf).inputs
        except ValueError as e:
            raise ValueError(f"modelFile {self._modelDescription()}: {e}") from e
        if len(inputs) != len(columns):
            expected = [f"{i.name} {i.shape}" for i in inputs]
            raise ValueError(
                f"the model takes {len(inputs)} input(s) {expected} but "
                f"{'inputCols has' if self.isSet(self.inputCols) else 'inputCol gives'} "
                f"{len(columns)} column(s) {[c for _, c in columns]}; use inputCols with one "
                "column per model input, in model.inputs order")
        exprs = [tensorColumn(dataset, column, spec, param)
                 for (param, column), spec in zip(columns, inputs)]
        udf = tensorModelUdf(handle, inputs, self.getBatchSize(),
                             names=[f"{p} {c!r}" for p, c in columns])
        return dataset.withColumn(self.getOutputCol(), udf(*exprs))

    def _modelDescription(self):
        if self.isSet(self.modelBytes):
            return "(saved with the stage)"
        return repr(self.getModelFile()) if self.isSet(self.modelFile) else "(not set)"
