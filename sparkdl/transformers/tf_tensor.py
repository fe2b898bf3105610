"""TFTransformer: numeric columns through a TensorFlow graph (a SavedModel signature)."""
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params
from pyspark.sql import functions as F

from sparkdl.param.persistence import SparkDLReadable, SparkDLWritable
from sparkdl.param.shared import HasBatchSize
from sparkdl.transformers.stage import checkColumn, quoteColumn

__all__ = ["TFTransformer", "toTFInputGraph"]


def toTFInputGraph(value):
    """Param converter: a :class:`sparkdl.graph.input.TFInputGraph`, or its ``bytes``."""
    from sparkdl.graph.input import TFInputGraph

    if value is None or isinstance(value, TFInputGraph):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return TFInputGraph.fromBytes(bytes(value))
    raise TypeError(f"expected a TFInputGraph (see TFInputGraph.fromSavedModel / fromFunction), "
                    f"got {type(value).__name__}")


def _toMapping(what):
    def convert(value):
        if value is None:
            return None
        if isinstance(value, (list, tuple)):  # [(key, value)], as the original accepted
            value = dict(value)
        if not isinstance(value, dict) or not value:
            raise TypeError(f"{what} must be a non-empty dict, got {value!r}")
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"{what} must map names to names (str -> str), got {k!r}: {v!r}")
        return dict(value)

    return convert


def _isInteger(dtype):
    return dtype.startswith(("int", "uint"))


