"""HorovodRunner: local processes, barrier jobs on local[2] and local-cluster, both backends,
rank 0's value, streamed output, failures, start-up limits."""
import os
import pickle
import re
import subprocess
import sys
import threading
import time

import pytest

from hvd_helpers import alive, require_backend
from sparkdl.horovod import HorovodRunner
from sparkdl.horovod.runner import NP_ZERO_DEPRECATION, HorovodRunnerError, check_cluster

# Executors and ranks cannot import this test module: ship its functions by value.
from pyspark import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def describe_rank(tag):
    """Each rank reports what its backend sees; rank 0's report comes back."""
    import json

    from sparkdl import horovod as shvd

    me = {"rank": shvd.rank(), "size": shvd.size(), "local_rank": shvd.local_rank(),
          "backend": shvd.backend(), "pid": os.getpid()}
    if shvd.backend() == "horovod":
        import horovod.tensorflow as hvd  # unmodified hvd.init(): the runner's env suffices

        hvd.init()
        import tensorflow as tf

        me.update(hvd_rank=hvd.rank(), hvd_size=hvd.size(), hvd_local_rank=hvd.local_rank(),
                  hvd_sum=float(hvd.allreduce(tf.constant(float(hvd.rank() + 1)), op=hvd.Sum)))
    else:
        from sparkdl.horovod.tensorflow import allreduce, strategy

        config = json.loads(os.environ["TF_CONFIG"])
        import tensorflow as tf

        me.update(tf_index=config["task"]["index"], tf_workers=len(config["cluster"]["worker"]),
                  replicas=strategy().num_replicas_in_sync,
                  tf_sum=float(allreduce(tf.constant(float(shvd.rank() + 1)), average=False)))
    print(f"{tag} stdout line from rank {shvd.rank()}", flush=True)
    print(f"{tag} stderr line from rank {shvd.rank()}", file=sys.stderr, flush=True)
    shvd.log_to_driver(f"{tag} logged by rank {shvd.rank()}")
    return me


def check_two_ranks(me, backend, output, tag):
    assert me["rank"] == 0 and me["size"] == 2 and me["backend"] == backend
    assert me["pid"] != os.getpid()  # ran in its own process
    if backend == "horovod":
        assert (me["hvd_rank"], me["hvd_size"], me["hvd_sum"]) == (0, 2, 3.0)
    else:
        assert (me["tf_index"], me["tf_workers"], me["replicas"], me["tf_sum"]) == (0, 2, 2, 3.0)
    for rank in (0, 1):
        assert f"[{rank}]<stdout>:{tag} stdout line from rank {rank}" in output
        assert f"[{rank}]<stderr>:{tag} stderr line from rank {rank}" in output
        assert f"[{rank}]<log>:{tag} logged by rank {rank}" in output


def test_local_processes(backend, capfd):
    me = HorovodRunner(np=-2, backend=backend).run(describe_rank, tag="local")
    out, err = capfd.readouterr()
    check_two_ranks(me, backend, out + err, "local")
    assert me["local_rank"] == 0


def test_barrier_job_on_local_mode(spark, backend, capfd):
    me = HorovodRunner(np=2, backend=backend).run(describe_rank, tag="barrier")
    out, err = capfd.readouterr()
    check_two_ranks(me, backend, out + err, "barrier")
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []


@pytest.mark.local_cluster
def test_barrier_job_on_local_cluster(cluster_spark, backend, capfd):
    me = HorovodRunner(np=2, backend=backend).run(describe_rank, tag="cluster")
    out, err = capfd.readouterr()
    check_two_ranks(me, backend, out + err, "cluster")


def quiet_main():
    from sparkdl import horovod as shvd

    print("not shown on the driver", flush=True)
    shvd.log_to_driver(f"shown: rank {shvd.rank()}")
    return {"size": shvd.size(), "value": [1, 2.5, "x"]}


