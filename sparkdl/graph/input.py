"""TFInputGraph: a TensorFlow graph, as one SavedModel signature, ready to ship to executors.

The original library's TF1 ``TFInputGraph`` wrapped a ``GraphDef`` plus the tensor names to
feed and fetch. On TensorFlow 2 a graph is called through a SavedModel *signature*: a function
with named inputs and named outputs. So a ``TFInputGraph`` here is a SavedModel (its files,
held in memory as one zip) plus the signature to call, and every "tensor name" of the original
API becomes a *signature key*: the name of one input or output of that signature.

The original factory names are kept, with their 1.x argument order (``savedModelDir, tags,
...``) and, as deprecated aliases, their 1.x keyword names (``saved_model_dir``, ``tag_set``,
``signature_def_key``):

============================================  ==============================================
factory                                       TF2 meaning
============================================  ==============================================
:meth:`TFInputGraph.fromSavedModel`           a SavedModel directory; ``feed_names`` /
                                              ``fetch_names`` name the signature's inputs /
                                              the outputs to keep (signature keys, or for a
                                              TF1 SavedModel the tensor names, such as
                                              ``"input:0"``, that the signature maps)
:meth:`TFInputGraph.fromSavedModelWithSignature`  a SavedModel directory and one signature,
                                              all of whose inputs and outputs are used
:meth:`TFInputGraph.fromFunction`             a ``tf.function``, a concrete function or a
                                              ``tf.Module`` holding one: saved as a
                                              SavedModel with that function as its
                                              ``serving_default`` signature
``fromGraph``, ``fromGraphDef``,              TF1 sessions, graphs and checkpoints: not
``fromCheckpoint``,                           supported on TF2 (they raise, naming the TF2
``fromCheckpointWithSignature``               replacement)
============================================  ==============================================

Wherever a stage names an input or output (``TFTransformer``'s ``inputMapping`` /
``outputMapping``, ``TFImageTransformer``'s ``inputTensor`` / ``outputTensor``, ``feed_names`` /
``fetch_names``), the name is resolved by one rule (:meth:`TFInputGraph.input`): a signature
key; else a graph tensor name the signature maps (TF1 SavedModels: ``"input:0"`` or
``"input"``); else a 1.x-style tensor name ``"key:0"`` of signature key ``key`` (so the 1.x
``tfx.tensor_name("x")`` still names input ``x`` of a ``tf.function`` whose ``TensorSpec``
is named ``"x"``).

The SavedModel is read when the ``TFInputGraph`` is made (and loaded once on the driver to
check it), so later changes to, or removal of, the directory do not affect it. ``bytes(graph)``
is a self-contained serialized form (a zip of the SavedModel plus a small JSON description) and
``TFInputGraph.fromBytes`` reads it back without TensorFlow; pickling uses the same form.
"""
import functools
import hashlib
import io
import json
import os
import tempfile
import warnings
import zipfile
from collections import namedtuple

__all__ = ["TFInputGraph", "TensorInfo"]

TensorInfo = namedtuple("TensorInfo", ["name", "dtype", "shape"])
TensorInfo.__doc__ = """One input or output of a :class:`~sparkdl.TFInputGraph` signature: its key,
TF dtype name (``"float32"``) and shape (a tuple, ``None`` for an unknown dimension; the whole
shape is ``None`` for an unknown rank)."""

_META_FILE = "sparkdl_tfinputgraph.json"
_FORMAT = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same SavedModel gives the same bytes


def _normalizeTags(tags):
    if tags is None:
        return None
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    tags = tuple(sorted(str(t) for t in tags))
    return tags or None


