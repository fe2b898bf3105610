"""Faults on local-cluster[2,1,1024]: a Python worker or an executor JVM killed in the middle of
a featurizer job, a HorovodRunner rank killed, an estimator's training task killed. Spark's
retries must give exactly a clean run's result, and a failure must be named and leave nothing
running."""
import os
import signal
import sys
import threading
import time
import uuid

import numpy as np
import psutil
import pytest
from PIL import Image
from pyspark import cloudpickle
from pyspark.sql import functions as F

from sparkdl import DeepImageFeaturizer, HorovodRunner, KerasImageFileEstimator, readImages
from sparkdl.horovod.runner import HorovodRunnerError
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.local_cluster


# -- finding and killing our own application's processes --------------------------------------
def executor_jvms(sc):
    """This application's executor JVMs (their command line names the application id)."""
    app = sc.applicationId
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in cmd and app in cmd:
            found.append(p)
    return found


def python_workers(sc):
    """The Python workers forked by the pyspark daemons of this application's executors."""
    workers = []
    for jvm in executor_jvms(sc):
        try:
            for daemon in jvm.children():
                if "pyspark.daemon" in " ".join(daemon.cmdline()):
                    workers += daemon.children()
        except psutil.NoSuchProcess:
            pass
    return workers


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill(processes):
    for p in processes:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


class Job:
    """``action()`` run in a thread under its own job group, with the group's task counts."""

    def __init__(self, sc, action):
        self.sc, self.group = sc, f"faults-{uuid.uuid4().hex[:8]}"
        self.result = self.error = None

        def run():
            sc.setJobGroup(self.group, "fault test")
            try:
                self.result = action()
            except BaseException as e:  # reported by the test
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def _stages(self):
        tracker = self.sc.statusTracker()
        for job in tracker.getJobIdsForGroup(self.group):
            info = tracker.getJobInfo(job)
            for stage in (info.stageIds if info else []):
                stageInfo = tracker.getStageInfo(stage)
                if stageInfo is not None:
                    yield stageInfo

    def running(self, select=None):
        """The ids of the stages with tasks running now (those ``select(stageInfo)`` takes)."""
        return {s.stageId for s in self._stages()
                if s.numActiveTasks and (select is None or select(s))}

    def failed(self):
        return sum(s.numFailedTasks for s in self._stages())

    def wait_running(self, select=None, hold=0.5, timeout=300):
        """Wait until one stage (that ``select`` takes) has had tasks running for ``hold`` s."""
        deadline = time.monotonic() + timeout
        since = {}
        while True:
            assert self.thread.is_alive() and time.monotonic() < deadline, "no task started"
            now = time.monotonic()
            since = {stage: since.get(stage, now) for stage in self.running(select)}
            if any(now - start >= hold for start in since.values()):
                return
            time.sleep(0.05)

    def join(self, timeout=600):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the job did not finish"


def run_killing(sc, action, victims, select=None, hold=0.5, attempts=3, after_kill=None,
                select_for=None):
    """Run ``action`` and kill ``victims(sc)`` once a stage has run tasks for ``hold`` s,
    until a task attempt actually failed (a kill between two tasks fails none);
    ``after_kill()`` runs right after each kill (e.g. to open a gate the tasks wait at).
    ``select_for(job)``, if given, makes the ``select`` of each attempt's job."""
    for _ in range(attempts):
        job = Job(sc, action)
        job.wait_running(select_for(job) if select_for else select, hold)
        kill(victims(sc))
        if after_kill is not None:
            after_kill()
        job.join()
        if job.error is not None or job.failed():
            return job
    pytest.fail(f"no task attempt failed in {attempts} kills")


def wait_for_executors(sc, count=2, timeout=120):
    """Executors registered (the driver excluded), waiting for a killed one's replacement."""
    deadline = time.monotonic() + timeout
    while len(sc.statusTracker().getExecutorInfos()) - 1 < count:
        assert time.monotonic() < deadline, "the cluster did not get its executors back"
        time.sleep(0.5)


