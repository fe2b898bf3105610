"""TFImageTransformer: an image column through a TensorFlow graph (a SavedModel signature)."""
import os

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.sql import functions as F

from sparkdl.engine.codec import CHANNEL_ORDERS
from sparkdl.param.persistence import SparkDLReadable, SparkDLWritable
from sparkdl.param.shared import HasBatchSize, HasResizeMethod, SparkDLTypeConverters
from sparkdl.transformers.stage import HasOutputMode, checkColumn, quoteColumn, withVectorColumn
from sparkdl.transformers.tf_tensor import toTFInputGraph

__all__ = ["TFImageTransformer"]


def _toGraph(value):
    """A TFInputGraph (or its bytes), a SavedModel directory, or a tf.Module / tf.function /
    concrete function -> TFInputGraph (read now, on the driver)."""
    from sparkdl.graph.input import TFInputGraph

    if value is None or isinstance(value, (TFInputGraph, bytes, bytearray, memoryview)):
        return toTFInputGraph(value)
    if isinstance(value, (str, os.PathLike)):
        return TFInputGraph.fromSavedModel(value)
    return TFInputGraph.fromFunction(value)


_toChannelOrder = SparkDLTypeConverters.oneOf("channelOrder", sorted(CHANNEL_ORDERS))


class TFImageTransformer(Transformer, HasInputCol, HasOutputCol, HasBatchSize, HasResizeMethod,
                         HasOutputMode, SparkDLReadable, SparkDLWritable):
    """Applies a TensorFlow graph to an image column (Spark's image struct, as
    :func:`sparkdl.readImages` gives).

    ``graph`` is a SavedModel directory (its ``serving_default`` signature, or its only one),
    a ``tf.Module`` / ``tf.function`` / concrete function (see
    :meth:`sparkdl.TFInputGraph.fromFunction`), or a
    :class:`~sparkdl.graph.input.TFInputGraph` for any other signature. It is read when set.
    ``inputTensor`` and ``outputTensor`` are signature keys (TF1's tensor names; ``"key:0"``
and TF1 tensor names the signature maps are accepted too); each may be
    left None when the signature has a single input / output. The signature must have a
    single input (a TF2 signature is always called with all its inputs).

    Each image is fed as float32 ``height x width x channels`` in ``channelOrder``, the order
    the graph expects, with its values as stored (0-255 for 8-bit images, no rescaling):
    alpha is dropped; 'BGR' is the struct's own order, 'RGB' swaps it, 'L' is
    ``0.299 R + 0.587 G + 0.114 B`` (ITU-R 601-2 luma, as Pillow's ``convert("L")`` but in
    float, unrounded); gray images are repeated to 3 channels for 'RGB'/'BGR'. The input must
    be ``(None, height, width, channels)`` with ``channels`` 1 for 'L' and 3 otherwise (or
    unknown). When the signature fixes height and width, images are first resized to them
    with Pillow (``resizeMethod``, bilinear by default; 8-bit images are resized as 8-bit);
    otherwise each image is fed at its own size.

    ``outputMode="vector"`` (default) gives ``outputTensor`` flattened per image as an ML
    ``DenseVector``; ``outputMode="image"`` gives a float32 image struct (the output must be
    ``(None, height, width[, 1|3|4])``, its channels in ``channelOrder``; stored in the
    struct's BGR order; the input's origin is kept). Null or invalid images give null.

    The graph's SavedModel bytes are broadcast once and loaded once per Python worker;
    ``save`` stores them in the stage, so a loaded stage needs no SavedModel directory.
    A SavedModel is a program (TensorFlow ops can read and write files): ``load`` only reads
    its bytes, and it runs on ``transform``; use stages from sources you trust
    (:doc:`/guide/security`).

    >>> import tensorflow as tf
    >>> from sparkdl import TFImageTransformer, readImages
    >>> from sparkdl.resources import samplesDir
    >>> @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
    ... def meanColor(image):
    ...     return {"mean": tf.reduce_mean(image, axis=[1, 2]) / 255.0}
    >>> t = TFImageTransformer(channelOrder="RGB", inputCol="image", outputCol="rgb",
    ...                        graph=meanColor)
    >>> t.transform(readImages(samplesDir())).select("rgb").first().rgb.size
    3
    >>> t.write().overwrite().save("/tmp/tf-image-transformer")
    >>> TFImageTransformer.load("/tmp/tf-image-transformer").getChannelOrder()
    'RGB'
    """

    channelOrder = Param(Params._dummy(), "channelOrder",
                         "channel order the graph expects: 'L' (gray), 'RGB' or 'BGR'",
                         typeConverter=_toChannelOrder)
    graph = Param(Params._dummy(), "graph",
                  "the TensorFlow graph: a SavedModel directory, a tf.Module, a tf.function, a "
                  "concrete function, or a TFInputGraph (read when set)",
                  typeConverter=_toGraph)
    inputTensor = Param(Params._dummy(), "inputTensor",
                        "signature input fed with the images (None: the only input)",
                        typeConverter=SparkDLTypeConverters.toOptionalString)
    outputTensor = Param(Params._dummy(), "outputTensor",
                         "signature output returned (None: the only output)",
                         typeConverter=SparkDLTypeConverters.toOptionalString)
    _blobParams = {"graph": "bytes"}

    @keyword_only
    def __init__(self, channelOrder=None, inputCol=None, outputCol=None, graph=None,
                 inputTensor=None, outputTensor=None, outputMode="vector", batchSize=64,
                 resizeMethod="bilinear"):
        super().__init__()
        self._setDefault(inputTensor=None, outputTensor=None, outputMode="vector",
                         batchSize=64, resizeMethod="bilinear")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, channelOrder=None, inputCol=None, outputCol=None, graph=None,
                  inputTensor=None, outputTensor=None, outputMode="vector", batchSize=64,
                  resizeMethod="bilinear"):
        """Sets params for this TFImageTransformer."""
        return self._set(**self._input_kwargs)

    def setChannelOrder(self, value):
        return self._set(channelOrder=value)

    def getChannelOrder(self):
        return self.getOrDefault(self.channelOrder)

    def setGraph(self, value):
        return self._set(graph=value)

    def getGraph(self):
        return self.getOrDefault(self.graph)

    def setInputTensor(self, value):
        return self._set(inputTensor=value)

    def getInputTensor(self):
        return self.getOrDefault(self.inputTensor)

    def setOutputTensor(self, value):
        return self._set(outputTensor=value)

    def getOutputTensor(self):
        return self.getOrDefault(self.outputTensor)

    @staticmethod
    def _pick(infos, name, param, lookup):
        if name is not None:
            return lookup(name, what=param)
        if len(infos) == 1:
            return infos[0]
        raise ValueError(f"{param} must be set: the signature has several; available: "
                         f"{sorted(i.name for i in infos)}")

    def _plan(self, dataset):
        """Check the params against the DataFrame and the signature (no Spark job)."""
        from sparkdl.engine.savedmodel import INPUT_DTYPES, outputSparkType
        from sparkdl.image.imageIO import imageSchema, isImageSchema

        for param in (self.channelOrder, self.graph, self.inputCol, self.outputCol):
            if not self.isDefined(param) or self.getOrDefault(param) is None:
                raise ValueError(f"{param.name} must be set")
        col = self.getInputCol()
        dataType = checkColumn(dataset, col, "inputCol")
        if not isImageSchema(dataType):
            raise TypeError(f"inputCol {col!r} must be an image struct {imageSchema.simpleString()}"
                            f" (see sparkdl.readImages), got {dataType.simpleString()}")
        graph = self.getGraph()
        order = self.getChannelOrder()
        inp = self._pick(graph.inputs, self.getInputTensor(), "inputTensor", graph.input)
        if len(graph.inputs) > 1:
            raise ValueError(
                f"signature {graph.signatureDefKey!r} has inputs {graph.inputNames}; a TF2 "
                "signature is called with all its inputs and TFImageTransformer feeds only "
                f"inputTensor {inp.name!r}: export a signature with that single input (or use "
                "TFTransformer for several)")
        out = self._pick(graph.outputs, self.getOutputTensor(), "outputTensor", graph.output)
        if inp.dtype not in INPUT_DTYPES:
            raise TypeError(f"inputTensor {inp.name!r} has dtype {inp.dtype}; images are fed as "
                            "numbers (float32, cast to the input's dtype)")
        size = None
        if inp.shape is not None:
            expected = f"(None, height, width, {CHANNEL_ORDERS[order]})"
            if len(inp.shape) != 4 or inp.shape[0] is not None:
                raise ValueError(f"inputTensor {inp.name!r} has shape {list(inp.shape)}; "
                                 f"channelOrder {order!r} images need {expected}")
            channels = inp.shape[3]
            if channels is not None and channels != CHANNEL_ORDERS[order]:
                raise ValueError(f"inputTensor {inp.name!r} takes {channels} channels but "
                                 f"channelOrder {order!r} gives {CHANNEL_ORDERS[order]}: the "
                                 f"input must be {expected}")
            height, width = inp.shape[1], inp.shape[2]
            if (height is None) != (width is None):
                raise ValueError(f"inputTensor {inp.name!r} has shape {list(inp.shape)}: fix "
                                 "both height and width (images are resized), or neither")
            if height is not None:
                size = (height, width)
        outputType = outputSparkType(out.dtype)
        if outputType is None:
            raise TypeError(f"outputTensor {out.name!r} has dtype {out.dtype}; numeric or bool "
                            "outputs only")
        if self.getOutputMode() == "image" and out.shape is not None and (
                len(out.shape) not in (3, 4) or (len(out.shape) == 4
                                                 and out.shape[3] not in (None, 1, 3, 4))):
            raise ValueError(f"outputMode 'image' needs outputTensor {out.name!r} of shape "
                             f"(None, height, width[, 1|3|4]), got {list(out.shape)}")
        return graph, inp.name, out.name, size, outputType

    def _transform(self, dataset):
        from sparkdl.engine.savedmodel import imageSignatureUdf
        from sparkdl.engine.shipping import handleFor, savedModel

        graph, inputName, outputName, size, outputType = self._plan(dataset)
        mode = self.getOutputMode()
        handle = handleFor(savedModel(graph), dataset.sparkSession)
        udf = imageSignatureUdf(handle, inputName, outputName, self.getChannelOrder(), size=size,
                                resizeMethod=self.getResizeMethod(), outputMode=mode,
                                outputType=outputType, batchSize=self.getBatchSize())
        result = udf(F.col(quoteColumn(self.getInputCol())))
        if mode == "image":
            return dataset.withColumn(self.getOutputCol(), result)
        if outputType not in ("float", "double"):
            result = result.cast("array<double>")
        return withVectorColumn(dataset, self.getOutputCol(), result)
