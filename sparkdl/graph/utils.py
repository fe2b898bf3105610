"""1.x ``sparkdl.graph.utils`` (deprecated): the tensor-name helpers 1.x examples used in
``TFTransformer`` mappings (``tfx.tensor_name("input_tensor")``).

Stages here name a graph's inputs and outputs by signature key, and also accept the
``"name:0"`` form these helpers make (see :meth:`sparkdl.TFInputGraph.input`). TF1 graph
surgery (``strip_and_freeze_until``, ``get_tensor``, ...) has no TF2 counterpart: a
``tf.function`` or SavedModel signature is already the frozen graph.
"""
import warnings

__all__ = ["tensor_name", "op_name", "strip_and_freeze_until"]

warnings.warn("sparkdl.graph.utils is a 1.x module; name signature inputs and outputs by "
              "their keys", DeprecationWarning, stacklevel=2)


def _name(tfobj_or_name):
    name = getattr(tfobj_or_name, "name", tfobj_or_name)
    if not isinstance(name, str) or not name:
        raise TypeError(f"expected a tensor name or an object with a .name, got "
                        f"{tfobj_or_name!r}")
    return name


def tensor_name(tfobj_or_name, graph=None):
    """1.x (deprecated): the tensor name ``"name:0"`` of an op or tensor name (a name that
    has an output index already is returned as it is).

    :param tfobj_or_name: a name, or an object with a ``.name`` (e.g. a ``tf.TensorSpec``).
    :param graph: ignored (1.x looked the name up in a TF1 graph).
    """
    name = _name(tfobj_or_name)
    return name if ":" in name else f"{name}:0"


def op_name(tfobj_or_name, graph=None):
    """1.x (deprecated): the op name of a tensor name (``"name:0"`` -> ``"name"``).

    :param tfobj_or_name: a name, or an object with a ``.name``.
    :param graph: ignored.
    """
    return _name(tfobj_or_name).split(":")[0]


def strip_and_freeze_until(fetches, graph, sess=None, return_graph=False):
    """1.x (TF1 only): not supported on TensorFlow 2. Write the computation as a
    ``tf.function`` and use :meth:`sparkdl.TFInputGraph.fromFunction`: its SavedModel holds
    the variables as the frozen graph did its constants."""
    raise NotImplementedError(
        "strip_and_freeze_until freezes a TF1 Session's graph; on TensorFlow 2 write the "
        "computation as a tf.function and use TFInputGraph.fromFunction(fn)")
