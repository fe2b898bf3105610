"""One rank's supervisor: runs where the rank runs (a Spark barrier task, or a driver thread
for ``np < 0``), starts the rank's own process and relays it to the driver.

Protocol with the driver (:mod:`sparkdl.horovod._driver`), one JSON object per line:

1. supervisor -> driver: the fixed-size hello carrying the run's token
   (:mod:`sparkdl.horovod._wire`), then a ``hello`` message: slot (the barrier task's
   partition), host, and, for the TensorFlow backend, a port free on this host for the rank's
   gRPC server;
2. driver -> supervisor ``start`` (rank, size, environment) once every slot said hello, or
   ``abort``;
3. supervisor -> driver ``out`` (a line of the rank's stdout/stderr, when streamed), ``log``
   (:func:`sparkdl.horovod.log_to_driver`), then ``done`` or ``failed`` (with the traceback);
4. driver -> supervisor ``abort`` at any time: another rank failed or the driver gave up; the
   rank's process group is killed.

A rank runs in its own process (not in the Spark Python worker) so that Horovod's and
TensorFlow's process-wide state starts fresh every run, output can be captured line by line,
and a failed or aborted rank can be killed with everything it started.
"""
import collections
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from sparkdl.horovod import (
    ENV_BACKEND,
    ENV_LOCAL_RANK,
    ENV_LOCAL_SIZE,
    ENV_LOG_FD,
    ENV_RANK,
    ENV_SIZE,
)
from sparkdl.horovod._wire import Connection
from sparkdl.horovod._worker import RESULT_ENV

_TAIL_LINES = 40
# Longest output line or traceback sent to the driver (the wire takes lines up to 16 MiB).
_MAX_TEXT = 1 << 20
_KILL_GRACE_S = 3.0


class RankOutcome:
    def __init__(self, rank, ok, value=None, error=None, aborted=False, failed_at=None,
                 abrupt=False):
        self.rank, self.ok, self.value, self.error, self.aborted = rank, ok, value, error, aborted
        self.failed_at = failed_at
        self.abrupt = abrupt  # died without a Python traceback (exit, signal, crash)


def free_port(host):
    """A TCP port free on ``host`` right now (for the rank's TensorFlow gRPC server)."""
    family, _, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(address)
        return s.getsockname()[1]


