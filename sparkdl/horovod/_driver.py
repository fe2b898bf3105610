"""The driver's side of a run: a TCP service the rank supervisors report to, and the
coordinator that assigns ranks, sets up the backend, relays output and handles failures.

Protocol: see :mod:`sparkdl.horovod._supervisor`.
"""
import logging
import queue
import socket
import sys
import threading
import time

from sparkdl.horovod._wire import Connection, authenticate, close_quietly

logger = logging.getLogger("sparkdl.horovod")

# A peer must send its hello within this many seconds, and at most this many may be doing so.
_HELLO_TIMEOUT_S = 10.0
_MAX_PENDING = 32
# After a rank fails, how long other failures are gathered before naming the earliest.
_FAILURE_SETTLE_S = 1.5
_LOST = "Its task lost the connection to the driver (the task or its executor died)"
# Errors a rank gets because a peer failed, not a cause of their own.
_COLLATERAL_MARKERS = (
    "Horovod has been shut down",
    "Collective ops is aborted by",
)


class HorovodRunnerError(RuntimeError):
    """A rank failed, start-up did not complete, or the run's Spark job failed.

    ``rank`` is the failed rank (``None`` when no single rank is to blame) and ``remote_traceback``
    that rank's traceback text.
    """

    def __init__(self, message, rank=None, remote_traceback=None):
        super().__init__(message)
        self.rank = rank
        self.remote_traceback = remote_traceback


class DriverService:
    """Accepts the supervisors' connections and turns their messages into events on a queue:
    ``("hello", conn, msg)``, ``("msg", conn, msg)``, ``("closed", conn, None)``. Others
    (the Spark job's end) put their own events on the same queue.

    It listens on ``bind_host`` only (the runner passes Spark's driver bind address, or
    loopback). A peer is let in only after it sent the fixed-size hello carrying ``token``
    (see :mod:`sparkdl.horovod._wire`) within :data:`_HELLO_TIMEOUT_S`; at most
    :data:`_MAX_PENDING` peers may be saying hello at once, others are closed at once.
    """

    def __init__(self, token, bind_host):
        self.token = token
        self.events = queue.Queue()
        family, _, _, _, address = socket.getaddrinfo(
            bind_host, 0, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
        self._server = socket.socket(family, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(address)
        self._server.listen(128)
        #: The address the service (and Horovod's rendezvous server) listens on.
        self.bind_host = address[0]
        self.port = self._server.getsockname()[1]
        self._conns = []
        self._pending = set()  # sockets still to say hello
        self._slots = threading.BoundedSemaphore(_MAX_PENDING)
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="sparkdl-horovod-service", daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                close_quietly(sock)  # too many peers saying hello at once
                continue
            with self._lock:
                if self._closed:
                    self._slots.release()
                    close_quietly(sock)
                    return
                self._pending.add(sock)
            threading.Thread(target=self._serve, args=(sock,), name="sparkdl-horovod-peer",
                             daemon=True).start()

    def _serve(self, sock):
        try:
            ok = authenticate(sock, self.token, _HELLO_TIMEOUT_S)
        finally:
            self._slots.release()
        with self._lock:
            self._pending.discard(sock)
            if not ok or self._closed:  # not one of this run's supervisors
                close_quietly(sock)
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock)
            self._conns.append(conn)
        hello = conn.recv()
        if hello is None or hello.get("type") != "hello":
            self._drop(conn)
            return
        self.events.put(("hello", conn, hello))
        while True:
            message = conn.recv()
            if message is None:
                self.events.put(("closed", conn, None))
                self._drop(conn)
                return
            self.events.put(("msg", conn, message))

    def _drop(self, conn):
        conn.close()
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)

    def close(self):
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
            pending, self._pending = self._pending, set()
        # Shutting the listening socket down wakes the accept thread (closing it would not).
        close_quietly(self._server)
        for sock in pending:
            close_quietly(sock)
        for conn in conns:
            conn.close()


def _print_line(text, stream):
    stream = sys.stderr if stream == "stderr" else sys.stdout
    print(text, file=stream, flush=True)