# -- a featurizer job -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fault_images")
    rng = np.random.default_rng(3)
    for i in range(32):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(d / f"{i:02d}.png")
    (d / "broken.png").write_bytes(b"not an image")
    return str(d)


def gated(path):
    """A filter that keeps every row but holds each task until the file ``path`` exists: the
    tasks are surely running when the test kills, however fast the machine (an ungated job
    of 33 small images could finish before the kill)."""
    @F.udf("boolean")
    def passes(_):
        while not os.path.exists(path):
            time.sleep(0.05)
        return True

    return passes


def featurize(image_dir, gate=None):
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features",
                                     modelName="MobileNetV3Small", weights=None, batchSize=4)
    # readImages partitions the files by the listing (no shuffle): the same rows in the same
    # partitions, in the same order, every run.
    images = readImages(image_dir)
    if gate is not None:
        images = images.filter(gated(gate)(F.col("image.origin")))
    df = featurizer.transform(images).select("image.origin", "features", "error")
    return lambda: [(r.origin, None if r.features is None else r.features.toArray(), r.error)
                    for r in df.collect()]


def assert_same_rows(got, want):
    assert [(o, e) for o, _, e in got] == [(o, e) for o, _, e in want]  # row for row, in order
    for (origin, a, _), (_, b, _) in zip(got, want):
        assert (a is None) == (b is None), origin
        if a is not None:
            assert_close(a, b, 1e-5, err_msg=origin)


_clean = {}


@pytest.fixture
def clean_features(cluster_spark, image_dir):
    """The featurizer job's result, undisturbed (computed once for the module)."""
    if image_dir not in _clean:
        _clean[image_dir] = featurize(image_dir)()
    clean = _clean[image_dir]
    assert len(clean) == 33 and sum(f is None for _, f, _ in clean) == 1
    return clean


def test_python_worker_killed_mid_featurizer_job(cluster_spark, image_dir, clean_features,
                                                 tmp_path):
    sc = cluster_spark.sparkContext
    clean = clean_features
    gate = tmp_path / "gate"
    job = run_killing(sc, featurize(image_dir, str(gate)), python_workers,
                      after_kill=gate.touch)
    assert job.error is None, job.error
    assert job.failed() >= 1
    assert_same_rows(job.result, clean)


def test_executor_jvm_killed_mid_featurizer_job(cluster_spark, image_dir, clean_features,
                                                tmp_path):
    sc = cluster_spark.sparkContext
    wait_for_executors(sc)
    clean = clean_features
    gate = tmp_path / "gate"
    job = run_killing(sc, featurize(image_dir, str(gate)), lambda sc: executor_jvms(sc)[:1],
                      after_kill=gate.touch)
    assert job.error is None, job.error
    assert job.failed() >= 1
    assert_same_rows(job.result, clean)
    wait_for_executors(sc)  # the standalone worker started a new executor


# -- a HorovodRunner rank -------------------------------------------------------------------
def wait_to_be_killed(pid_dir):
    """Each rank writes its pid (and a child's) and waits in a collective, as in training."""
    import subprocess

    import tensorflow as tf

    from sparkdl import horovod as shvd
    from sparkdl.horovod.tensorflow import allreduce

    helper = subprocess.Popen(["sleep", "600"])
    with open(os.path.join(pid_dir, f"rank{shvd.rank()}.pids"), "w") as f:
        f.write(f"{os.getpid()} {helper.pid}")
    allreduce(tf.constant(1.0))
    time.sleep(600)


def listening_ports(pid):
    return {c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN}


