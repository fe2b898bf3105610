"""Distributed training launched as a Spark job: :class:`~sparkdl.HorovodRunner`.

``HorovodRunner(np=...).run(main, **kwargs)`` starts ``np`` processes ("ranks") as one Spark
barrier job (or, with ``np < 0``, as local processes), sets each up for the chosen backend
(Horovod over Gloo, or ``tf.distribute.MultiWorkerMirroredStrategy``), runs ``main(**kwargs)``
in every rank and returns rank 0's value. Inside ``main``:

- :func:`rank`, :func:`size`, :func:`local_rank`, :func:`local_size`, :func:`backend` describe
  this rank whatever the backend (``hvd.rank()`` works too with the Horovod backend);
- :func:`log_to_driver` sends a message to the driver's output;
- :mod:`sparkdl.horovod.tensorflow` reduces and broadcasts tensors through the active backend,
  and :mod:`sparkdl.horovod.tensorflow.keras` trains a Keras 3 model data-parallel with
  ``model.fit``.

Importing this package imports neither TensorFlow nor Horovod.
"""
import json
import os
import sys
import threading

__all__ = [
    "HorovodRunner",
    "HorovodRunnerError",
    "backend",
    "local_rank",
    "local_size",
    "log_to_driver",
    "rank",
    "size",
]

# Set by the runner in each rank's environment (see sparkdl/horovod/_supervisor.py).
ENV_RANK = "SPARKDL_HOROVOD_RANK"
ENV_SIZE = "SPARKDL_HOROVOD_SIZE"
ENV_LOCAL_RANK = "SPARKDL_HOROVOD_LOCAL_RANK"
ENV_LOCAL_SIZE = "SPARKDL_HOROVOD_LOCAL_SIZE"
ENV_BACKEND = "SPARKDL_HOROVOD_BACKEND"
ENV_LOG_FD = "SPARKDL_HOROVOD_LOG_FD"

_log_lock = threading.Lock()


def __getattr__(name):
    if name in ("HorovodRunner", "HorovodRunnerError"):
        from sparkdl.horovod import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'sparkdl.horovod' has no attribute {name!r}")


def _env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def rank():
    """This process's rank, 0 to ``size() - 1``; 0 outside :class:`~sparkdl.HorovodRunner`."""
    return _env_int(ENV_RANK, 0)


def size():
    """The number of ranks; 1 outside :class:`~sparkdl.HorovodRunner`."""
    return _env_int(ENV_SIZE, 1)


def local_rank():
    """This rank's index among the ranks on the same host; 0 outside
    :class:`~sparkdl.HorovodRunner`."""
    return _env_int(ENV_LOCAL_RANK, 0)


def local_size():
    """The number of ranks on this rank's host; 1 outside :class:`~sparkdl.HorovodRunner`."""
    return _env_int(ENV_LOCAL_SIZE, 1)


def backend():
    """The backend this rank was launched with, ``"horovod"`` or ``"tensorflow"``; ``None``
    outside :class:`~sparkdl.HorovodRunner`."""
    return os.environ.get(ENV_BACKEND) or None


def log_to_driver(message):
    """Show ``message`` in the driver's output, prefixed by this rank.

    Works with both ``driver_log_verbosity`` settings (with ``"log_callback_only"`` it is the
    only output shown). Outside :class:`~sparkdl.HorovodRunner` the message is printed.

    >>> from sparkdl.horovod import HorovodRunner, log_to_driver
    >>> def main():
    ...     log_to_driver("hello from the rank")
    ...     return 42
    >>> HorovodRunner(np=-1, driver_log_verbosity="log_callback_only").run(main)
    [0]<log>:hello from the rank
    42
    """
    fd = os.environ.get(ENV_LOG_FD)
    if not fd:
        print(message, flush=True)
        return
    data = (json.dumps(str(message)) + "\n").encode("utf-8")
    with _log_lock:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(int(fd), view):]
        except OSError:
            # The runner is gone (the rank is being torn down): keep the message locally.
            print(message, file=sys.stderr, flush=True)
