"""TensorFlow set-up inside a Python worker, and the device each task's model runs on.

- Threads (once per worker, before the first model loads): intra-op = the task's CPU count
  (``spark.task.cpus``) and inter-op = 1, so N concurrent tasks on a machine use about
  N x task.cpus cores, not N x all cores.
- GPUs: every GPU the executor has stays visible to the worker (``CUDA_VISIBLE_DEVICES`` is
  never narrowed), with memory growth on, so a GPU's memory is taken only by the models
  placed on it. A reused Python worker runs tasks that Spark gave different GPUs (or none),
  so the device is chosen **per task**, not per worker: :func:`taskDevice` maps the task's
  GPU address (``TaskContext.resources()["gpu"]``) to TensorFlow's ``/GPU:<index>`` (the
  index in ``CUDA_VISIBLE_DEVICES`` when the executor set one), ``/CPU:0`` for a task given
  no GPU, and None outside a Spark task (TensorFlow's default). The engine caches a model
  per (content key, device) and loads and runs it under ``tf.device``
  (:func:`deviceScope`); the CPU-only runtimes (OpenVINO, LiteRT) ignore the device.
- A task's device that TensorFlow does not have (a discovery script announcing more GPUs than
  the worker's TensorFlow sees, or a TensorFlow without GPU support) is not an error: the
  model runs on ``/CPU:0``, with one warning per device; the task's choice is still what
  :attr:`sparkdl.engine.shipping.LoadedModel.device` records.
"""
import logging
import os
from contextlib import nullcontext

from sparkdl.utils.worker import taskCpus, taskGpus

__all__ = ["configure", "chooseDevice", "taskDevice", "tfDevice", "deviceScope", "taskScope"]

_log = logging.getLogger("sparkdl.engine.runtime")
_configured = {}
_warned = set()


def configure():
    """Configure TensorFlow for this worker (idempotent): threads and GPU memory growth.
    Returns ``{"cpus": ...}``; the task's device is :func:`taskDevice`, asked per task."""
    if _configured:
        return dict(_configured)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    cpus = taskCpus()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already started in this process (e.g. driver-side use)
        pass
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            # Tasks on different GPUs share this worker: each GPU's memory only as needed.
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # GPUs already initialized
            pass
    _configured.update(cpus=cpus)
    return dict(_configured)


def chooseDevice(addresses, visible=None):
    """The TensorFlow device of a task (pure, no TensorFlow needed).

    :param addresses: the GPU addresses Spark gave the task (``[]``: none), or None outside a
        Spark task.
    :param visible: the worker's ``CUDA_VISIBLE_DEVICES`` (None: not set, every GPU visible).
    :return: ``"/GPU:<index>"`` for the task's first GPU (one model copy per task), where the
        index is the address's position in ``visible`` when set and listing it, else the
        address itself; ``"/CPU:0"`` for a task given no GPU; None outside a task.
    """
    if addresses is None:
        return None
    if not addresses:
        return "/CPU:0"
    address = str(addresses[0]).strip()
    if visible is not None and visible.strip():
        listed = [v.strip() for v in visible.split(",")]
        if address in listed:
            return f"/GPU:{listed.index(address)}"
    if not address.isdigit():
        # e.g. a UUID not listed in CUDA_VISIBLE_DEVICES: TensorFlow has no name for it
        return "/GPU:0"
    return f"/GPU:{int(address)}"


def taskDevice():
    """:func:`chooseDevice` for the running Spark task (None outside one)."""
    return chooseDevice(taskGpus(), os.environ.get("CUDA_VISIBLE_DEVICES"))


def tfDevice(device):
    """The device TensorFlow runs ``device`` on: itself when TensorFlow has it, else
    ``/CPU:0`` (one warning per device); None stays None (TensorFlow's default). Lists
    TensorFlow's devices, which starts its GPUs: call :func:`configure` first."""
    if device is None or not device.startswith("/GPU:"):
        return device
    import tensorflow as tf

    index = int(device.split(":")[1])
    if index < len(tf.config.list_logical_devices("GPU")):
        return device
    if device not in _warned:
        _warned.add(device)
        _log.warning("sparkdl: Spark gave this task GPU %s but TensorFlow here has no %s; "
                     "running on /CPU:0", device.split(":")[1], device)
    return "/CPU:0"


def deviceScope(device):
    """``tf.device(device)``, or a no-op for None."""
    if device is None:
        return nullcontext()
    import tensorflow as tf

    return tf.device(device)


def taskScope():
    """:func:`configure`, then ``tf.device`` of the running task's device (for code that
    builds its own model in a task, e.g. the estimator's training)."""
    configure()
    return deviceScope(tfDevice(taskDevice()))
