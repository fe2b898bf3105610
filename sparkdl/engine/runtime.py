"""TensorFlow set-up inside a Python worker, done once, before the first model loads.

- Threads: intra-op = the task's CPU count (``spark.task.cpus``) and inter-op = 1, so N
  concurrent tasks on a machine use about N x task.cpus cores, not N x all cores.
- GPU: when Spark gives the task GPUs (``TaskContext.resources()["gpu"]``), TensorFlow sees
  exactly those (``CUDA_VISIBLE_DEVICES`` before TensorFlow starts); with none, it sees no GPU
  that another task might own.
"""
import os

from sparkdl.utils.worker import taskCpus, taskGpus

__all__ = ["configure"]

_configured = {}


def configure():
    """Configure TensorFlow for this worker (idempotent); returns the settings applied."""
    if _configured:
        return dict(_configured)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    gpus = taskGpus()
    import sys

    if gpus is not None and "tensorflow" not in sys.modules:
        # Only the task's own GPUs (none if Spark gave it none); must precede TF's start.
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    import tensorflow as tf

    cpus = taskCpus()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already started in this process (e.g. driver-side use)
        pass
    _configured.update(cpus=cpus, gpus=gpus)
    return dict(_configured)
