"""A task runs on the GPU that Spark gave it, for every task of a reused Python worker.

The device choice is a pure function (:func:`sparkdl.engine.runtime.chooseDevice`), tested
directly; the engine's per-task choice is tested on ``local-cluster[1,2,1024]`` with Spark's
own resource scheduling and a fake discovery script announcing GPUs ``0`` and ``1`` (this
machine's TensorFlow has no GPU, so the models run on the CPU, as the engine documents).
"""
import os
import stat
import sys
import threading
import time

import numpy as np
import pytest
from pyspark import cloudpickle

from sparkdl.engine import runtime
from sparkdl.engine.runtime import chooseDevice
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- the pure choice ---------------------------------------------------------------------------

def test_choose_device():
    assert chooseDevice(None) is None  # outside a Spark task: TensorFlow's default
    assert chooseDevice([]) == "/CPU:0"  # a task given no GPU never lands on one
    assert chooseDevice(["0"]) == "/GPU:0"
    assert chooseDevice(["1"]) == "/GPU:1"
    assert chooseDevice(["3", "2"]) == "/GPU:3"  # one model copy: the task's first GPU
    # The executor narrowed CUDA_VISIBLE_DEVICES: TensorFlow numbers the visible ones from 0.
    assert chooseDevice(["5"], visible="4,5") == "/GPU:1"
    assert chooseDevice(["GPU-ab12"], visible="GPU-ff00,GPU-ab12") == "/GPU:1"
    assert chooseDevice(["2"], visible="") == "/GPU:2"


def test_cache_key_per_device(spark):
    import keras

    from sparkdl.engine.shipping import handleFor, kerasObject

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    handle = handleFor(kerasObject(model), spark)
    keys = {handle.cacheKeyOn(d) for d in ("/GPU:0", "/GPU:1", "/CPU:0")}
    assert len(keys) == 3  # one copy per device in a worker, TensorFlow and "auto" alike
    assert len({handle.using("auto").cacheKeyOn(d) for d in ("/GPU:0", "/CPU:0")}) == 2
    # The CPU-only runtimes ignore the device: one copy, whatever the task's GPU.
    assert len({handle.using("openvino").cacheKeyOn(d) for d in ("/GPU:0", "/CPU:0")}) == 1
    assert handle.cacheKeyOn(None) == handle.cacheKey


def test_memory_growth_on_every_visible_gpu(monkeypatch):
    """Tasks on different GPUs share a worker: none may take all of a GPU's memory at start."""
    import tensorflow as tf

    gpus = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
            tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU")]
    grown = []
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth",
                        lambda device, on: grown.append((device.name, on)))
    monkeypatch.setattr(runtime, "_configured", {})
    runtime.configure()
    assert grown == [(g.name, True) for g in gpus]


# -- Spark's resource scheduling, fake GPUs ----------------------------------------------------