def test_log_callback_only_shows_only_logged_messages(capfd):
    result = HorovodRunner(np=-2, driver_log_verbosity="log_callback_only").run(quiet_main)
    out, err = capfd.readouterr()
    assert result == {"size": 2, "value": [1, 2.5, "x"]}
    assert "[0]<log>:shown: rank 0" in out and "[1]<log>:shown: rank 1" in out
    assert "not shown" not in out + err


def fail_on_rank_1(pid_dir, collective):
    """Rank 1 raises once rank 0 is up; rank 0 meanwhile waits for rank 1 in a collective
    (or a long sleep), as a real run would."""
    from sparkdl import horovod as shvd

    with open(os.path.join(pid_dir, f"rank{shvd.rank()}.pid"), "w") as f:
        f.write(str(os.getpid()))
    if shvd.rank() == 1:
        deadline = time.time() + 60
        rank0_ready = os.path.join(pid_dir, "rank0-child.pid")
        while not os.path.exists(rank0_ready) and time.time() < deadline:
            time.sleep(0.1)
        raise ValueError("boom from rank 1")
    # Something the rank started must go down with it too.
    helper = subprocess.Popen(["sleep", "600"])
    with open(os.path.join(pid_dir, "rank0-child.pid"), "w") as f:
        f.write(str(helper.pid))
    if collective:
        import tensorflow as tf

        from sparkdl.horovod.tensorflow import allreduce

        allreduce(tf.constant(1.0))  # never completes: rank 1 does not take part
    time.sleep(600)


def assert_rank_1_failure_cleans_up(runner, tmp_path, collective=False):
    start = time.monotonic()
    with pytest.raises(HorovodRunnerError) as info:
        runner.run(fail_on_rank_1, pid_dir=str(tmp_path), collective=collective)
    took = time.monotonic() - start
    assert took < 60, took
    message = str(info.value)
    assert info.value.rank == 1 and "rank 1 failed" in message
    assert "ValueError: boom from rank 1" in message and "fail_on_rank_1" in message
    names = ("rank0", "rank1", "rank0-child")
    pids = [int((tmp_path / f"{name}.pid").read_text()) for name in names]
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "a rank's process (or its child) is still running"


def test_rank_failure_in_local_processes(tmp_path):
    assert_rank_1_failure_cleans_up(HorovodRunner(np=-2), tmp_path)


def test_rank_failure_in_barrier_job(spark, backend, tmp_path):
    assert_rank_1_failure_cleans_up(HorovodRunner(np=2, backend=backend), tmp_path,
                                    collective=True)
    tracker = spark.sparkContext.statusTracker()
    deadline = time.monotonic() + 10
    while tracker.getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tracker.getActiveJobsIds() == []
    # The session is still usable, with both slots free again.
    assert spark.range(4).count() == 4


def test_np_above_task_slots_fails_at_once(spark):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"needs 3 task slots .* cluster has 2 task slot"):
        HorovodRunner(np=3).run(quiet_main)
    assert time.monotonic() - start < 5
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []


def test_np_zero_uses_all_slots_with_deprecation_warning(spark):
    with pytest.warns(FutureWarning, match="np=0 is deprecated"):
        runner = HorovodRunner(np=0, driver_log_verbosity="log_callback_only")
    assert NP_ZERO_DEPRECATION.startswith("Setting np=0 is deprecated")
    assert runner.run(quiet_main)["size"] == 2


def hold_a_slot(seconds):
    import time as _time

    _time.sleep(seconds)
    return 1


def test_start_timeout_names_what_is_missing(spark):
    sc = spark.sparkContext

    def hold():
        try:
            sc.parallelize([30], 1).map(hold_a_slot).collect()
        except Exception:  # cancelled below
            pass

    blocker = threading.Thread(target=hold, daemon=True)
    blocker.start()
    try:
        deadline = time.monotonic() + 30
        while not sc.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        start = time.monotonic()
        with pytest.raises(HorovodRunnerError, match=r"start_timeout=4 s: 0 of 2 ranks started"
                                                     r".*needs 2 free task slots"):
            HorovodRunner(np=2, start_timeout=4).run(quiet_main)
        assert time.monotonic() - start < 25
    finally:
        sc.cancelAllJobs()
        blocker.join(30)
    deadline = time.monotonic() + 10
    while sc.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sc.statusTracker().getActiveJobsIds() == []


