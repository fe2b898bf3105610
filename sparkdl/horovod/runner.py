"""HorovodRunner: run a training function on ``np`` processes as one Spark barrier job."""
import glob
import importlib.util
import inspect
import logging
import os
import pickle
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import warnings

from sparkdl.horovod._driver import Coordinator, DriverService, HorovodRunnerError
from sparkdl.horovod._supervisor import supervise
from sparkdl.horovod._wire import new_token

__all__ = ["HorovodRunner", "HorovodRunnerError"]

logger = logging.getLogger("sparkdl.horovod")

_VERBOSITIES = ("all", "log_callback_only")
_BACKENDS = ("auto", "horovod", "tensorflow")
# After asking the ranks to stop, how long the Spark job gets to end before it is cancelled.
_ABORT_GRACE_S = 15

NP_ZERO_DEPRECATION = (
    "Setting np=0 is deprecated and it will be removed in the next major release. Choosing np "
    "based on the total task slots at runtime is unreliable due to dynamic executor "
    "registration. Please set the number of parallel processes you need explicitly."
)


class HorovodRunner:
    """Runs a Python training function on ``np`` processes ("ranks") for distributed deep
    learning, and returns what rank 0's function returned.

    - ``np > 0``: one Spark barrier job of ``np`` tasks; each task starts one rank in its own
      process. The cluster must have ``np`` free task slots at once: with fewer slots in
      total, ``run`` fails at once saying how many there are; dynamic allocation must be off.
    - ``np < 0``: ``-np`` processes on the driver machine, without Spark (for debugging); on a
      GPU machine each local rank gets its own GPU.
    - ``np == 0``: as many ranks as the cluster has task slots (deprecated).

    Each rank runs ``main(**kwargs)`` (both cloudpickled) with its backend ready:

    - ``backend="horovod"``: Horovod's Gloo rendezvous server runs on the driver and every rank
      has the ``HOROVOD_*`` environment horovodrun would give it, so ``hvd.init()`` works
      unchanged (rank, size and local rank as laid out by Spark).
    - ``backend="tensorflow"``: ``TF_CONFIG`` describes all ranks (free ports picked on each
      host) and the rank's ``tf.distribute.MultiWorkerMirroredStrategy`` is created before
      ``main`` runs (:func:`sparkdl.horovod.tensorflow.strategy` returns it).
    - ``backend="auto"``: Horovod when it is installed on the driver, else TensorFlow.

    In every rank, :func:`sparkdl.horovod.rank`/``size``/``local_rank`` describe it, and a
    task given GPUs by Spark sees exactly those (``CUDA_VISIBLE_DEVICES``; none when Spark gave
    it none). To train a Keras 3 model data-parallel on either backend, see
    :mod:`sparkdl.horovod.tensorflow.keras`.

    With ``driver_log_verbosity="all"`` every line a rank writes to stdout/stderr is printed on
    the driver as it comes, prefixed ``[rank]<stdout>:``; with ``"log_callback_only"`` only
    :func:`sparkdl.horovod.log_to_driver` and
    :class:`sparkdl.horovod.tensorflow.keras.LogCallback` messages are (the rest stays in the
    executors' logs). If any rank raises or dies, ``run`` raises
    :class:`~sparkdl.horovod.HorovodRunnerError` with that rank and its traceback, after
    stopping every rank and the Spark job. If the ranks cannot all start within
    ``start_timeout`` seconds, it raises saying which are missing.

    On a Spark Connect session (``SparkSession.builder.remote(...)``) the ranks run as one
    barrier ``mapInArrow`` job whose partition 0 task hosts what the driver hosts here (the
    rendezvous included), so nothing connects back to the client; rank 0's value and the
    ranks' output come back through the query, so the output is printed when the run ends.

    :param np: number of ranks (see above).
    :param driver_log_verbosity: ``"all"`` or ``"log_callback_only"``.
    :param backend: ``"auto"``, ``"horovod"`` or ``"tensorflow"``.
    :param start_timeout: seconds for all ranks to start (and for ``hvd.init()`` to meet its
        peers).

    >>> from sparkdl import HorovodRunner
    >>> def main(scale):
    ...     import horovod.tensorflow as hvd
    ...     import tensorflow as tf
    ...     hvd.init()
    ...     total = hvd.allreduce(tf.constant(hvd.rank() * scale), op=hvd.Sum)
    ...     return hvd.size(), float(total)
    >>> HorovodRunner(np=2, backend="horovod", driver_log_verbosity="log_callback_only").run(
    ...     main, scale=10.0)
    (2, 10.0)
    """

    def __init__(self, *, np, driver_log_verbosity="all", backend="auto", start_timeout=600):
        if isinstance(np, bool) or not isinstance(np, int):
            raise TypeError(f"np must be an int, got {np!r}")
        if driver_log_verbosity not in _VERBOSITIES:
            raise ValueError(f"driver_log_verbosity must be one of {_VERBOSITIES}, "
                             f"got {driver_log_verbosity!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if not start_timeout or start_timeout <= 0:
            raise ValueError(f"start_timeout must be a positive number of seconds, "
                             f"got {start_timeout!r}")
        self.num_processor = np
        self.driver_log_verbosity = driver_log_verbosity
        self.backend = backend
        self.start_timeout = start_timeout
        if np == 0:
            warnings.warn(NP_ZERO_DEPRECATION, FutureWarning, stacklevel=2)

    def run(self, main, **kwargs):
        """Run ``main(**kwargs)`` on every rank; return rank 0's return value.

        :param main: the function each rank runs; it and ``kwargs`` must be picklable by
            cloudpickle (a failure names the object that is not).
        :return: rank 0's return value (it must be picklable too).
        """
        payload = _pickle_main(main, kwargs)
        backend = _resolve_backend(self.backend)
        if self.num_processor < 0:
            return _run_local(-self.num_processor, payload, backend, self)
        session = _connect_session()
        if session is not None:
            from sparkdl.horovod import _connect

            return _connect.run(session, self.num_processor, payload, backend, self)
        return _run_spark(self.num_processor, payload, backend, self)


# -- pickling ---------------------------------------------------------------------------------
def _describe(obj):
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    return f"{kind} {name}" if name else kind


def _unpicklable_reference(main, dumps):
    """Name the variable ``main`` refers to that cannot be pickled, or return ''."""
    fn = getattr(main, "__func__", main)
    candidates = []
    if hasattr(main, "__self__") and not inspect.ismodule(main.__self__):
        candidates.append(("bound object", "self", main.__self__))
    try:
        refs = inspect.getclosurevars(fn)
        candidates += [("closure variable", k, v) for k, v in refs.nonlocals.items()]
        candidates += [("global", k, v) for k, v in refs.globals.items()]
    except TypeError:
        pass
    for kind, name, value in candidates:
        try:
            dumps(value)
        except Exception:
            return f"; it uses the {kind} {name!r} ({_describe(value)}), which cannot be pickled"
    return ""


def _pickle_main(main, kwargs):
    from pyspark import cloudpickle

    if not callable(main):
        raise TypeError(f"main must be callable, got {main!r}")
    for what, value in [(f"keyword argument {name!r}", v) for name, v in kwargs.items()] + [
            ("main", main)]:
        try:
            cloudpickle.dumps(value)
        except Exception as e:
            culprit = _unpicklable_reference(main, cloudpickle.dumps) if value is main else ""
            raise pickle.PicklingError(
                f"HorovodRunner cannot pickle {what} ({_describe(value)}) to send it to the "
                f"ranks{culprit}: {e}"
            ) from e
    return cloudpickle.dumps((main, kwargs))


# -- backend ----------------------------------------------------------------------------------
def horovod_available():
    """Whether Horovod with its TensorFlow extension is installed (without importing it)."""
    spec = importlib.util.find_spec("horovod")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        glob.glob(os.path.join(path, "tensorflow", "mpi_lib*"))
        for path in spec.submodule_search_locations
    )


