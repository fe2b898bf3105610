"""HorovodRunner on a Spark Connect session: the ranks as one barrier ``mapInArrow`` job.

A Connect client has no SparkContext and may sit behind NAT, so nothing connects back to it.
What the classic runner does on the driver happens in the task of partition 0 instead:

1. Every barrier task learns its executor's address; task 0 starts the
   :class:`~sparkdl.horovod._driver.DriverService` on its own host (never all interfaces)
   with a random token and shares ``host, port, token`` through
   ``BarrierTaskContext.allGather`` (Spark's own barrier coordinator).
2. Task 0 runs the :class:`~sparkdl.horovod._driver.Coordinator` in a thread (so Horovod's
   Gloo rendezvous server, or the TF cluster spec, is hosted there), and every task,
   task 0 included, supervises its rank with :func:`~sparkdl.horovod._supervisor.supervise`
   exactly as on a classic cluster. Rank 0 is always task 0's rank.
3. Task 0 returns the outcome through the query, as rows ``(kind, seq, data)``: the ranks'
   output lines (``"out"``), then rank 0's cloudpickled value in chunks (``"value"``) or the
   failure (``"error"``, JSON with the rank, message and traceback). Connect caps an Arrow
   batch at a few MB, so nothing is sent in one piece larger than :data:`CHUNK_BYTES`.

Spark returns a task's rows when the task ends, so on Connect the ranks' output reaches the
client when the run ends (it is also in task 0's executor log as it happens).
"""
import json
import logging
import re
import sys
import threading
import uuid

from sparkdl.horovod._driver import Coordinator, DriverService, HorovodRunnerError
from sparkdl.horovod._supervisor import supervise
from sparkdl.horovod._wire import new_token

logger = logging.getLogger("sparkdl.horovod")

SCHEMA = "kind string, seq long, data binary"
#: Largest piece of rank 0's value (or of the output) in one row.
CHUNK_BYTES = 256 * 1024
#: Output lines kept for the client; beyond, the earliest are dropped (and counted).
MAX_OUTPUT_BYTES = 64 * 1024 * 1024


class _Output:
    """Task 0's collector of the ranks' output lines, bounded, also echoed to its stderr."""

    def __init__(self):
        self.lines, self.size, self.dropped = [], 0, 0
        self._lock = threading.Lock()

    def emit(self, text, stream):
        print(text, file=sys.stderr, flush=True)  # the executor's log, as it happens
        with self._lock:
            self.lines.append((stream, text))
            self.size += len(text)
            while self.size > MAX_OUTPUT_BYTES and len(self.lines) > 1:
                self.size -= len(self.lines.pop(0)[1])
                self.dropped += 1


def _chunks(kind, data):
    for seq, at in enumerate(range(0, len(data), CHUNK_BYTES)):
        yield kind, seq, data[at:at + CHUNK_BYTES]


def _rows(rows):
    import pyarrow as pa

    rows = list(rows)
    return pa.RecordBatch.from_pydict({
        "kind": [r[0] for r in rows], "seq": [r[1] for r in rows], "data": [r[2] for r in rows],
    }, schema=pa.schema([("kind", pa.string()), ("seq", pa.int64()), ("data", pa.binary())]))


def _error_row(message, rank=None, remote_traceback=None):
    data = json.dumps({"message": message, "rank": rank, "traceback": remote_traceback})
    return ("error", 0, data.encode("utf-8"))


def _task(np, payload, backend, stream, start_timeout):
    def task(batches):
        import traceback

        from pyspark import BarrierTaskContext

        from sparkdl.utils.worker import taskGpus

        for _ in batches:  # the input rows only fix the number of tasks
            pass
        ctx = BarrierTaskContext.get()
        slot = ctx.partitionId()
        host = ctx.getTaskInfos()[slot].address.rsplit(":", 1)[0].strip("[]")
        service = None
        try:
            if slot == 0:
                token = new_token()
                service = DriverService(token, host)
                hello = json.dumps({"host": host, "port": service.port, "token": token})
            else:
                hello = ""
            peer = json.loads(ctx.allGather(hello)[0])
        except BaseException:
            if service is not None:
                service.close()
            if slot == 0:
                yield _rows([_error_row("HorovodRunner: task 0 could not host the run: "
                                        + traceback.format_exc())])
            return
        address, token = (peer["host"], peer["port"]), peer["token"]

        def run_rank():
            return supervise(address, token, slot, host, payload, backend=backend,
                             stream_output=stream, cpus=int(ctx.cpus()), gpus=taskGpus(),
                             local_output=None if stream else sys.stderr)

        if slot != 0:
            # A failure here reaches task 0 as a closed connection or a missing hello; the
            # task itself ends normally so that Spark does not retry the barrier stage.
            try:
                run_rank()
            except Exception:
                traceback.print_exc()
            return

        output = _Output()
        coord = Coordinator(service, np, backend, start_timeout, host, emit=output.emit)
        outcomes = {}

        def supervise_rank0():
            try:
                outcomes[0] = run_rank()
            except BaseException as e:
                service.events.put(("job_failed", None, e))

        rank0 = threading.Thread(target=supervise_rank0, name="sparkdl-horovod-rank0",
                                 daemon=True)
        rank0.start()
        failure = None
        try:
            coord.wait_for_ranks()
            coord.wait_for_completion()
        except HorovodRunnerError as e:
            failure = _error_row(str(e), e.rank, e.remote_traceback)
        except BaseException:
            failure = _error_row("HorovodRunner failed in task 0: " + traceback.format_exc())
        if failure is not None:
            coord.abort("run failed")
        rank0.join(60 if failure is None else 30)
        service.close()
        coord.close()
        rows = []
        if output.dropped:
            rows.append(("out", 0, f"stderr\t(HorovodRunner: the first {output.dropped} "
                                   "output lines were dropped)".encode("utf-8")))
        rows += [("out", 0, f"{s}\t{t}".encode("utf-8")) for s, t in output.lines]
        outcome = outcomes.get(0)
        if failure is not None:
            rows.append(failure)
        elif outcome is None or not outcome.ok:
            rows.append(_error_row("HorovodRunner: rank 0's result did not come back from "
                                   "its task"))
        elif outcome.value is not None:
            rows += list(_chunks("value", outcome.value))
        for at in range(0, len(rows), 64):  # batches of at most 64 x CHUNK_BYTES
            yield _rows(rows[at:at + 64])

    return task