def _clip(text, limit=_MAX_TEXT):
    """``text`` cut to ``limit`` characters, so that a message stays under the wire's bound."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters cut]"


def interface_of(host):
    """The name of the local network interface holding ``host``'s address, or ``None``.

    Gloo binds its sockets to one interface (``HOROVOD_GLOO_IFACE``); the one carrying the
    address Spark knows this executor by is reachable from the other executors.
    """
    try:
        import psutil

        address = socket.gethostbyname(host)
        for name, addrs in psutil.net_if_addrs().items():
            if any(a.family == socket.AF_INET and a.address == address for a in addrs):
                return name
    except Exception:
        pass
    return None


def _signal_name(code):
    try:
        return signal.Signals(-code).name
    except ValueError:
        return str(-code)


class _RankProcess:
    """The rank's process and its process group (it is started as a session leader).

    Only ``wait`` reaps it, and the group is only signalled before that, so a signal can
    never reach a process group that reused the id. Any thread may call ``stop``."""

    def __init__(self, proc):
        self.proc = proc
        self.exited = threading.Event()
        self._lock = threading.Lock()
        self._reaped = False

    def signal_group(self, sig):
        with self._lock:
            if not self._reaped:
                try:
                    os.killpg(self.proc.pid, sig)
                except OSError:
                    pass

    def stop(self):
        self.signal_group(signal.SIGTERM)
        if not self.exited.wait(_KILL_GRACE_S):
            self.signal_group(signal.SIGKILL)

    def wait(self):
        """Wait for the rank to exit, kill what it left in its group, reap it; -> exit code."""
        try:
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        self.exited.set()
        # Processes the rank started and left behind (its group outlives it) go too.
        self.signal_group(signal.SIGKILL)
        with self._lock:
            code = self.proc.wait()
            self._reaped = True
        return code


def supervise(address, token, slot, host, payload, *, backend, stream_output,
              cpus=None, gpus=None, connect_timeout=60, local_output=None):
    """Run one rank to completion under the driver at ``address``; returns a RankOutcome.

    :param slot: this supervisor's index (the barrier partition id), 0 to np - 1.
    :param host: the address the other ranks reach this host by.
    :param payload: cloudpickled ``(main, kwargs)``.
    :param stream_output: send every stdout/stderr line to the driver.
    :param cpus: cores for the rank (thread pools sized to them).
    :param gpus: GPU addresses for the rank (``CUDA_VISIBLE_DEVICES``); ``None``: unchanged.
    :param local_output: where the rank's output goes when it is not streamed (a text file),
        ``None`` to keep only its tail for error messages.
    """
    conn = Connection.connect(address, connect_timeout, token)
    try:
        port = free_port(host) if backend == "tensorflow" else None
        conn.send({"type": "hello", "slot": slot, "host": host, "port": port,
                   "pid": os.getpid()})
        start = conn.recv()
        if start is None or start.get("type") != "start":
            return RankOutcome(None, False, aborted=True)
        rank = start["rank"]
        env = dict(os.environ)
        env.update(start["env"])
        env.update({
            ENV_RANK: str(rank),
            ENV_SIZE: str(start["size"]),
            ENV_LOCAL_RANK: str(start["local_rank"]),
            ENV_LOCAL_SIZE: str(start["local_size"]),
            ENV_BACKEND: backend,
            "PYTHONUNBUFFERED": "1",
        })
        env.setdefault("KERAS_BACKEND", "tensorflow")
        if backend == "horovod":
            iface = interface_of(host)
            if iface:
                env.setdefault("HOROVOD_GLOO_IFACE", iface)
        if cpus:
            # Size thread pools to the task's cores: np ranks on a host share it.
            for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
                env.setdefault(var, str(cpus))
            env.setdefault("TF_NUM_INTEROP_THREADS", "1")
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        # Spark's Python worker may run with PYTHONPATH entries relative to the task's
        # directory; the rank keeps the same working directory, so they still resolve.
        outcome = _run_rank(conn, rank, env, payload, stream_output, local_output)
        if outcome.ok:
            conn.try_send({"type": "done", "rank": rank})
        elif not outcome.aborted:
            conn.try_send({"type": "failed", "rank": rank, "error": _clip(outcome.error),
                           "at": outcome.failed_at, "abrupt": outcome.abrupt})
        return outcome
    finally:
        conn.close()


def _run_rank(conn, rank, env, payload, stream_output, local_output):
    with tempfile.TemporaryDirectory(prefix="sparkdl-rank-") as tmp:
        result_path = os.path.join(tmp, "result.pkl")
        log_read, log_write = os.pipe()
        env[RESULT_ENV] = result_path
        env[ENV_LOG_FD] = str(log_write)
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "sparkdl.horovod._worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, pass_fds=(log_write,), start_new_session=True,
        )
        os.close(log_write)
        rank_process = _RankProcess(proc)
        aborted = threading.Event()
        tail = collections.deque(maxlen=_TAIL_LINES)
        try:
            proc.stdin.write(len(payload).to_bytes(8, "big") + payload)
            proc.stdin.flush()
        except OSError:
            pass  # the rank died at once; its exit code and stderr say why

        def pump(stream, name):
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if name == "stderr":
                    tail.append(line)
                if stream_output:
                    conn.try_send({"type": "out", "rank": rank, "stream": name,
                                   "line": _clip(line)})
                elif local_output is not None:
                    print(f"[{rank}]<{name}>:{line}", file=local_output, flush=True)
            stream.close()

        def pump_log():
            with os.fdopen(log_read, "rb") as f:
                for raw in f:
                    try:
                        message = json.loads(raw) if len(raw) <= _MAX_TEXT else None
                    except ValueError:
                        message = None
                    if message is None:
                        message = _clip(raw.decode("utf-8", "replace").rstrip("\n"))
                    conn.try_send({"type": "log", "rank": rank, "message": message})

        def listen():
            # Anything from the driver now means stop; so does losing the driver.
            while True:
                message = conn.recv()
                if message is None or message.get("type") == "abort":
                    break
            if not rank_process.exited.is_set():
                aborted.set()
                rank_process.stop()

        threads = [
            threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True),
            threading.Thread(target=pump_log, daemon=True),
        ]
        for t in threads:
            t.start()
        threading.Thread(target=listen, daemon=True).start()
        try:
            code = rank_process.wait()
            exited_at = time.time()
        except BaseException:
            rank_process.stop()  # whatever happens to this supervisor, the rank goes too
            rank_process.wait()
            raise
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for t in threads:
            # Output still buffered in the pipes is relayed before the outcome.
            t.join(10)
        outcome = None
        if os.path.exists(result_path):
            with open(result_path, "rb") as f:
                outcome = pickle.load(f)
        if outcome is not None and outcome[0] == "ok":
            # A rank that finished main is done, whatever its exit looked like afterwards.
            return RankOutcome(rank, True, value=outcome[1])
        if aborted.is_set():
            return RankOutcome(rank, False, aborted=True)
        if outcome is not None:
            return RankOutcome(rank, False, error=outcome[1], failed_at=outcome[2])
        how = f"was killed by {_signal_name(code)}" if code < 0 else f"exited with code {code}"
        detail = "\n".join(tail) or "(no output on stderr)"
        return RankOutcome(rank, False, failed_at=exited_at, abrupt=True,
                           error=f"Its process {how} before main returned; "
                                 f"last lines of its stderr:\n{detail}")