def _resolve_backend(backend):
    if backend == "auto":
        chosen = "horovod" if horovod_available() else "tensorflow"
        logger.info("HorovodRunner: backend='auto' chose %r (Horovod %s)", chosen,
                    "is installed" if chosen == "horovod" else "is not installed")
        return chosen
    if backend == "horovod" and not horovod_available():
        raise ImportError(
            "HorovodRunner(backend='horovod') needs Horovod with TensorFlow support on the "
            "driver (it runs the rendezvous server) and on every executor; install it with "
            "scripts/install_horovod.sh (pip install 'sparkdl[horovod]' needs its build flags), "
            "or use backend='tensorflow'"
        )
    return backend


# -- np < 0: local processes ------------------------------------------------------------------
def _local_gpus():
    """GPU ids this machine offers (respecting CUDA_VISIBLE_DEVICES), without importing TF."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, re.M)]


def _run_local(n, payload, backend, runner):
    token = new_token()
    service = DriverService(token, "127.0.0.1")
    stream = runner.driver_log_verbosity == "all"
    coord = Coordinator(service, n, backend, runner.start_timeout, "127.0.0.1")
    gpus = _local_gpus()
    if gpus and n > len(gpus):
        logger.warning("HorovodRunner: %d local ranks share %d GPUs", n, len(gpus))
    cpus = max(1, (os.cpu_count() or 1) // n)
    outcomes = {}

    def one(slot):
        try:
            outcomes[slot] = supervise(
                ("127.0.0.1", service.port), token, slot, "127.0.0.1", payload,
                backend=backend, stream_output=stream, cpus=cpus,
                gpus=[gpus[slot % len(gpus)]] if gpus else None,
            )
        except BaseException as e:  # e.g. the rank's process could not start
            service.events.put(("job_failed", None, e))

    logger.info("HorovodRunner: starting %d local processes (%s backend)", n, backend)
    threads = [threading.Thread(target=one, args=(slot,), daemon=True) for slot in range(n)]
    for t in threads:
        t.start()
    try:
        coord.wait_for_ranks()
        coord.wait_for_completion()
    except BaseException as e:
        coord.abort(f"run failed: {e}")
        raise
    finally:
        service.close()  # also stops any supervisor still waiting
        for t in threads:
            t.join(30)
        coord.close()
    return _value_of_rank0([o for o in outcomes.values() if o.rank == 0][0].value)


def _value_of_rank0(data):
    from pyspark import cloudpickle

    return None if data is None else cloudpickle.loads(data)


# -- np >= 0: a Spark barrier job -------------------------------------------------------------
def _connect_session():
    """The active Spark Connect session when this process is a Connect client, else None."""
    from pyspark.sql.utils import is_remote

    if not is_remote():
        return None
    from pyspark.sql import SparkSession

    from sparkdl.utils.session import is_connect

    session = SparkSession.getActiveSession()
    if session is None or not is_connect(session):
        raise RuntimeError("HorovodRunner(np >= 0) on Spark Connect needs an active session: "
                           "create it first with SparkSession.builder.remote(...).getOrCreate()")
    return session


def _spark_context():
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    if sc is None:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is None:
            session = SparkSession.builder.getOrCreate()
        try:
            sc = session.sparkContext
        except Exception as e:  # Spark Connect has no SparkContext
            raise RuntimeError("HorovodRunner(np >= 0) runs a barrier RDD job and needs a classic "
                               "SparkSession (Spark Connect is not supported)") from e
    return sc


def _is_local(master):
    return master == "local" or master.startswith("local[")


def _driver_addresses(sc):
    """``(bind address, address the ranks connect to)`` for the driver's control socket and
    Horovod's rendezvous server, chosen as Spark chooses its own driver's: it listens on
    ``spark.driver.bindAddress``, else ``spark.driver.host``, and the executors reach it at
    ``spark.driver.host``; with a ``local[...]`` master every rank runs on this machine, so
    both are loopback. Never every interface unless the configuration says so."""
    if _is_local(sc.master):
        return "127.0.0.1", "127.0.0.1"
    conf = sc.getConf()
    host = conf.get("spark.driver.host") or "127.0.0.1"
    return conf.get("spark.driver.bindAddress") or host, host


def _task_slots(sc):
    """Task slots the cluster has now (what barrier scheduling counts)."""
    jsc = sc._jsc.sc()
    try:
        profile = jsc.resourceProfileManager().defaultResourceProfile()
        return int(jsc.maxNumConcurrentTasks(profile))
    except Exception:  # pragma: no cover - internal API moved
        return int(sc.defaultParallelism)


def _expected_slots(sc):
    """Task slots the configuration promises once all executors registered, or None."""
    conf = sc.getConf()
    task_cpus = int(conf.get("spark.task.cpus", "1"))
    m = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]", sc.master)
    if m:
        return int(m.group(1)) * (int(m.group(2)) // task_cpus)
    instances, cores = conf.get("spark.executor.instances"), conf.get("spark.executor.cores")
    if instances and cores:
        return int(instances) * (int(cores) // task_cpus)
    return None


def check_slots(spark, np):
    """Fail at once when ``spark``'s cluster cannot run ``np`` barrier tasks together (a
    classic or a Spark Connect session); used before work that a HorovodRunner run follows."""
    from sparkdl.utils.session import is_connect

    if is_connect(spark):
        from sparkdl.horovod import _connect

        return _connect.check_slots(spark, np)
    return check_cluster(spark.sparkContext, np, time.monotonic() + 600)


def check_cluster(sc, np, deadline):
    """Fail at once when barrier mode cannot run np tasks; return the slot count."""
    conf = sc.getConf()
    local = _is_local(sc.master)
    if not local and conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        raise RuntimeError(
            "HorovodRunner runs its ranks as one Spark barrier stage, which needs all its tasks "
            "running at the same time on a fixed set of executors; with dynamic allocation "
            "Spark may remove idle executors or not have them yet, so it refuses barrier "
            "stages (SPARK-24942). Set spark.dynamicAllocation.enabled=false for this "
            "application."
        )
    slots = _task_slots(sc)
    expected = _expected_slots(sc) if not local else None
    if np and slots < np and expected is not None and expected >= np:
        # Executors the configuration promises are still registering (e.g. just after
        # start-up): wait for them, visibly and within start_timeout.
        logger.warning("HorovodRunner: %d of %d task slots registered; waiting for executors",
                       slots, expected)
        while slots < np and time.monotonic() < deadline:
            time.sleep(0.5)
            slots = _task_slots(sc)
    if np and slots < np:
        task_cpus = conf.get("spark.task.cpus", "1")
        raise RuntimeError(
            f"HorovodRunner(np={np}) needs {np} task slots at the same time for its barrier "
            f"job, but the cluster has {slots} task slot(s) (master {sc.master}, "
            f"spark.task.cpus={task_cpus}). Use np <= {slots}, or add executors or cores."
        )
    return slots


def _barrier_task(address, token, payload, backend, stream):
    def task(_):
        from pyspark import BarrierTaskContext

        from sparkdl.utils.worker import taskGpus

        ctx = BarrierTaskContext.get()
        slot = ctx.partitionId()
        # The executor's address as Spark knows it: the other ranks reach this host by it.
        host = ctx.getTaskInfos()[slot].address.rsplit(":", 1)[0].strip("[]")
        outcome = supervise(
            address, token, slot, host, payload, backend=backend, stream_output=stream,
            cpus=int(ctx.cpus()), gpus=taskGpus(),
            local_output=None if stream else sys.stderr,
        )
        # A failed rank was reported to the driver, which stops the run; the task itself
        # ends normally so that Spark does not retry the barrier stage.
        yield (outcome.rank, outcome.value if outcome.ok and outcome.rank == 0 else None)

    return task


def _run_spark(np, payload, backend, runner):
    sc = _spark_context()
    deadline = time.monotonic() + runner.start_timeout
    slots = check_cluster(sc, np, deadline)
    if np == 0:
        np = slots
        logger.warning("HorovodRunner: np=0 uses all %d task slots", np)
    bind_host, driver_host = _driver_addresses(sc)
    token = new_token()
    service = DriverService(token, bind_host)
    stream = runner.driver_log_verbosity == "all"
    group = f"sparkdl-horovod-{secrets.token_hex(6)}"  # unrelated to the token

    def describe_wait():
        return (f"The barrier stage needs {np} free task slots at once and the cluster has "
                f"{_task_slots(sc)}; other jobs may be holding them.")

    coord = Coordinator(service, np, backend, runner.start_timeout, driver_host,
                        describe_wait=describe_wait, deadline=deadline)
    results = {}

    def job():
        sc.setJobGroup(group, f"HorovodRunner np={np} ({backend})", interruptOnCancel=True)
        try:
            rdd = sc.parallelize(range(np), np).barrier()
            task = _barrier_task((driver_host, service.port), token, payload, backend, stream)
            results["rows"] = rdd.mapPartitions(task).collect()
            service.events.put(("job_done", None, None))
        except BaseException as e:
            service.events.put(("job_failed", None, e))

    from pyspark import InheritableThread

    logger.info("HorovodRunner: launching np=%d ranks as a barrier job (%s backend)", np, backend)
    thread = InheritableThread(target=job, name="sparkdl-horovod-job", daemon=True)
    thread.start()
    try:
        coord.wait_for_ranks()
        coord.wait_for_completion()
    except BaseException as e:
        coord.abort(f"run failed: {e}")
        if coord.conns:  # ranks that got the abort stop and end their tasks themselves
            thread.join(_ABORT_GRACE_S)
        if thread.is_alive():
            sc.cancelJobGroup(group)
            thread.join(30)
        raise
    finally:
        service.close()
        coord.close()
    thread.join(60)
    if thread.is_alive():  # pragma: no cover - every rank reported done
        sc.cancelJobGroup(group)
        thread.join(30)
    rows = results.get("rows") or []
    data = [value for rank, value in rows if rank == 0]
    if not data:
        raise HorovodRunnerError("HorovodRunner: rank 0's result did not come back from its task")
    return _value_of_rank0(data[0])
