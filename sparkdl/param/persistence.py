"""Persistence for stages whose params include values JSON cannot hold.

JSON-able params go through pyspark's ``DefaultParamsWriter`` metadata as usual; the others
("blob params": model bytes, user functions) are stored beside it in ``<path>/blobs`` as a
Parquet table written through Spark, so a saved stage is self-contained and lives on any file
system Spark writes to. A stage lists its blob params in ``_blobParams``: ``{name: codec}``
with codec ``"bytes"`` (stored as is) or ``"pickle"`` (cloudpickle, for functions). A stage
may define ``_prepareForSave()``, called before writing (e.g. to read its model file into a
blob param).
"""
import os

from pyspark.ml.util import (
    DefaultParamsReader,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
)

__all__ = ["SparkDLWritable", "SparkDLReadable"]


def _encode(codec, value):
    if codec == "bytes":
        return bytes(value)
    if codec == "pickle":
        from pyspark import cloudpickle

        return cloudpickle.dumps(value)
    raise ValueError(f"unknown blob codec {codec!r}")


def _decode(codec, data):
    if codec == "bytes":
        return bytes(data)
    if codec == "pickle":
        import pickle

        return pickle.loads(data)
    raise ValueError(f"unknown blob codec {codec!r}")


class _SparkDLWriter(DefaultParamsWriter):
    def _handleOverwrite(self, path):
        from sparkdl.utils.session import is_connect

        if not is_connect(self.sparkSession):
            return super()._handleOverwrite(path)
        # pyspark's MLWriter removes the old path through the JVM session; on Spark Connect
        # the server's ML helper does it (as pyspark does for its own temporary paths).
        from pyspark.ml.util import ML_CONNECT_HELPER_ID
        from pyspark.ml.wrapper import JavaWrapper

        JavaWrapper(java_obj=ML_CONNECT_HELPER_ID)._call_java("handleOverwrite", path, True)

    def saveImpl(self, path):
        instance = self.instance
        # Stages that read a driver file (e.g. a model) copy its content into a param first,
        # so the saved stage carries it and never needs the driver's file again.
        getattr(instance, "_prepareForSave", lambda: None)()
        blobCodecs = getattr(instance, "_blobParams", {})
        jsonParams, blobs = {}, []
        for param, value in instance._paramMap.items():
            if param.name in blobCodecs:
                if value is not None:
                    blobs.append((param.name, blobCodecs[param.name], _encode(blobCodecs[param.name], value)))
            else:
                jsonParams[param.name] = value
        DefaultParamsWriter.saveMetadata(
            instance, path, self.sparkSession, paramMap=jsonParams,
            extraMetadata={"blobParams": sorted(b[0] for b in blobs)},
        )
        if blobs:
            self.sparkSession.createDataFrame(
                [(name, codec, bytearray(data)) for name, codec, data in blobs],
                "name string, codec string, value binary",
            ).coalesce(1).write.parquet(os.path.join(path, "blobs"))


class _SparkDLReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path):
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        module, _, name = metadata["class"].rpartition(".")
        py_type = getattr(__import__(module, fromlist=[name]), name)
        instance = py_type()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        if metadata.get("blobParams"):
            rows = self.sparkSession.read.parquet(os.path.join(path, "blobs")).collect()
            for row in rows:
                instance._set(**{row["name"]: _decode(row["codec"], row["value"])})
        return instance


class SparkDLWritable(MLWritable):
    """Mixin: ``write()``/``save()`` for a stage with JSON params and blob params."""

    _blobParams = {}

    def write(self):
        """Returns an MLWriter instance for this ML instance."""
        return _SparkDLWriter(self)


class SparkDLReadable(MLReadable):
    """Mixin: ``read()``/``load()`` counterpart of :class:`SparkDLWritable`."""

    @classmethod
    def read(cls):
        """Returns an MLReader instance for this class."""
        return _SparkDLReader(cls)
