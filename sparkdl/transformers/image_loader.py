"""ImageLoader: a column of image URIs -> a column of Spark image structs."""
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.sql import functions as F

from sparkdl.param.persistence import SparkDLReadable, SparkDLWritable
from sparkdl.param.shared import HasErrorCol, HasImageLoader, HasResizeMethod, HasTargetSize
from sparkdl.transformers.stage import checkStringColumn

__all__ = ["ImageLoader"]


class ImageLoader(
    Transformer,
    HasInputCol,
    HasOutputCol,
    HasErrorCol,
    HasImageLoader,
    HasTargetSize,
    HasResizeMethod,
    SparkDLReadable,
    SparkDLWritable,
):
    """Loads the images named by ``inputCol`` (paths or URIs) into ``outputCol``, a column of
    Spark's image struct (BGR(A), as ``spark.read.format("image")`` gives).

    Files are read on the executors (local paths directly, other URIs through ``pyarrow.fs``)
    and decoded like :func:`sparkdl.readImages`. With ``imageLoader``, that function
    (``uri -> RGB(A) array``, uint8 or float32) is called instead; its result is stored in
    the struct's BGR(A) order. ``targetSize=(height, width)`` resizes with ``resizeMethod``.

    A file that cannot be read or decoded, or a loader that raises, gives Spark's
    invalid-image row (height = width = nChannels = mode = -1) with the reason in
    ``errorCol``; a null URI gives a null image. The job never fails for one bad file. An
    existing string ``errorCol`` (e.g. ``readImages``' ``error``) is kept and appended to.

    >>> from sparkdl import ImageLoader
    >>> paths = spark.createDataFrame([("python/tests/resources/images/rgb.png",)], ["uri"])
    >>> loader = ImageLoader(inputCol="uri", outputCol="image", targetSize=[32, 48])
    >>> loader.transform(paths).select("image.height", "image.width").first()
    Row(height=32, width=48)
    >>> loader.save("/tmp/image-loader")
    >>> ImageLoader.load("/tmp/image-loader").getTargetSize()
    [32, 48]
    """

    _blobParams = {"imageLoader": "pickle"}

    @keyword_only
    def __init__(
        self,
        inputCol=None,
        outputCol=None,
        errorCol="error",
        imageLoader=None,
        targetSize=None,
        resizeMethod="bilinear",
    ):
        super().__init__()
        self._setDefault(errorCol="error", imageLoader=None, targetSize=None, resizeMethod="bilinear")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        inputCol=None,
        outputCol=None,
        errorCol="error",
        imageLoader=None,
        targetSize=None,
        resizeMethod="bilinear",
    ):
        """Sets params for this ImageLoader."""
        return self._set(**self._input_kwargs)

    def setInputCol(self, value):
        return self._set(inputCol=value)

    def setOutputCol(self, value):
        return self._set(outputCol=value)

    def _transform(self, dataset):
        inputCol = self.getInputCol()
        checkStringColumn(dataset, inputCol, "inputCol")
        from sparkdl.image.reader import loadUrisUdf

        self._checkErrorCol(dataset, self.getOutputCol())  # an existing one is appended to
        udf = loadUrisUdf(self.getImageLoader(), self.getTargetSize(), self.getResizeMethod())
        tmp = f"__{self.uid}_decoded"
        loaded = (dataset.withColumn(tmp, udf(F.col(inputCol)))
                  .withColumn(self.getOutputCol(), F.col(f"{tmp}.image")))
        return self._withErrorCol(loaded, F.col(f"{tmp}.error")).drop(tmp)