def _conf(session, key, default=None):
    try:
        value = session.conf.get(key, None)
    except Exception:
        return default
    return default if value is None else value


def _expected_slots(session):
    """Task slots the server's configuration promises, or None when the client cannot tell."""
    master = _conf(session, "spark.master", "") or ""
    task_cpus = int(_conf(session, "spark.task.cpus", "1") or 1)
    m = re.fullmatch(r"local\[\s*(\d+)\s*(?:,\s*\d+\s*)?\]", master)
    if m:
        return int(m.group(1)) // task_cpus
    if master == "local":
        return 1
    m = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]", master)
    if m:
        return int(m.group(1)) * (int(m.group(2)) // task_cpus)
    instances = _conf(session, "spark.executor.instances")
    cores = _conf(session, "spark.executor.cores")
    if instances and cores:
        return int(instances) * (int(cores) // task_cpus)
    return None


def check_slots(session, np):
    """Fail at once when the server's cluster cannot run ``np`` barrier tasks together, as far
    as the client can tell from its configuration; returns ``np`` (``np=0``: all slots)."""
    if str(_conf(session, "spark.dynamicAllocation.enabled", "false")).lower() == "true":
        raise RuntimeError(
            "HorovodRunner runs its ranks as one Spark barrier stage, which Spark refuses "
            "with dynamic allocation (SPARK-24942); set spark.dynamicAllocation.enabled=false "
            "on the Spark Connect server")
    slots = _expected_slots(session)
    if np == 0:
        if slots is None:
            raise ValueError("HorovodRunner(np=0) on Spark Connect: the client cannot count "
                             "the cluster's task slots; set np explicitly")
        logger.warning("HorovodRunner: np=0 uses all %d task slots", slots)
        return slots
    if slots is not None and slots < np:
        raise RuntimeError(
            f"HorovodRunner(np={np}) needs {np} task slots at the same time for its barrier "
            f"job, but the Spark Connect server's cluster has {slots} (master "
            f"{_conf(session, 'spark.master')}). Use np <= {slots}, or add executors or cores.")
    return np


def run(session, np, payload, backend, runner):
    """Run the ranks on the Connect ``session``; return rank 0's value (cloudpickled)."""
    from pyspark import cloudpickle

    np = check_slots(session, np)
    stream = runner.driver_log_verbosity == "all"
    task = _task(np, payload, backend, stream, runner.start_timeout)
    tag = f"sparkdl-horovod-{uuid.uuid4().hex[:12]}"
    logger.info("HorovodRunner: launching np=%d ranks as a barrier job on Spark Connect "
                "(%s backend)", np, backend)
    session.addTag(tag)
    try:
        rows = session.range(np, numPartitions=np) \
            .mapInArrow(task, SCHEMA, barrier=True).collect()
    except BaseException as e:
        try:
            session.interruptTag(tag)
        except Exception:
            pass
        if isinstance(e, Exception):
            raise HorovodRunnerError(f"the HorovodRunner Spark job failed: {e}") from e
        raise
    finally:
        session.removeTag(tag)
    value, error = [], None
    for kind, seq, data in ((r.kind, r.seq, r.data) for r in rows):
        if kind == "out":
            stream_name, text = bytes(data).decode("utf-8").split("\t", 1)
            print(text, file=sys.stderr if stream_name == "stderr" else sys.stdout, flush=True)
        elif kind == "value":
            value.append((seq, bytes(data)))
        elif kind == "error":
            error = json.loads(bytes(data))
    if error is not None:
        raise HorovodRunnerError(error["message"], rank=error["rank"],
                                 remote_traceback=error["traceback"])
    if not value:
        return None
    return cloudpickle.loads(b"".join(chunk for _, chunk in sorted(value)))