class _Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class _FakeSc:
    def __init__(self, master, conf):
        self.master, self._conf = master, _Conf(conf)

    def getConf(self):
        return self._conf


def test_dynamic_allocation_is_refused_with_the_reason():
    sc = _FakeSc("spark://host:7077", {"spark.dynamicAllocation.enabled": "true"})
    with pytest.raises(RuntimeError, match="barrier stage.*dynamicAllocation.enabled=false"):
        check_cluster(sc, 2, time.monotonic() + 1)


def test_pickling_failure_names_the_object():
    lock = threading.Lock()

    def uses_lock():
        with lock:
            return 1

    with pytest.raises(pickle.PicklingError, match=r"cannot pickle main .*closure variable 'lock'"):
        HorovodRunner(np=-1).run(uses_lock)
    with pytest.raises(pickle.PicklingError, match=r"keyword argument 'guard'"):
        HorovodRunner(np=-1).run(quiet_main, guard=lock)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="driver_log_verbosity"):
        HorovodRunner(np=2, driver_log_verbosity="some")
    with pytest.raises(ValueError, match="backend"):
        HorovodRunner(np=2, backend="mpi")
    with pytest.raises(TypeError, match="np must be an int"):
        HorovodRunner(np=2.0)


def gpu_env():
    from sparkdl import horovod as shvd

    shvd.log_to_driver(f"gpu {os.environ.get('CUDA_VISIBLE_DEVICES')}")
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_local_ranks_get_distinct_gpus(monkeypatch, capfd):
    # What nvidia-smi / CUDA_VISIBLE_DEVICES would offer on a 2-GPU machine.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert HorovodRunner(np=-2, driver_log_verbosity="log_callback_only").run(gpu_env) == "3"
    out = capfd.readouterr().out
    assert "[0]<log>:gpu 3" in out and "[1]<log>:gpu 5" in out


def test_barrier_task_without_gpus_sees_none(spark):
    assert HorovodRunner(np=2, driver_log_verbosity="log_callback_only").run(gpu_env) == ""


def test_auto_backend_is_logged(caplog):
    require_backend("horovod")
    with caplog.at_level("INFO", logger="sparkdl.horovod"):
        HorovodRunner(np=-1, driver_log_verbosity="log_callback_only").run(quiet_main)
    assert re.search(r"backend='auto' chose 'horovod'", caplog.text)


def test_import_does_not_load_tensorflow_or_horovod():
    code = (
        "import sys, sparkdl, sparkdl.horovod, sparkdl.horovod.runner\n"
        "sparkdl.HorovodRunner, sparkdl.horovod.HorovodRunner\n"
        "import sparkdl.horovod.tensorflow\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'horovod') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def die_after_one_collective():
    import tensorflow as tf

    from sparkdl import horovod as shvd
    from sparkdl.horovod.tensorflow import allreduce

    allreduce(tf.constant(1.0))
    if shvd.rank() == 1:
        print("rank 1's last words", file=sys.stderr, flush=True)
        os._exit(3)
    allreduce(tf.constant(2.0))  # fails: its peer is gone
    time.sleep(600)


def test_rank_dying_is_named_not_the_peer_it_took_down(backend):
    with pytest.raises(HorovodRunnerError) as info:
        HorovodRunner(np=-2, backend=backend).run(die_after_one_collective)
    assert info.value.rank == 1, str(info.value)
    message = str(info.value)
    assert "exited with code 3 before main returned" in message
    assert "rank 1's last words" in message
