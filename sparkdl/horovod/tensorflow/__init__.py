"""TensorFlow collectives through the rank's backend, for code running under
:class:`~sparkdl.HorovodRunner`.

The same calls work with ``backend="horovod"`` (Horovod's ops, after ``hvd.init()``) and
``backend="tensorflow"`` (the rank's ``MultiWorkerMirroredStrategy``), inside or outside a
``tf.function``; outside the runner (one process) they return their inputs. Every rank must
make the same calls in the same order.

>>> from sparkdl.horovod import HorovodRunner
>>> def main():
...     import tensorflow as tf
...     from sparkdl.horovod import rank
...     from sparkdl.horovod.tensorflow import allreduce, broadcast
...     mean = allreduce(tf.constant([float(rank())]))
...     root = broadcast(tf.constant([10.0 + rank()]), root_rank=0)
...     return float(mean[0]), float(root[0])
>>> HorovodRunner(np=2, backend="tensorflow", driver_log_verbosity="log_callback_only").run(main)
(0.5, 10.0)
"""
from sparkdl.horovod import backend, rank, size

__all__ = ["allreduce", "broadcast", "broadcast_variables", "strategy"]

_strategy = []


def strategy():
    """The rank's ``tf.distribute.MultiWorkerMirroredStrategy`` (``backend="tensorflow"``).

    The runner creates it before ``main`` starts, since TensorFlow only accepts it before its
    first op. Use it for custom training loops with ``strategy.scope()`` and ``strategy.run``
    (then do not also use :func:`sparkdl.horovod.tensorflow.keras.DistributedOptimizer`: the
    strategy already reduces gradients).
    """
    if backend() != "tensorflow":
        raise RuntimeError(
            f"sparkdl.horovod.tensorflow.strategy() needs HorovodRunner(backend='tensorflow'); "
            f"this process runs with backend={backend()!r}"
        )
    if not _strategy:
        import tensorflow as tf

        _strategy.append(tf.distribute.MultiWorkerMirroredStrategy())
    return _strategy[0]


def _hvd():
    import horovod.tensorflow as hvd

    if not hvd.is_initialized():
        hvd.init()
    return hvd


def _as_list(tensors):
    single = not isinstance(tensors, (list, tuple))
    return ([tensors] if single else list(tensors)), single


def _dense(t):
    import tensorflow as tf

    if isinstance(t, tf.Tensor):
        return t
    # Variables (TF or Keras 3) give their current value; sparse gradients (embeddings)
    # are reduced dense.
    return tf.convert_to_tensor(t)


def _strategy_all_reduce(values, reduce_op):
    import tensorflow as tf

    s = strategy()
    device = s.extended.worker_devices[0]

    def reduce(*ts):
        # Placed explicitly: inside a tf.function the inputs have no device yet, and the
        # strategy reduces to the devices its inputs live on.
        with tf.device(device):
            ts = [tf.identity(t) for t in ts]
        return tf.distribute.get_replica_context().all_reduce(reduce_op, ts)

    out = s.run(reduce, args=tuple(values))
    return [s.experimental_local_results(o)[0] for o in out]


def allreduce(tensors, average=True):
    """Average (or, with ``average=False``, sum) tensors over all ranks.

    :param tensors: a tensor or a list of tensors (``None`` entries are passed through, as
        for gradients of unconnected variables).
    :return: the reduced tensor(s), same structure.
    """
    import tensorflow as tf

    items, single = _as_list(tensors)
    idx = [i for i, t in enumerate(items) if t is not None]
    values = [_dense(items[i]) for i in idx]
    if values and size() > 1:
        if backend() == "horovod":
            hvd = _hvd()
            values = hvd.grouped_allreduce(values, op=hvd.Average if average else hvd.Sum)
        else:
            op = tf.distribute.ReduceOp.MEAN if average else tf.distribute.ReduceOp.SUM
            values = _strategy_all_reduce(values, op)
    out = list(items)
    for i, v in zip(idx, values):
        out[i] = v
    return out[0] if single else out


def broadcast(tensors, root_rank=0):
    """Rank ``root_rank``'s value of each tensor, on every rank.

    :param tensors: a tensor or a list of tensors.
    """
    import tensorflow as tf

    items, single = _as_list(tensors)
    values = [_dense(t) for t in items]
    if values and size() > 1:
        if backend() == "horovod":
            hvd = _hvd()
            values = [hvd.broadcast(v, root_rank) for v in values]
        else:
            # A sum where every other rank contributes zeros: exact, and one collective.
            mine = rank() == root_rank
            contrib = [v if mine else tf.zeros_like(v) for v in values]
            bools = [v.dtype == tf.bool for v in contrib]
            contrib = [tf.cast(v, tf.int32) if b else v for v, b in zip(contrib, bools)]
            values = _strategy_all_reduce(contrib, tf.distribute.ReduceOp.SUM)
            values = [tf.cast(v, tf.bool) if b else v for v, b in zip(values, bools)]
    return values[0] if single else values


def broadcast_variables(variables, root_rank=0):
    """Assign rank ``root_rank``'s values to ``variables`` (``tf.Variable`` or Keras 3
    variables) on every rank; e.g. ``broadcast_variables(model.weights)`` before training."""
    variables = list(variables)
    if not variables or size() == 1:
        return
    values = broadcast(variables, root_rank)
    for var, value in zip(variables, values):
        var.assign(value)
