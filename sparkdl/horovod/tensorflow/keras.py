"""Data-parallel Keras 3 training under :class:`~sparkdl.HorovodRunner`, on either
backend, with plain ``model.fit``.

Horovod's own Keras integration does not work on Keras 3: ``horovod.tensorflow.keras.
DistributedOptimizer`` hooks a method Keras 3 never calls, so ``model.fit`` silently trains
each rank on its own gradients, and ``BroadcastGlobalVariablesCallback`` crashes
(horovod#4290). ``model.fit`` inside ``MultiWorkerMirroredStrategy.scope()`` fails on
Keras 3 (keras-team/keras#20585). The replacements here keep the model out of any strategy
scope and reduce gradients explicitly through :mod:`sparkdl.horovod.tensorflow`:

- :func:`DistributedOptimizer` makes every update of a Keras optimizer use the gradients
  averaged over all ranks (it hooks ``Optimizer.apply``, which ``model.fit``, custom
  ``train_step`` and ``optimizer.apply_gradients`` all go through);
- :class:`BroadcastGlobalVariablesCallback` starts every rank from rank 0's weights;
- :class:`LogCallback` shows per-epoch (or per-batch) metrics on the driver.

Recipe: each rank feeds its own shard with the same batch size and the same number of steps
per epoch (a rank with fewer batches would leave the others waiting in a reduction). The
global batch is ``batch_size * size()``; the result equals one process training on the
union of the shards with that global batch. Compile with ``jit_compile=False`` (XLA cannot
compile the backends' collective ops; Keras only picks XLA by itself on GPU).

>>> from sparkdl.horovod import HorovodRunner
>>> def main():
...     import keras
...     import numpy as np
...     from sparkdl import horovod as shvd
...     from sparkdl.horovod.tensorflow.keras import (
...         BroadcastGlobalVariablesCallback, DistributedOptimizer, LogCallback)
...     rng = np.random.default_rng(shvd.rank())  # each rank its own data
...     x = rng.normal(size=(64, 4)).astype("float32")
...     y = x.sum(axis=1, keepdims=True)
...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
...     model.compile(optimizer=DistributedOptimizer(keras.optimizers.SGD(0.05)),
...                   loss="mse", jit_compile=False)
...     model.fit(x, y, batch_size=16, epochs=2, verbose=0,
...               callbacks=[BroadcastGlobalVariablesCallback(0), LogCallback()])
...     return [w.tolist() for w in model.get_weights()]
>>> weights = HorovodRunner(np=2, driver_log_verbosity="log_callback_only").run(main)
[0]<log>:epoch 1/2: loss=...
...
"""
import time

import keras

from sparkdl.horovod import log_to_driver, size
from sparkdl.horovod.tensorflow import allreduce, broadcast_variables

__all__ = ["BroadcastGlobalVariablesCallback", "DistributedOptimizer", "LogCallback"]


def DistributedOptimizer(optimizer):
    """Make ``optimizer`` (a Keras 3 optimizer) average gradients over all ranks before each
    update, through the rank's backend; returns the same optimizer object.

    With one rank (or outside :class:`~sparkdl.HorovodRunner`) it behaves as before.
    Do not combine it with ``MultiWorkerMirroredStrategy.scope()``/``strategy.run``: the
    strategy reduces gradients itself (this raises rather than average twice). With a mixed
    precision policy, wrap the ``LossScaleOptimizer`` that ``compile`` creates
    (``model.optimizer = DistributedOptimizer(model.optimizer)`` after ``compile``), so that all
    ranks agree on skipping a step with non-finite gradients.

    :param optimizer: a ``keras.optimizers.Optimizer`` instance.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(f"DistributedOptimizer takes a keras.optimizers.Optimizer instance, "
                        f"got {type(optimizer).__name__}")
    if getattr(optimizer, "_sparkdl_distributed", False):
        return optimizer
    inner_apply = optimizer.apply

    def apply(grads, trainable_variables=None):
        import tensorflow as tf

        if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise RuntimeError(
                "DistributedOptimizer is used inside a tf.distribute strategy, which already "
                "reduces gradients across replicas; use the plain optimizer there"
            )
        grads = list(grads)
        if size() > 1:
            grads = allreduce(grads, average=True)
        return inner_apply(grads, trainable_variables)

    optimizer.apply = apply
    optimizer._sparkdl_distributed = True
    return optimizer


class BroadcastGlobalVariablesCallback(keras.callbacks.Callback):
    """At the start of training, give every rank ``root_rank``'s model weights (and optimizer
    state, if the optimizer has any yet), so that all ranks start identical.

    :param root_rank: the rank whose values win, 0 by default.
    """

    def __init__(self, root_rank=0):
        super().__init__()
        self.root_rank = root_rank
        self.broadcast_done = False

    def on_train_begin(self, logs=None):
        if self.broadcast_done:
            return
        variables = list(self.model.weights)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and optimizer.built:
            variables += list(optimizer.variables)
        broadcast_variables(variables, self.root_rank)
        self.broadcast_done = True


def _format_logs(logs):
    parts = []
    for key, value in (logs or {}).items():
        try:
            parts.append(f"{key}={float(value):.4g}")
        except (TypeError, ValueError):
            parts.append(f"{key}={value}")
    return ", ".join(parts)


class LogCallback(keras.callbacks.Callback):
    """Send training metrics to the driver's output through
    :func:`sparkdl.horovod.log_to_driver`: one line per epoch, and with ``per_batch_log=True``
    one per batch too. Shown with either ``driver_log_verbosity``.

    :param per_batch_log: also log after every training batch.
    """

    def __init__(self, per_batch_log=False):
        super().__init__()
        self.per_batch_log = per_batch_log
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch_log:
            log_to_driver(f"batch {batch + 1}: {_format_logs(logs)}")

    def on_epoch_end(self, epoch, logs=None):
        epochs = (self.params or {}).get("epochs")
        took = ""
        if self._epoch_start is not None:
            took = f" ({time.monotonic() - self._epoch_start:.1f} s)"
        of = f"/{epochs}" if epochs else ""
        log_to_driver(f"epoch {epoch + 1}{of}: {_format_logs(logs)}{took}")