def test_rank_sigkilled_is_named_and_leaves_nothing(cluster_spark, tmp_path):
    sc = cluster_spark.sparkContext
    wait_for_executors(sc)
    ports = listening_ports(os.getpid())
    outcome = {}

    def run():
        try:
            HorovodRunner(np=2, backend="tensorflow").run(wait_to_be_killed,
                                                          pid_dir=str(tmp_path))
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    files = [tmp_path / f"rank{r}.pids" for r in (0, 1)]
    while not all(f.exists() and f.read_text() for f in files):
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.1)
    pids = [int(p) for f in files for p in f.read_text().split()]
    time.sleep(1)  # both ranks in the collective
    killed = time.monotonic()
    os.kill(pids[2], signal.SIGKILL)  # rank 1's own process
    thread.join(60)
    took = time.monotonic() - killed
    assert not thread.is_alive(), "HorovodRunner.run did not return within 60 s"
    error = outcome.get("error")
    assert isinstance(error, HorovodRunnerError), error
    assert error.rank == 1 and "rank 1" in str(error) and "SIGKILL" in str(error), str(error)
    assert took < 60, took
    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "a rank's process (or its child) is still running"
    assert listening_ports(os.getpid()) == ports, "the runner left a port open"
    deadline = time.monotonic() + 30
    while sc.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sc.statusTracker().getActiveJobsIds() == []


# -- an estimator's training task -----------------------------------------------------------
def tiny_loader(uri):
    """A 6x6 RGB input whose mean colour is the label."""
    label = int(uri.rsplit("-", 1)[1])
    rng = np.random.default_rng(int(uri.split("-")[1]))
    return (rng.uniform(0, 0.5, (6, 6, 3)) + 0.5 * label).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    path = str(tmp_path_factory.mktemp("tiny") / "tiny.keras")
    model.save(path)
    return path


# Long enough that the single training task is surely running when the test looks (100 epochs
# took under a second on an idle machine: the job finished before the kill).
EPOCHS = 400


def one_task_stages(job):
    """The ids of the job group's one-task stages, in the order Spark created them."""
    return sorted(s.stageId for s in job._stages() if s.numTasks == 1)


def tiny_fit(spark, model_file):
    rows = spark.sparkContext.parallelize([(f"row-{i}-{i % 2}", i % 2) for i in range(32)], 2)
    df = spark.createDataFrame(rows, "uri string, label int")
    estimator = KerasImageFileEstimator(
        inputCol="uri", labelCol="label", outputCol="p", modelFile=model_file,
        imageLoader=tiny_loader, kerasLoss="sparse_categorical_crossentropy",
        kerasFitParams={"epochs": EPOCHS, "batch_size": 4, "verbose": 0})
    return lambda: estimator.fit(df)


def test_training_task_killed_retrains_the_whole_model(cluster_spark, tiny_cnn):
    from sparkdl.engine.shipping import modelFromBytes

    sc = cluster_spark.sparkContext
    wait_for_executors(sc)
    first = Job(sc, tiny_fit(cluster_spark, tiny_cnn))
    first.join()
    clean = first.result
    # fit's stages come in a fixed order; the training stage is its last one-task stage (the
    # check of the loader's output on a sample, also one task, runs before the store).
    ordinal = len(one_task_stages(first)) - 1

    def training_stage(job):
        def select(stage):
            ids = one_task_stages(job)
            return len(ids) > ordinal and stage.stageId == ids[ordinal]
        return select

    job = run_killing(sc, tiny_fit(cluster_spark, tiny_cnn), python_workers,
                      select_for=training_stage, hold=0.2)
    # Spark retries the task: training starts again from the stored rows.
    assert job.error is None, job.error
    assert job.failed() >= 1
    model = job.result
    # Never a partial model: the retried task trained all epochs, to the clean run's weights.
    assert len(model.fitSummary["history"]["loss"]) == EPOCHS
    np.testing.assert_allclose(model.fitSummary["history"]["loss"],
                               clean.fitSummary["history"]["loss"], rtol=1e-5)
    for a, b in zip(modelFromBytes(model.getOrDefault("modelBytes")).get_weights(),
                    modelFromBytes(clean.getOrDefault("modelBytes")).get_weights()):
        assert_close(a, b, 1e-5)