class TFTransformer(Transformer, HasBatchSize, SparkDLReadable, SparkDLWritable):
    """Applies a TensorFlow graph to numeric columns: each row is fed to the graph's inputs
    and each wanted output becomes a column.

    The graph is a :class:`sparkdl.graph.input.TFInputGraph`: one SavedModel signature
    (``TFInputGraph.fromSavedModel``, ``fromSavedModelWithSignature`` or, for a TF2
    ``tf.function`` / ``tf.Module``, ``fromFunction``). Its inputs and outputs are named by
    their signature keys (the TF1 API's tensor names; a tensor name such as ``"x:0"`` is
accepted too, see :meth:`sparkdl.TFInputGraph.input`). ``inputMapping`` is
    ``{column: input name}`` and must feed every input of the signature; ``outputMapping`` is
    ``{output name: column}``.

    Columns may be numbers, arrays of numbers or arrays of arrays (byte, short, int, long,
    float, double), one row being one element of the graph's batch: a signature input of
    shape ``(None, d1, ..., dk)`` takes a column of rank ``k``, or a flat array of
    ``d1 * ... * dk`` values (row-major) when all of ``d1 ... dk`` are known. Values are cast to
    the input's dtype; a float column is refused for an integer input. Dimensions the
    signature leaves unknown are taken from the rows (rows of different shapes go in separate
    calls). Each output column is an ``array`` of the output's values for that row,
    flattened (``float`` for float16/32, ``double``, ``int`` for int8/16/32 and uint8/16,
    ``bigint`` for int64/uint32, ``boolean``); the output's first dimension must be the batch.

    A null row, a null element, a ragged array or a row of a shape the graph cannot take gives
    null outputs. Column types, names and ranks are checked at ``transform`` before any Spark
    job; errors name the column or the signature name and list the available ones.

    The graph's SavedModel bytes are broadcast once and loaded once per Python worker;
    ``save`` stores them in the stage, so a loaded stage needs no SavedModel directory.
    A SavedModel is a program (TensorFlow ops can read and write files): ``load`` only reads
    its bytes, and it runs on ``transform``; use stages from sources you trust
    (:doc:`/guide/security`).

    >>> import tensorflow as tf
    >>> from sparkdl import TFInputGraph, TFTransformer
    >>> @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    ... def f(x):
    ...     return {"sum": tf.reduce_sum(x, axis=1), "twice": 2 * x}
    >>> graph = TFInputGraph.fromFunction(f)
    >>> df = spark.createDataFrame([([1.0, 2.0],), (None,)], "v array<float>")
    >>> t = TFTransformer(tfInputGraph=graph, inputMapping={"v": "x"},
    ...                   outputMapping={"sum": "s", "twice": "t"})
    >>> t.transform(df).collect()
    [Row(v=[1.0, 2.0], s=[3.0], t=[2.0, 4.0]), Row(v=None, s=None, t=None)]
    >>> t.write().overwrite().save("/tmp/tf-transformer")
    >>> TFTransformer.load("/tmp/tf-transformer").getTFInputGraph() == graph
    True
    """

    tfInputGraph = Param(Params._dummy(), "tfInputGraph",
                         "the TensorFlow graph: a TFInputGraph (one SavedModel signature)",
                         typeConverter=toTFInputGraph)
    inputMapping = Param(Params._dummy(), "inputMapping",
                         "{column: signature input name}; must feed every input",
                         typeConverter=_toMapping("inputMapping"))
    outputMapping = Param(Params._dummy(), "outputMapping",
                          "{signature output name: column}",
                          typeConverter=_toMapping("outputMapping"))

    _blobParams = {"tfInputGraph": "bytes"}

    @keyword_only
    def __init__(self, tfInputGraph=None, inputMapping=None, outputMapping=None, batchSize=256):
        super().__init__()
        self._setDefault(batchSize=256)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, tfInputGraph=None, inputMapping=None, outputMapping=None, batchSize=256):
        """Sets params for this TFTransformer."""
        return self._set(**self._input_kwargs)

    def setTFInputGraph(self, value):
        return self._set(tfInputGraph=value)

    def getTFInputGraph(self):
        return self.getOrDefault(self.tfInputGraph)

    def setInputMapping(self, value):
        return self._set(inputMapping=value)

    def getInputMapping(self):
        return self.getOrDefault(self.inputMapping)

    def setOutputMapping(self, value):
        return self._set(outputMapping=value)

    def getOutputMapping(self):
        return self.getOrDefault(self.outputMapping)

    def _plan(self, dataset):
        """Check the params against the DataFrame and the signature (no Spark job) and return
        ``(graph, [(column, input name, depth, row shape)], [(output name, column, type)])``."""
        from sparkdl.engine.savedmodel import INPUT_DTYPES, columnElementType, outputSparkType

        for param in (self.tfInputGraph, self.inputMapping, self.outputMapping):
            if not self.isDefined(param) or self.getOrDefault(param) is None:
                raise ValueError(f"{param.name} must be set")
        graph = self.getTFInputGraph()
        feeds = []
        fed = {}
        for col, name in self.getInputMapping().items():
            checkColumn(dataset, col, "inputMapping column")
            info = graph.input(name, what=f"inputMapping {col!r} -> input")
            name = info.name  # the signature key, also when given as a tensor name ("x:0")
            if name in fed:
                raise ValueError(f"signature input {name!r} is fed by two columns, {fed[name]!r} "
                                 f"and {col!r}")
            fed[name] = col
            dataType = dataset.schema[col].dataType
            element = columnElementType(dataType)
            if element is None:
                raise TypeError(f"inputMapping column {col!r} must be numeric or an array (of "
                                f"arrays) of numbers, got {dataType.simpleString()}")
            depth, elementType = element
            if info.dtype not in INPUT_DTYPES:
                raise TypeError(f"signature input {name!r} has dtype {info.dtype}; TFTransformer "
                                f"feeds numeric inputs only ({sorted(INPUT_DTYPES)})")
            if _isInteger(info.dtype) and elementType.typeName() in ("float", "double"):
                raise TypeError(f"inputMapping column {col!r} is {dataType.simpleString()} but "
                                f"signature input {name!r} is {info.dtype}; cast the column to "
                                "an integer type first")
            feeds.append((col, name, depth, self._rowShape(col, depth, dataType, info)))
        missing = sorted(set(graph.inputNames) - set(fed))
        if missing:
            raise ValueError(f"inputMapping must feed every input of signature "
                             f"{graph.signatureDefKey!r}; not fed: {missing} (inputs: "
                             f"{graph.inputNames})")
        fetches, columns = [], {}
        for name, col in self.getOutputMapping().items():
            info = graph.output(name, what="outputMapping output")
            name = info.name
            sparkType = outputSparkType(info.dtype)
            if sparkType is None:
                raise TypeError(f"signature output {name!r} has dtype {info.dtype}, which has no "
                                "Spark array type here (numeric and bool outputs only)")
            if col in columns:
                raise ValueError(f"outputMapping sends outputs {columns[col]!r} and {name!r} to "
                                 f"the same column {col!r}")
            columns[col] = name
            fetches.append((name, col, sparkType))
        return graph, feeds, fetches

    @staticmethod
    def _rowShape(col, depth, dataType, info):
        """The per-row shape the engine feeds, checked against the column's rank."""
        if info.shape is None:
            return None  # unknown rank: the rows' own shapes
        if len(info.shape) == 0 or info.shape[0] is not None:
            raise ValueError(
                f"signature input {info.name!r} has shape {list(info.shape)}; TFTransformer "
                "needs a first (batch) dimension of None (export the graph with "
                "TensorSpec([None, ...]))")
        rowShape = tuple(info.shape[1:])
        if len(rowShape) == depth:
            return rowShape
        if depth == 1 and all(d is not None for d in rowShape):
            return rowShape  # flat rows, reshaped (row-major)
        raise ValueError(
            f"inputMapping column {col!r} ({dataType.simpleString()}, rank {depth}) cannot feed "
            f"signature input {info.name!r} of shape {list(info.shape)} (rows of shape "
            f"{list(rowShape)}): give a column of rank {len(rowShape)}"
            + (", or a flat array when every dimension is known" if rowShape else ""))

    def _transform(self, dataset):
        from sparkdl.engine.savedmodel import signatureUdf
        from sparkdl.engine.shipping import handleFor, savedModel

        graph, feeds, fetches = self._plan(dataset)
        udf = signatureUdf(handleFor(savedModel(graph), dataset.sparkSession),
                           [(name, depth, shape) for _, name, depth, shape in feeds],
                           [(name, sparkType) for name, _, sparkType in fetches],
                           batchSize=self.getBatchSize())
        tmp = f"__sparkdl_tf_{self.uid}"
        out = dataset.withColumn(tmp, udf(*[F.col(quoteColumn(col)) for col, _, _, _ in feeds]))
        out = out.withColumns({col: F.col(tmp).getField(f"_{i}")
                               for i, (_, col, _) in enumerate(fetches)})
        return out.drop(tmp)
