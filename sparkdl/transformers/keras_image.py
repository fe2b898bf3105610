"""KerasImageFileTransformer: a user's Keras image model applied to images named by URI."""
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.sql import functions as F

from sparkdl.param.persistence import SparkDLReadable, SparkDLWritable
from sparkdl.param.shared import HasBatchSize, HasErrorCol, HasImageLoader, HasRuntime
from sparkdl.transformers.stage import (HasKerasModel, HasOutputMode, checkImageModel,
                                        checkKerasModelFile, checkNewColumns, checkStringColumn,
                                        toOutputMode, withVectorColumn)

__all__ = ["KerasImageFileTransformer"]


class KerasImageFileTransformer(Transformer, HasInputCol, HasOutputCol, HasKerasModel,
                                HasImageLoader, HasBatchSize, HasErrorCol, HasOutputMode,
                                HasRuntime, SparkDLReadable, SparkDLWritable):
    """Applies a Keras image model (a ``.keras`` or legacy ``.h5`` file on the driver) to the
    images named by ``inputCol`` (paths or URIs, strings).

    ``imageLoader`` (``uri -> numpy array``, run on the executors) reads each image and
    returns the model's input for it, already preprocessed: ``H x W x C`` or
    ``1 x H x W x C``, RGB channel order, uint8 or float32 (cast to float32). The model is
    read once on the driver (Keras ``safe_mode=safeMode``), shipped to the executors once and
    cached per worker; images are predicted on in batches of ``batchSize``.

    ``outputMode="vector"`` (default): ``outputCol`` holds the model's output, flattened, as
    an ML ``DenseVector``. ``outputMode="image"``: the model's output must be
    ``H x W x C`` (C in 1, 3, 4, read as RGB(A)); ``outputCol`` holds it as a float32 image
    struct (CV_32FC1/3/4, stored in the struct's BGR(A) order like every image column).

    A null URI gives a null output. A loader that raises, or returns an array the model
    cannot take, gives a null output with the reason in ``errorCol``; the job goes on. An
    existing string ``errorCol`` (e.g. ``readImages``' ``error``) is kept and appended to.

    The column, ``modelFile`` (must exist; a SavedModel directory is refused with advice to
    use :class:`sparkdl.TFImageTransformer`), the model (one ``(batch, height, width,
    channels)`` input, and for ``outputMode="image"`` an image-shaped output) and
    ``imageLoader`` are checked when ``transform`` is called, before any Spark job. Saving
    the stage copies the model's bytes and the pickled ``imageLoader`` into it, so a saved
    stage does not need ``modelFile`` any more; as the ``imageLoader`` is code, loading it
    needs ``allowUserCode=True`` (see :doc:`/guide/security`).

    >>> import numpy as np
    >>> from PIL import Image
    >>> from sparkdl import KerasImageFileTransformer
    >>> def loader(uri):
    ...     img = Image.open(uri).convert("RGB").resize((224, 224))
    ...     return np.asarray(img, np.float32) / 255.0
    >>> transformer = KerasImageFileTransformer(inputCol="uri", outputCol="predictions",
    ...                                         modelFile="/tmp/model.keras", imageLoader=loader)
    >>> uris = spark.createDataFrame([("/data/cat.jpg",)], ["uri"])          # doctest: +SKIP
    >>> transformer.transform(uris).select("predictions", "error").show()    # doctest: +SKIP
    >>> transformer.save("/tmp/keras-image-transformer")                     # doctest: +SKIP
    >>> KerasImageFileTransformer.load("/tmp/keras-image-transformer",
    ...                                allowUserCode=True)                   # doctest: +SKIP
    """

    _blobParams = {**HasKerasModel._blobParams, "imageLoader": "pickle"}

    @keyword_only
    def __init__(self, inputCol=None, outputCol=None, modelFile=None, imageLoader=None,
                 outputMode="vector", batchSize=64, safeMode=True, errorCol="error",
                 runtime="tensorflow", precision="fp32"):
        super().__init__()
        self._setDefault(imageLoader=None, outputMode="vector", batchSize=64, safeMode=True,
                         errorCol="error")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, inputCol=None, outputCol=None, modelFile=None, imageLoader=None,
                  outputMode="vector", batchSize=64, safeMode=True, errorCol="error",
                  runtime="tensorflow", precision="fp32"):
        """Sets params for this KerasImageFileTransformer."""
        kwargs = self._input_kwargs
        if "modelFile" in kwargs:
            self.clear(self.modelBytes)
        return self._set(**kwargs)

    def _validateParams(self, dataset):
        if self.getImageLoader() is None:
            raise ValueError("imageLoader must be set to a function uri -> numpy array "
                             "(H x W x C, RGB, preprocessed as the model expects)")
        toOutputMode(self.getOutputMode())
        checkStringColumn(dataset, self.getInputCol(), "inputCol")
        checkNewColumns(dataset, outputCol=self.getOutputCol())
        self._checkErrorCol(dataset, self.getOutputCol())  # an existing string one is appended to
        if not self.isSet(self.modelBytes):
            checkKerasModelFile(self.getModelFile() if self.isSet(self.modelFile) else None,
                                "KerasImageFileTransformer")

    def _inputShape(self, handle):
        """The model's input shape (no batch dim), checked to be an image's; None if unknown."""
        from sparkdl.engine.image_file_udf import formatShape, modelShapes

        inputShape, out = checkImageModel(handle.inspect(modelShapes),
                                          "KerasImageFileTransformer", "modelFile's model")
        if self.getOutputMode() == "image" and out is not None:
            if len(out) not in (2, 3) or (len(out) == 3 and out[2] not in (1, 3, 4, None)):
                raise ValueError(f"outputMode='image' needs a model output of batch x height x "
                                 f"width x channels (1, 3 or 4 channels); modelFile's model "
                                 f"gives batch x {formatShape(out)}")
        return inputShape

    def _transform(self, dataset):
        from sparkdl.engine.image_file_udf import imageFileModelUdf

        self._validateParams(dataset)
        handle = self._kerasModelHandle(dataset.sparkSession).using(
            self.getRuntime(), self.getPrecision())
        udf = imageFileModelUdf(handle, self.getImageLoader(), self._inputShape(handle),
                                outputMode=self.getOutputMode(), batchSize=self.getBatchSize())
        tmp = f"__{self.uid}_result"
        result = dataset.withColumn(tmp, udf(F.col(self.getInputCol())))
        if self.getOutputMode() == "image":
            result = result.withColumn(self.getOutputCol(), F.col(f"{tmp}.output"))
        else:
            result = withVectorColumn(result, self.getOutputCol(), F.col(f"{tmp}.output"))
        return self._withErrorCol(result, F.col(f"{tmp}.error")).drop(tmp)