def _zipDir(path, meta):
    """The files of ``path`` plus the JSON ``meta`` as one deterministic zip (stored, not
    deflated: Spark compresses broadcasts itself)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        files = []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            files.extend(os.path.join(root, n) for n in sorted(names))
        for full in files:
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            if rel == _META_FILE:
                continue
            info = zipfile.ZipInfo(rel, _ZIP_DATE)
            info.external_attr = 0o644 << 16
            with open(full, "rb") as f:
                z.writestr(info, f.read())
        info = zipfile.ZipInfo(_META_FILE, _ZIP_DATE)
        info.external_attr = 0o644 << 16
        z.writestr(info, json.dumps(meta, sort_keys=True))
    return buf.getvalue()


def _specInfo(name, spec):
    shape = spec.shape
    dims = None if shape.rank is None else tuple(shape.as_list())
    return TensorInfo(str(name), spec.dtype.name, dims)


def _loadSignature(path, signatureDefKey, tags):
    """Load a SavedModel with TensorFlow and return ``(loaded, signature function, key)``;
    ``signatureDefKey=None`` picks ``serving_default`` or the only signature."""
    import tensorflow as tf

    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(
            f"{path!r} is not a SavedModel directory on the driver (no saved_model.pb)")
    if tags:
        _checkTags(path, tags)
    try:
        loaded = tf.saved_model.load(path, tags=list(tags) if tags else None)
    except Exception as e:
        raise ValueError(f"TensorFlow could not load the SavedModel {path!r}"
                         f"{f' with tags {list(tags)}' if tags else ''}: {e}") from e
    names = sorted(k for k in loaded.signatures.keys())
    if signatureDefKey is None:
        if "serving_default" in names:
            signatureDefKey = "serving_default"
        elif len(names) == 1:
            signatureDefKey = names[0]
    if signatureDefKey not in names:
        raise ValueError(f"SavedModel {path!r} has no signature {signatureDefKey!r}; "
                         f"its signatures: {names}")
    return loaded, loaded.signatures[signatureDefKey], signatureDefKey


def _readSavedModelProto(path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def _checkTags(path, tags):
    """A one-line error when no MetaGraph of the SavedModel has exactly ``tags``; it says so
    when the "tags" look like a signature key (a call in the pre-1.x-order form)."""
    proto = _readSavedModelProto(path)
    tagSets = [sorted(m.meta_info_def.tags) for m in proto.meta_graphs]
    if any(set(t) == set(tags) for t in tagSets):
        return
    signatures = sorted({k for m in proto.meta_graphs for k in m.signature_def})
    hint = ""
    if len(tags) == 1 and tags[0] in signatures:
        hint = (f"; {tags[0]!r} is a signature: the arguments are (savedModelDir, tags, "
                f"signatureDefKey) as in 1.x, so pass signatureDefKey={tags[0]!r}")
    raise ValueError(f"tags {list(tags)} match no MetaGraph of the SavedModel {path!r}; its "
                     f"tag sets: {tagSets}{hint}")


def _signatureTensorNames(path, signatureDefKey, tags):
    """``{graph tensor name: signature key}`` for the signature's inputs and outputs, read from
    ``saved_model.pb`` (for TF1-style feed/fetch names such as ``"input:0"``)."""
    proto = _readSavedModelProto(path)
    inputs, outputs = {}, {}
    for metaGraph in proto.meta_graphs:
        if tags and set(metaGraph.meta_info_def.tags) != set(tags):
            continue
        signature = metaGraph.signature_def.get(signatureDefKey)
        if signature is None:
            continue
        for table, infos in ((inputs, signature.inputs), (outputs, signature.outputs)):
            for key, info in infos.items():
                if info.name:
                    table[info.name] = key
                    if info.name.endswith(":0"):
                        table[info.name[:-2]] = key
        break
    return inputs, outputs


def _resolveName(name, keys, tensorNames):
    """The signature key that ``name`` names, or None: a key; a graph tensor name the
    signature maps; a 1.x-style ``"key:0"``."""
    if name in keys:
        return name
    if name in tensorNames:
        return tensorNames[name]
    if isinstance(name, str) and name.endswith(":0") and name[:-2] in keys:
        return name[:-2]
    return None


def _resolveNames(names, keys, tensorNames, what, path):
    resolved = []
    for name in names:
        key = _resolveName(name, keys, tensorNames)
        if key is None:
            raise ValueError(f"{what} {name!r} is not an {what.split('_')[0]} of the signature "
                             f"of {path!r}; available: {sorted(keys)}")
        resolved.append(key)
    return resolved


#: 1.x keyword names of the factories -> the names used here.
_V1_KEYWORDS = {"saved_model_dir": "savedModelDir", "tag_set": "tags",
                "signature_def_key": "signatureDefKey"}


def _acceptV1Keywords(factory):
    """Let a factory take its 1.x keyword names (``saved_model_dir``, ``tag_set``,
    ``signature_def_key``), with a DeprecationWarning naming the new one."""

    @functools.wraps(factory)
    def wrapper(cls, *args, **kwargs):
        for old, new in _V1_KEYWORDS.items():
            if old not in kwargs:
                continue
            if new in kwargs:
                raise TypeError(f"TFInputGraph.{factory.__name__} got both {old!r} (the 1.x "
                                f"name) and {new!r}")
            warnings.warn(f"TFInputGraph.{factory.__name__}({old}=...) is the 1.x name; use "
                          f"{new}=...", DeprecationWarning, stacklevel=3)
            kwargs[new] = kwargs.pop(old)
        return factory(cls, *args, **kwargs)

    return wrapper


class TFInputGraph:
    """A TensorFlow graph to run on Spark: a SavedModel (held in memory) and one signature.

    Make one with :meth:`fromSavedModel`, :meth:`fromSavedModelWithSignature` or
    :meth:`fromFunction`; it knows the signature's inputs and outputs (:attr:`inputs`,
    :attr:`outputs`: :class:`~sparkdl.graph.input.TensorInfo` ``(name, dtype, shape)``, the
    first dimension being the batch) and carries the SavedModel's bytes, so a stage holding it
    needs no file.

    >>> import tensorflow as tf
    >>> from sparkdl import TFInputGraph
    >>> @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    ... def double(x):
    ...     return {"y": 2 * x}
    >>> graph = TFInputGraph.fromFunction(double)
    >>> graph.inputNames, graph.outputNames
    (['x'], ['y'])
    >>> TFInputGraph.fromBytes(bytes(graph)) == graph
    True
    """

    def __init__(self, data, meta=None):
        # Private: use the factories. ``data`` is the zip made by _zipDir.
        self._data = bytes(data)
        if meta is None:
            with zipfile.ZipFile(io.BytesIO(self._data)) as z:
                try:
                    meta = json.loads(z.read(_META_FILE))
                except KeyError:
                    raise ValueError("not a serialized TFInputGraph (no "
                                     f"{_META_FILE} in the zip)") from None
        if meta.get("format") != _FORMAT:
            raise ValueError(f"unsupported TFInputGraph format {meta.get('format')!r}")
        self._meta = meta
        self.signatureDefKey = meta["signatureDefKey"]
        self.tags = tuple(meta["tags"]) if meta["tags"] else None
        #: The signature's inputs, :class:`~sparkdl.graph.input.TensorInfo` tuples.
        self.inputs = tuple(TensorInfo(n, d, None if s is None else tuple(s))
                            for n, d, s in meta["inputs"])
        #: The signature's outputs kept (``fetch_names``), as :attr:`inputs`.
        self.outputs = tuple(TensorInfo(n, d, None if s is None else tuple(s))
                             for n, d, s in meta["outputs"])
        self.key = hashlib.sha256(self._data).hexdigest()
        tensorNames = meta.get("tensorNames") or {}
        self._tensorNames = {"input": tensorNames.get("inputs", {}),
                             "output": tensorNames.get("outputs", {})}

    # -- factories ---------------------------------------------------------------------------

    @classmethod
    def _fromDir(cls, path, signatureDefKey=None, tags=None, feedNames=None, fetchNames=None,
                 source=None):
        path = os.fspath(path)
        tags = _normalizeTags(tags)
        _, fn, signatureDefKey = _loadSignature(path, signatureDefKey, tags)
        inputSpecs = fn.structured_input_signature[1]
        outputSpecs = fn.structured_outputs
        if not isinstance(outputSpecs, dict):
            raise ValueError(f"signature {signatureDefKey!r} of {path!r} does not return a dict "
                             "of named outputs")
        inputs = {k: _specInfo(k, s) for k, s in inputSpecs.items()}
        outputs = {k: _specInfo(k, s) for k, s in outputSpecs.items()}
        tensorIn, tensorOut = _signatureTensorNames(path, signatureDefKey, tags)
        if feedNames is not None:
            feeds = _resolveNames(_asNames(feedNames, "feed_names"), inputs, tensorIn,
                                  "feed_names", path)
            missing = sorted(set(inputs) - set(feeds))
            if missing:
                raise ValueError(
                    f"feed_names must feed every input of signature {signatureDefKey!r} of "
                    f"{path!r} (a TF2 signature is called with all its inputs); missing: "
                    f"{missing}, available: {sorted(inputs)}")
        if fetchNames is not None:
            fetches = _resolveNames(_asNames(fetchNames, "fetch_names"), outputs, tensorOut,
                                    "fetch_names", path)
            outputs = {k: outputs[k] for k in fetches}
        meta = {
            "format": _FORMAT,
            "signatureDefKey": signatureDefKey,
            "tags": list(tags) if tags else None,
            "inputs": [list(inputs[k]) for k in sorted(inputs)],
            "outputs": [list(outputs[k]) for k in sorted(outputs)],
            "source": source or path,
            # graph tensor names the signature maps, so stages accept TF1 names ("input:0")
            "tensorNames": {"inputs": tensorIn,
                            "outputs": {k: v for k, v in tensorOut.items() if v in outputs}},
        }
        return cls(_zipDir(path, meta), meta)

    @classmethod
    @_acceptV1Keywords
    def fromSavedModel(cls, savedModelDir, tags=None, feed_names=None, fetch_names=None,
                       signatureDefKey=None):
        """A SavedModel directory, called through one of its signatures.

        The arguments are in the 1.x order, ``(saved_model_dir, tag_set, feed_names,
        fetch_names)``; the 1.x keyword names ``saved_model_dir`` and ``tag_set`` are accepted
        (deprecated).

        :param savedModelDir: the SavedModel directory, on the driver (read now).
        :param tags: the MetaGraph's tags (``"serve"``, ``"serve,gpu"`` or a list), needed
            only when the SavedModel holds several MetaGraphs (TF1 exports).
        :param feed_names: the inputs to feed: they must be all of the signature's inputs
            (a TF2 signature is always called with every input). Each is a signature key or,
            for compatibility with the original API, a graph tensor name the signature maps
            (``"input:0"``), or ``"key:0"`` for signature key ``key``. None: all.
        :param fetch_names: the outputs to keep (signature keys or mapped tensor names).
            None: all.
        :param signatureDefKey: the signature; None picks ``serving_default``, or the only one.
        """
        return cls._fromDir(savedModelDir, signatureDefKey, tags, feed_names, fetch_names)

    @classmethod
    @_acceptV1Keywords
    def fromSavedModelWithSignature(cls, savedModelDir, tags=None,
                                    signatureDefKey="serving_default"):
        """A SavedModel directory and one of its signatures, with all its inputs and outputs;
        stages then name them by their signature keys.

        The arguments are in the 1.x order, ``(saved_model_dir, tag_set, signature_def_key)``,
        and the 1.x keyword names are accepted (deprecated): a 1.x call runs unchanged. Tags
        that match no MetaGraph are refused with the SavedModel's tag sets (and a hint when
        they name a signature instead).

        :param savedModelDir: the SavedModel directory, on the driver (read now).
        :param tags: the MetaGraph's tags, as for :meth:`fromSavedModel` (None: the only
            MetaGraph, as TF2 exports have).
        :param signatureDefKey: the signature (``"serving_default"`` by default).
        """
        return cls._fromDir(savedModelDir, signatureDefKey, tags)

    @classmethod
    def fromFunction(cls, fn, input_signature=None):
        """A TF2 function, saved as a SavedModel whose ``serving_default`` signature it is.

        :param fn: a ``tf.function`` (with an ``input_signature``, or pass one here), a
            concrete function (``f.get_concrete_function(...)``), a ``tf.Module`` whose
            ``__call__`` is such a ``tf.function`` (or that has exactly one ``tf.function``
            attribute), or a plain Python function together with ``input_signature``.
            Variables it captures are saved with it. Its inputs are named by the
            ``TensorSpec`` names (else the argument names); it should return a dict of named
            outputs (a single tensor is named ``output_0``, a tuple ``output_0, output_1...``).
        :param input_signature: a list of ``tf.TensorSpec``, the first dimension being the
            batch (``None``).
        """
        import tensorflow as tf

        root, func = _functionAndRoot(fn, input_signature)
        try:
            if isinstance(func, tf.types.experimental.ConcreteFunction):
                concrete = func
            elif input_signature is not None:
                concrete = func.get_concrete_function(*input_signature)
            else:
                concrete = func.get_concrete_function()
        except (TypeError, ValueError) as e:
            raise ValueError(
                "fromFunction needs the function's input signature: give the tf.function an "
                "input_signature, or pass input_signature=[tf.TensorSpec(...), ...]; "
                f"TensorFlow said: {e}") from e
        # A fresh root (the user's module is not modified) that tracks the module, the
        # function and what it captures, so a bare function's variables are saved too.
        holder = tf.Module()
        if root is not None:
            holder.module = root
        holder.function = func
        holder.captured = list(concrete.variables)
        name = getattr(func, "__name__", None) or getattr(concrete, "name", "function")
        with tempfile.TemporaryDirectory(prefix="sparkdl-tfgraph-") as d:
            try:
                tf.saved_model.save(holder, d, signatures={"serving_default": concrete})
            except (AssertionError, ValueError, TypeError) as e:
                raise ValueError(
                    f"the function could not be saved as a SavedModel (objects it captures, "
                    f"such as lookup tables, must be attributes of a tf.Module passed as fn): "
                    f"{e}") from e
            return cls._fromDir(d, "serving_default", source=f"function {name}")

    @classmethod
    def fromGraph(cls, graph, sess, feed_names, fetch_names):
        """TF1 only: not supported on TensorFlow 2. Use :meth:`fromFunction` with a
        ``tf.function``, or :meth:`fromSavedModel` on a SavedModel exported from the session."""
        raise NotImplementedError(
            "TFInputGraph.fromGraph needs a TF1 Session; on TensorFlow 2 use "
            "TFInputGraph.fromFunction(tf.function) or export a SavedModel and use "
            "TFInputGraph.fromSavedModel")

    @classmethod
    def fromGraphDef(cls, graph_def, feed_names, fetch_names):
        """TF1 only: not supported on TensorFlow 2 (see :meth:`fromGraph`)."""
        raise NotImplementedError(
            "TFInputGraph.fromGraphDef needs a TF1 GraphDef; on TensorFlow 2 use "
            "TFInputGraph.fromFunction or TFInputGraph.fromSavedModel")

    @classmethod
    def fromCheckpoint(cls, checkpoint_dir, feed_names, fetch_names):
        """TF1 only: not supported on TensorFlow 2 (see :meth:`fromGraph`)."""
        raise NotImplementedError(
            "TFInputGraph.fromCheckpoint reads TF1 meta-graph checkpoints; on TensorFlow 2 "
            "restore the model (tf.train.Checkpoint) into a tf.Module and use "
            "TFInputGraph.fromFunction, or use TFInputGraph.fromSavedModel")

    @classmethod
    def fromCheckpointWithSignature(cls, checkpoint_dir, signature_def_key):
        """TF1 only: not supported on TensorFlow 2 (see :meth:`fromCheckpoint`)."""
        return cls.fromCheckpoint(checkpoint_dir, None, None)

    # -- serialized form ---------------------------------------------------------------------

    @classmethod
    def fromBytes(cls, data):
        """The ``TFInputGraph`` serialized by ``bytes(graph)`` (no TensorFlow needed)."""
        return cls(data)

    def __bytes__(self):
        return self._data

    @property
    def savedModelBytes(self):
        """The SavedModel as a zip (with this object's JSON description beside its files)."""
        return self._data

    def __reduce__(self):
        return (TFInputGraph.fromBytes, (self._data,))

    def __eq__(self, other):
        return isinstance(other, TFInputGraph) and other.key == self.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        def fmt(infos):
            return ", ".join(f"{i.name}: {i.dtype}{list(i.shape) if i.shape is not None else '[?]'}"
                             for i in infos)

        return (f"TFInputGraph({self._meta.get('source')!r}, signature "
                f"{self.signatureDefKey!r}: ({fmt(self.inputs)}) -> ({fmt(self.outputs)}), "
                f"{len(self._data)} bytes)")

    # -- introspection -----------------------------------------------------------------------

    @property
    def inputNames(self):
        return [i.name for i in self.inputs]

    @property
    def outputNames(self):
        return [o.name for o in self.outputs]

    def input(self, name, what="input"):
        """The :class:`~sparkdl.graph.input.TensorInfo` of input ``name``: a signature key,
        a graph tensor name the signature maps (``"input:0"``), or ``"key:0"`` (the error
        lists the available names). Its ``name`` is the signature key."""
        return self._lookup(self.inputs, name, what, self._tensorNames["input"])

    def output(self, name, what="output"):
        """The :class:`~sparkdl.graph.input.TensorInfo` of output ``name``, resolved as in
        :meth:`input`."""
        return self._lookup(self.outputs, name, what, self._tensorNames["output"])

    def _lookup(self, infos, name, what, tensorNames):
        byKey = {i.name: i for i in infos}
        key = _resolveName(name, byKey, tensorNames)
        if key is None:
            raise ValueError(f"{what} {name!r} is not in signature {self.signatureDefKey!r} of "
                             f"the graph; available: {sorted(byKey)}")
        return byKey[key]

    def translateInputMapping(self, input_mapping):
        """1.x: ``{column: tensor name or signature key}`` -> ``{column: signature key}``.

        Deprecated and no longer needed: :class:`~sparkdl.TFTransformer` takes signature keys
        and tensor names itself. Kept so 1.x code runs; names are checked and resolved by the
        rule of :meth:`input`.

        :param input_mapping: a dict, or a list of ``(column, name)`` pairs as in 1.x.
        """
        warnings.warn("TFInputGraph.translateInputMapping is not needed: pass the mapping to "
                      "TFTransformer(inputMapping=...) as it is", DeprecationWarning,
                      stacklevel=2)
        pairs = input_mapping.items() if isinstance(input_mapping, dict) else input_mapping
        return {col: self.input(name, what="inputMapping input").name for col, name in pairs}

    def translateOutputMapping(self, output_mapping):
        """1.x: ``{tensor name or signature key: column}`` -> ``{signature key: column}``.

        Deprecated and no longer needed, as :meth:`translateInputMapping`.

        :param output_mapping: a dict, or a list of ``(name, column)`` pairs as in 1.x.
        """
        warnings.warn("TFInputGraph.translateOutputMapping is not needed: pass the mapping to "
                      "TFTransformer(outputMapping=...) as it is", DeprecationWarning,
                      stacklevel=2)
        pairs = output_mapping.items() if isinstance(output_mapping, dict) else output_mapping
        return {self.output(name, what="outputMapping output").name: col for name, col in pairs}


def _asNames(names, what):
    if isinstance(names, str):
        return [names]
    names = list(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what} must be a non-empty list of names, got {names!r}")
    return names


def _functionAndRoot(fn, input_signature):
    """``(tf.Module to save or None, tf.function / concrete function)`` for fromFunction."""
    import tensorflow as tf

    generic = tf.types.experimental.GenericFunction
    concrete = tf.types.experimental.ConcreteFunction
    if isinstance(fn, tf.Module):
        call = getattr(fn, "__call__", None)
        if isinstance(call, (generic, concrete)):
            return fn, call
        found = {}
        for name in dir(fn):
            if name.startswith("_"):
                continue
            try:
                value = getattr(fn, name)
            except Exception:
                continue
            if isinstance(value, (generic, concrete)):
                found[name] = value
        if len(found) == 1:
            return fn, next(iter(found.values()))
        raise ValueError(
            f"fromFunction: the tf.Module {type(fn).__name__} must have a tf.function __call__ "
            f"or exactly one tf.function attribute; found {sorted(found) or 'none'}")
    if isinstance(fn, (generic, concrete)):
        return None, fn
    if callable(fn) and input_signature is not None:
        return None, tf.function(fn, input_signature=list(input_signature))
    raise TypeError(
        "fromFunction expects a tf.function, a concrete function, a tf.Module, or a Python "
        f"function with input_signature; got {type(fn).__name__}")
