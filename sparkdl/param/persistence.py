"""Persistence for stages whose params include values JSON cannot hold.

JSON-able params go through pyspark's ``DefaultParamsWriter`` metadata as usual; the others
("blob params": model bytes, user functions) are stored beside it in ``<path>/blobs`` as a
Parquet table written through Spark, so a saved stage is self-contained and lives on any file
system Spark writes to. A stage lists its blob params in ``_blobParams``: ``{name: codec}``
with codec ``"bytes"`` (stored as is) or ``"pickle"`` (cloudpickle, for functions). A stage
may define ``_prepareForSave()``, called before writing (e.g. to read its model file into a
blob param).

Loading never runs code the loader did not opt into:

- a blob is decoded with the codec its class declares, whatever the saved files say, so a
  ``"bytes"`` blob stays bytes;
- a stage holding a ``"pickle"`` blob (a user function such as ``imageLoader``), or a param
  value listed in ``_codeParamValues`` (``safeMode=False``, which lets Keras run a model's
  Lambda bytecode), loads only when the loader opts in: ``Stage.load(path,
  allowUserCode=True)``, or the Spark conf :data:`ALLOW_USER_CODE_CONF` set to ``true`` for
  loads that go through pyspark (``PipelineModel.load``, ``CrossValidatorModel.load``...).
  Otherwise ``load`` raises before unpickling anything, naming the stage, the param and the
  opt-in.
"""
import os
import sys

from pyspark.ml.util import (
    DefaultParamsReader,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
)

__all__ = ["SparkDLWritable", "SparkDLReadable", "ALLOW_USER_CODE_CONF"]

#: Spark conf that lets every load in the session run the user code a saved stage holds.
ALLOW_USER_CODE_CONF = "spark.sparkdl.load.allowUserCode"


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
            # The codec column is informative only: the reader uses the class's declaration.
            self.sparkSession.createDataFrame(
                [(name, codec, bytearray(data)) for name, codec, data in blobs],
                "name string, codec string, value binary",
            ).coalesce(1).write.parquet(os.path.join(path, "blobs"))


def _savedClass(name, cls):
    """The class a saved stage names, which must be ``cls`` or a subclass of it; no module is
    imported on the saved files' word (pyspark's own loaders import the class before)."""
    module, _, short = name.rpartition(".")
    if short == cls.__name__:  # this class, perhaps saved before it moved to another module
        return cls
    py_type = getattr(sys.modules.get(module), short, None)
    if not (isinstance(py_type, type) and issubclass(py_type, cls)):
        raise ValueError(f"the saved stage is a {name}, not a {cls.__module__}."
                         f"{cls.__name__}; load it with its own class")
    return py_type


class _SparkDLReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def _allowed(self, allowUserCode):
        if allowUserCode is not None:
            return bool(allowUserCode)
        return str(self.sparkSession.conf.get(ALLOW_USER_CODE_CONF, "false")).strip().lower() \
            == "true"

    def load(self, path, allowUserCode=None):
        """Load the stage saved at ``path``.

        :param allowUserCode: let the stage bring user code (pickled functions, Keras
            ``safeMode=False``); ``None`` (default) reads the Spark conf
            ``spark.sparkdl.load.allowUserCode`` (``false`` unless set).
        """
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        py_type = _savedClass(metadata["class"], self.cls)
        codecs = getattr(py_type, "_blobParams", {})
        saved = metadata.get("blobParams") or []
        unknown = sorted(set(saved) - set(codecs))
        if unknown:
            raise ValueError(f"{py_type.__name__} saved at {path} holds blob param(s) "
                             f"{unknown} that the class does not declare")
        # A blob param given as JSON would reach its converter (which may read a SavedModel
        # directory named by a string); blob params come from the blob table only.
        jsonParams = {**(metadata.get("defaultParamMap") or {}), **metadata["paramMap"]}
        inJson = sorted(name for name in codecs if jsonParams.get(name) is not None)
        if inJson:
            raise ValueError(f"{py_type.__name__} saved at {path} holds blob param "
                             f"{inJson[0]!r} among its JSON params; it was not written by "
                             "sparkdl and is refused")
        instance = py_type()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        code = [name for name in sorted(saved) if codecs[name] == "pickle"]
        code += [name for name, value in getattr(py_type, "_codeParamValues", {}).items()
                 if instance.hasParam(name) and instance.isDefined(name)
                 and instance.getOrDefault(name) == value]
        if code and not self._allowed(allowUserCode):
            name = code[0]
            what = ("a pickled Python function, which runs code when unpickled"
                    if name in saved else f"{name}={instance.getOrDefault(name)!r}, which lets "
                    "the model's Python bytecode (Keras Lambda layers) run")
            raise ValueError(
                f"{py_type.__name__} saved at {path} holds param {name!r}, {what}; if you "
                f"trust its source, load it with {py_type.__name__}.load(path, "
                f"allowUserCode=True), or set the Spark conf {ALLOW_USER_CODE_CONF}=true "
                "for PipelineModel.load and other pyspark loaders")
        if saved:
            rows = self.sparkSession.read.parquet(os.path.join(path, "blobs")).collect()
            for row in rows:
                name = row["name"]
                if name not in saved:
                    raise ValueError(f"{py_type.__name__} saved at {path} holds an unlisted "
                                     f"blob {name!r}")
                instance._set(**{name: _decode(codecs[name], row["value"])})
        return instance


class SparkDLWritable(MLWritable):
    """Mixin: ``write()``/``save()`` for a stage with JSON params and blob params."""

    _blobParams = {}

    def write(self):
        """Returns an MLWriter instance for this ML instance."""
        return _SparkDLWriter(self)


class SparkDLReadable(MLReadable):
    """Mixin: ``read()``/``load()`` counterpart of :class:`SparkDLWritable`.

    Loading a stage that holds user code (a pickled function such as ``imageLoader``, or
    ``safeMode=False``) needs the loader's opt-in, see :meth:`load`.
    """

    # Param values with which a loaded stage would run code the loader did not write.
    _codeParamValues = {"safeMode": False}

    @classmethod
    def read(cls):
        """Returns an MLReader instance for this class."""
        return _SparkDLReader(cls)

    @classmethod
    def load(cls, path, allowUserCode=None):
        """Reads a stage saved with ``save``.

        A stage that holds user code (a pickled Python function such as ``imageLoader``, or
        ``safeMode=False``, which lets Keras run a model's Lambda bytecode) is refused unless
        ``allowUserCode=True`` (or the Spark conf ``spark.sparkdl.load.allowUserCode`` is
        ``true``, which also covers ``PipelineModel.load``): pass it only for files from a
        source you trust. Model bytes and SavedModels are data until ``transform`` runs them.

        :param path: the directory ``save`` wrote.
        :param allowUserCode: ``True`` to let the stage bring user code; ``None`` (default)
            follows the Spark conf, ``False`` unless set.
        """
        return cls.read().load(path, allowUserCode=allowUserCode)