@pytest.fixture(scope="module")
def gpu_spark(tmp_path_factory, own_session):
    """local-cluster[1,2,1024]: one executor with 2 cores and fake GPUs 0 and 1, one GPU per
    task, Python worker reuse on (Spark's default). Replaces the shared session for the module."""
    script = tmp_path_factory.mktemp("gpu") / "discover.sh"
    script.write_text('#!/bin/sh\necho \'{"name":"gpu","addresses":["0","1"]}\'\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    from sparkdl.utils.session import local_session

    session = local_session("local-cluster[1,2,1024]", app_name="sparkdl-gpu-tests", conf={
        "spark.executor.cores": "2",
        "spark.executorEnv.PYTHONPATH": os.pathsep.join(sys.path),
        "spark.worker.resource.gpu.amount": "2",
        "spark.worker.resource.gpu.discoveryScript": str(script),
        "spark.executor.resource.gpu.amount": "2",
        "spark.task.resource.gpu.amount": "1",
        "spark.python.worker.reuse": "true",
    })
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


X = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


def probe(handle, started=None, gate=None, profile=None):
    """A one-task job on ``spark`` running the engine's model path (``handle.load()``, then
    ``predict``); returns what the task saw: its Python worker's pid, the GPU addresses Spark
    gave it, the device the engine chose and where TensorFlow ran it, and the outputs."""
    def task(batches):
        import pandas as pd
        from pyspark import TaskContext

        for _ in batches:
            pass
        gpu = TaskContext.get().resources().get("gpu")
        loaded = handle.load()
        out = loaded.predict(X)
        if started:
            open(started, "w").close()
        deadline = time.monotonic() + 300
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield pd.DataFrame({"pid": [os.getpid()],
                            "addresses": [",".join(gpu.addresses) if gpu else ""],
                            "device": [loaded.device], "tfDevice": [loaded.tfDevice],
                            "out": [np.asarray(out, np.float64).ravel().tolist()]})

    def run(spark):
        df = spark.range(1, numPartitions=1).mapInPandas(
            task, "pid long, addresses string, device string, tfDevice string, "
                  "out array<double>", profile=profile)
        return df.collect()[0]
    return run


@pytest.mark.local_cluster
def test_every_task_runs_on_its_own_gpu(gpu_spark, tmp_path):
    import keras

    from sparkdl.engine.shipping import handleFor, kerasObject

    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    expected = model.predict_on_batch(X).ravel()
    handle = handleFor(kerasObject(model), gpu_spark)
    seen = []

    # 1. A task holds the first GPU (worker W1) while a second task runs on the other GPU in
    #    a second worker W2; W2 goes back to the idle queue first.
    started, gate = str(tmp_path / "started"), str(tmp_path / "gate")
    holder = {}
    thread = threading.Thread(target=lambda: holder.update(
        row=probe(handle, started, gate)(gpu_spark)))
    thread.start()
    deadline = time.monotonic() + 300
    while not os.path.exists(started) and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert os.path.exists(started), "the holding task never started"
    seen.append(probe(handle)(gpu_spark))
    open(gate, "w").close()
    thread.join(300)
    seen.insert(0, holder["row"])
    # 2. Both GPUs free again: the next task gets the first GPU, in the reused W2, whose first
    #    task had the other one.
    seen.append(probe(handle)(gpu_spark))
    # 3. A stage whose tasks ask for no GPU (stage-level scheduling), in a reused worker.
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    noGpu = ResourceProfileBuilder().require(TaskResourceRequests().cpus(1)).build
    seen.append(probe(handle, profile=noGpu)(gpu_spark))

    for row in seen:
        want = chooseDevice(row.addresses.split(",") if row.addresses else [])
        assert row.device == want, (row, seen)
        assert row.tfDevice == "/CPU:0"  # no GPU in this TensorFlow: degrade, don't fail
        assert_close(row.out, expected, 1e-5)
    assert {seen[0].addresses, seen[1].addresses} == {"0", "1"}, seen
    assert seen[3].addresses == "" and seen[3].device == "/CPU:0", seen
    first = {}
    switched = []
    for row in seen:
        if row.pid in first and first[row.pid] != row.addresses:
            switched.append(row)
        first.setdefault(row.pid, row.addresses)
    # The worker-reuse cases happened: a reused worker ran a task on another GPU than its
    # first task's, and one that had run on a GPU ran the no-GPU task.
    assert any(r.addresses for r in switched), seen
    assert seen[3] in switched and first[seen[3].pid] != "", seen

    # The stages' UDF path on the same GPU-scheduled cluster (4 tasks, 2 GPUs, reused
    # workers) gives Keras's outputs.
    from sparkdl import KerasTransformer

    path = str(tmp_path / "m.keras")
    model.save(path)
    rows = [(i, [float(v) for v in X[i % len(X)]]) for i in range(8)]
    df = gpu_spark.createDataFrame(rows, "id int, x array<float>").repartition(4)
    got = sorted(KerasTransformer(inputCol="x", outputCol="y", modelFile=path)
                 .transform(df).collect(), key=lambda r: r.id)
    want = np.stack([expected.reshape(len(X), -1)[i % len(X)] for i in range(8)])
    assert_close(np.array([r.y for r in got]), want, 1e-5)
