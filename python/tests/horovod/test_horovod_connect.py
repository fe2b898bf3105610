"""HorovodRunner on a Spark Connect session: the barrier job runs through the query, rank 0's
value and the ranks' output come back through it, and a failing rank is named."""
import sys

import pytest

from hvd_helpers import require_backend
from sparkdl.horovod import HorovodRunner, HorovodRunnerError

from pyspark import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def reduce_ranks(size_mb):
    """Both ranks sum their rank + 1 through the backend; rank 0 returns a value larger than
    a Connect Arrow batch (chunked on the way back)."""
    import numpy as np

    from sparkdl import horovod as shvd

    if shvd.backend() == "horovod":
        import horovod.tensorflow as hvd
        import tensorflow as tf

        hvd.init()
        total = float(hvd.allreduce(tf.constant(float(hvd.rank() + 1)), op=hvd.Sum))
    else:
        import tensorflow as tf

        from sparkdl.horovod.tensorflow import allreduce

        total = float(allreduce(tf.constant(float(shvd.rank() + 1)), average=False))
    print(f"stdout line from rank {shvd.rank()}", flush=True)
    print(f"stderr line from rank {shvd.rank()}", file=sys.stderr, flush=True)
    shvd.log_to_driver(f"logged by rank {shvd.rank()}")
    big = np.random.default_rng(7).integers(0, 256, size_mb << 20, dtype=np.uint8)
    return {"rank": shvd.rank(), "size": shvd.size(), "total": total, "big": big}


@pytest.mark.parametrize("backend", ["tensorflow", "horovod"])
def test_two_ranks_on_connect(connect_spark, backend, capfd, monkeypatch):
    import numpy as np

    from sparkdl.horovod import _driver

    require_backend(backend)

    def no_listening_on_the_client(*args, **kwargs):
        raise AssertionError("a Connect client must not host the run's service")

    monkeypatch.setattr(_driver.DriverService, "__init__", no_listening_on_the_client)
    me = HorovodRunner(np=2, backend=backend).run(reduce_ranks, size_mb=6)
    out, err = capfd.readouterr()
    assert (me["rank"], me["size"], me["total"]) == (0, 2, 3.0)
    expected = np.random.default_rng(7).integers(0, 256, 6 << 20, dtype=np.uint8)
    np.testing.assert_array_equal(me["big"], expected)
    for rank in (0, 1):
        assert f"[{rank}]<stdout>:stdout line from rank {rank}" in out
        assert f"[{rank}]<stderr>:stderr line from rank {rank}" in err
        assert f"[{rank}]<log>:logged by rank {rank}" in out


def fail_on_rank_1():
    from sparkdl import horovod as shvd

    if shvd.rank() == 1:
        raise ValueError("boom from rank 1")
    import time

    time.sleep(600)  # stopped by the runner once rank 1 failed


def test_failing_rank_is_named_with_its_traceback(connect_spark):
    import time

    start = time.monotonic()
    with pytest.raises(HorovodRunnerError) as info:
        HorovodRunner(np=2, backend="tensorflow",
                      driver_log_verbosity="log_callback_only").run(fail_on_rank_1)
    assert time.monotonic() - start < 90
    assert info.value.rank == 1 and "rank 1 failed" in str(info.value)
    assert "ValueError: boom from rank 1" in info.value.remote_traceback
    assert connect_spark.range(3).count() == 3  # the session is still usable


def test_np_above_task_slots_fails_at_once(connect_spark):
    with pytest.raises(RuntimeError, match=r"needs 3 task slots .* has 2"):
        HorovodRunner(np=3).run(fail_on_rank_1)