class Coordinator:
    """Runs one launch to its end on the driver thread that called ``run``.

    :param np: number of ranks.
    :param backend: ``"horovod"`` or ``"tensorflow"``.
    :param start_timeout: seconds for all ranks to report in (as the user gave it).
    :param deadline: ``time.monotonic()`` by which they must have, if start-up began earlier.
    :param rendezvous_host: the driver address the ranks reach Horovod's rendezvous server by.
    :param describe_wait: ``() -> str`` saying what start-up may be waiting for (slots...).
    :param emit: ``(text, stream) -> None`` for the ranks' output lines (``stream`` is
        ``"stdout"`` or ``"stderr"``); printed on this process's by default.
    """

    def __init__(self, service, np, backend, start_timeout, rendezvous_host,
                 describe_wait=None, deadline=None, emit=None):
        self.service = service
        self.np = np
        self.backend = backend
        self.start_timeout = start_timeout
        self.rendezvous_host = rendezvous_host
        self.describe_wait = describe_wait
        self.emit = emit or _print_line
        self.deadline = deadline if deadline is not None else time.monotonic() + start_timeout
        self.conns = {}  # slot -> Connection, every supervisor that said hello
        self.ranks = {}  # Connection -> rank
        self._rendezvous = None

    # -- start-up -------------------------------------------------------------------------
    def wait_for_ranks(self):
        hellos = {}
        while len(hellos) < self.np:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(self.np)) - set(hellos))
                why = self.describe_wait() if self.describe_wait else ""
                raise HorovodRunnerError(
                    f"HorovodRunner start-up did not complete within start_timeout="
                    f"{self.start_timeout:g} s: {len(hellos)} of {self.np} ranks started; "
                    f"task(s) {missing} never reported in. {why}".rstrip()
                )
            try:
                kind, conn, message = self.service.events.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if kind == "hello":
                slot = int(message["slot"])
                if slot in hellos or not 0 <= slot < self.np:
                    conn.try_send({"type": "abort", "reason": f"duplicate or unknown slot {slot}"})
                    conn.close()
                    continue
                hellos[slot] = (conn, message)
                self.conns[slot] = conn
            elif kind == "closed":
                raise HorovodRunnerError("a rank's task lost its connection to the driver during "
                                         "start-up (its executor may have died)")
            elif kind == "job_failed":
                raise HorovodRunnerError(f"the HorovodRunner Spark job failed before all ranks "
                                         f"started: {message}") from message
            elif kind == "job_done":
                raise HorovodRunnerError("the HorovodRunner Spark job ended before all ranks "
                                         "started")
        self._start(hellos)

    def _order(self, hellos):
        """Slots in rank order: host by host (hosts ordered by their first slot), so that the
        ranks on one host are consecutive and local ranks follow slot order."""
        hosts = []
        for slot in sorted(hellos):
            host = hellos[slot][1]["host"]
            if host not in hosts:
                hosts.append(host)
        slots = sorted(hellos)
        return [slot for host in hosts for slot in slots if hellos[slot][1]["host"] == host]

    def _start(self, hellos):
        order = self._order(hellos)
        hosts = {}
        for slot in order:
            hosts.setdefault(hellos[slot][1]["host"], []).append(slot)
        plan = {}
        for host, slots in hosts.items():
            for local_rank, slot in enumerate(slots):
                plan[slot] = dict(local_rank=local_rank, local_size=len(slots))
        if self.backend == "horovod":
            env_by_slot = self._horovod_env(order, hellos, hosts)
        else:
            env_by_slot = self._tensorflow_env(order, hellos)
        for rank, slot in enumerate(order):
            conn = hellos[slot][0]
            env = env_by_slot[slot]
            self.ranks[conn] = rank
            conn.try_send({"type": "start", "rank": rank, "size": self.np, "env": env,
                           **plan[slot]})
        logger.info("HorovodRunner: %d ranks started (%s backend) on %s", self.np, self.backend,
                    ", ".join(f"{h} x{len(s)}" for h, s in hosts.items()))

    def _horovod_env(self, order, hellos, hosts):
        from horovod.runner.common.util.hosts import HostInfo, get_host_assignments

        # Horovod's own Gloo rendezvous, exactly as horovodrun sets it up.
        plan = get_host_assignments([HostInfo(h, len(s)) for h, s in hosts.items()], self.np)
        self._rendezvous = _rendezvous_server(self.service.bind_host)
        port = self._rendezvous.start()
        self._rendezvous.init(plan)
        env_by_slot = {}
        for slot_info, slot in zip(plan, order):
            assert slot_info.hostname == hellos[slot][1]["host"]
            env_by_slot[slot] = {
                "HOROVOD_HOSTNAME": slot_info.hostname,
                "HOROVOD_RANK": str(slot_info.rank),
                "HOROVOD_SIZE": str(slot_info.size),
                "HOROVOD_LOCAL_RANK": str(slot_info.local_rank),
                "HOROVOD_LOCAL_SIZE": str(slot_info.local_size),
                "HOROVOD_CROSS_RANK": str(slot_info.cross_rank),
                "HOROVOD_CROSS_SIZE": str(slot_info.cross_size),
                "HOROVOD_GLOO_RENDEZVOUS_ADDR": self.rendezvous_host,
                "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
                "HOROVOD_CONTROLLER": "gloo",
                "HOROVOD_CPU_OPERATIONS": "gloo",
                # hvd.init() waits this long for its peers, like the runner's own start-up.
                "HOROVOD_GLOO_TIMEOUT_SECONDS": str(max(30, int(self.start_timeout))),
            }
        return env_by_slot

    def _tensorflow_env(self, order, hellos):
        import json

        workers = [f"{hellos[slot][1]['host']}:{hellos[slot][1]['port']}" for slot in order]
        return {
            slot: {"TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                            "task": {"type": "worker", "index": rank}})}
            for rank, slot in enumerate(order)
        }

    # -- running --------------------------------------------------------------------------
    def wait_for_completion(self):
        """Relay output until every rank is done; raise when a rank fails.

        One failure usually brings down its peers too (their collectives lose a member), so
        failures are gathered for a moment and the earliest one is reported as the cause.
        """
        done, failures = set(), {}
        job_ended = settle_until = None
        while len(done) < self.np:
            now = time.monotonic()
            if failures and now >= settle_until:
                self._raise_failure(failures)
            if job_ended is not None and now - job_ended > 10:
                if failures:
                    self._raise_failure(failures)
                raise HorovodRunnerError("the HorovodRunner Spark job ended before all ranks "
                                         "reported their outcome")
            try:
                kind, conn, message = self.service.events.get(timeout=0.2)
            except queue.Empty:
                continue
            rank = self.ranks.get(conn)
            if kind == "hello":  # a late or retried task: this run has its ranks already
                conn.try_send({"type": "abort", "reason": "the run already started"})
                conn.close()
            elif kind == "msg":
                mtype = message.get("type")
                if mtype == "out":
                    self.emit(f"[{rank}]<{message['stream']}>:{message['line']}",
                              message["stream"])
                elif mtype == "log":
                    self.emit(f"[{rank}]<log>:{message['message']}", "stdout")
                elif mtype == "done":
                    done.add(rank)
                elif mtype == "failed":
                    failures[rank] = (message.get("at") or time.time(),
                                      message.get("error") or "(no traceback)",
                                      bool(message.get("abrupt")))
            elif kind == "closed":
                if rank is not None and rank not in done and rank not in failures:
                    failures[rank] = (time.time(), _LOST, True)
            elif kind == "job_failed":
                if failures:
                    self._raise_failure(failures)
                raise HorovodRunnerError(f"the HorovodRunner Spark job failed: {message}") \
                    from message
            elif kind == "job_done":
                # Each task reported before returning; its last messages may still be in
                # flight on the socket, so they get a moment to arrive.
                job_ended = time.monotonic()
            if failures and settle_until is None:
                settle_until = time.monotonic() + _FAILURE_SETTLE_S

    def _raise_failure(self, failures):
        def cause_first(r):
            at, error, abrupt = failures[r]
            collateral = any(marker in error for marker in _COLLATERAL_MARKERS)
            # A death without a traceback is only seen after the fact (its peers may notice
            # first), so it gets a head start over tracebacks raised around the same time.
            return (collateral, at - (_FAILURE_SETTLE_S if abrupt else 0.0))

        rank = min(failures, key=cause_first)
        _, error, abrupt = failures[rank]
        others = sorted(r for r in failures if r != rank)
        also = f" (then rank(s) {others} failed too)" if others else ""
        if abrupt:  # no traceback: the process died, or its task did
            message = f"HorovodRunner: rank {rank} failed{also}; all ranks were stopped. {error}"
        else:
            message = (f"HorovodRunner: rank {rank} failed{also}; all ranks were stopped. "
                       f"Rank {rank}'s traceback:\n{error}")
        raise HorovodRunnerError(message, rank=rank, remote_traceback=None if abrupt else error)

    def abort(self, reason):
        for conn in list(self.conns.values()):
            conn.try_send({"type": "abort", "reason": reason})

    def close(self):
        if self._rendezvous is not None:
            try:
                self._rendezvous.stop()
            except Exception:  # pragma: no cover
                pass
            self._rendezvous = None


def _rendezvous_server(host):
    """Horovod's Gloo rendezvous server listening on ``host`` only (Horovod's own
    ``RendezvousServer.start`` binds every interface)."""
    from horovod.runner.http.http_server import (
        RendezvousHandler,
        RendezvousHTTPServer,
        RendezvousServer,
    )
    from horovod.runner.util.threads import in_thread

    class Server(RendezvousServer):
        def start(self, handler_cls=RendezvousHandler):
            server_class = type("BoundRendezvousHTTPServer", (RendezvousHTTPServer,),
                                {"address_family": socket.getaddrinfo(
                                    host, 0, type=socket.SOCK_STREAM)[0][0]})
            self._httpd = server_class((host, 0), handler_cls, self._verbose)
            self._listen_thread = in_thread(target=self._httpd.serve_forever)
            return self._httpd.server_address[1]

    return Server()
