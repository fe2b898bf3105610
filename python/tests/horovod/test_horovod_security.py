"""HorovodRunner lets in only its own ranks: during a run its driver listens on no wildcard
address, and clients that do not open with the run's hello (garbage, an endless line, JSON
that is not the hello, a wrong token, a client too slow to say anything) are dropped fast,
without the driver's memory growing, without leaked threads or sockets, and the run still
returns rank 0's value."""
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sparkdl.horovod import _driver, runner
from sparkdl.horovod.runner import HorovodRunner

from pyspark import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

_WILDCARDS = {"00000000", "0" * 32}


def wait_for_go(started_dir, go_path):
    """Each rank says it started, then waits for the test to let it finish."""
    from sparkdl import horovod as shvd

    open(os.path.join(started_dir, str(shvd.rank())), "w").close()
    deadline = time.time() + 300
    while not os.path.exists(go_path):
        if time.time() > deadline:
            raise TimeoutError("the test never let the ranks finish")
        time.sleep(0.1)
    return {"rank": shvd.rank(), "value": 4242}


def _socket_inodes(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    return inodes


def tcp_sockets(pid):
    """``[(local address hex, local port, state hex)]`` of process ``pid``'s TCP sockets."""
    inodes = _socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                address, port = fields[1].split(":")
                if fields[9] in inodes:
                    found.append((address, int(port, 16), fields[3]))
    return found


def rss_kib():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


# Run in its own process, so that its buffers do not count in the driver's memory. Prints how
# many seconds passed until the driver dropped the connection, or "kept".
_ATTACKER = textwrap.dedent("""
    import socket, sys, time
    host, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    payloads = {
        "endless": [b"x" * (1 << 20)] * 64,            # 64 MiB, no newline
        "garbage": [b"\\x00\\xffnot json at all\\n" * 4],
        "array": [b'[1, 2, 3]\\n' * 8],
        "wrong-token": [b"SPARKDL-HVD/1 " + b"0" * 32 + b"\\n"
                        + b'{"type": "hello", "slot": 0, "host": "x"}\\n'],
        "json-hello": [b'{"type": "hello", "token": "' + b"0" * 32
                       + b'", "slot": 0, "host": "x", "port": null}\\n'],
        "slow": [],
    }
    s = socket.create_connection((host, port))
    start = time.monotonic()
    try:
        for chunk in payloads[kind]:
            s.sendall(chunk)
        if kind == "slow":
            while time.monotonic() - start < 30:
                s.sendall(b"S")
                time.sleep(0.5)
        s.settimeout(30)
        dropped = s.recv(1) == b""
    except TimeoutError:
        dropped = False
    except OSError:  # reset by the driver
        dropped = True
    print(f"{time.monotonic() - start:.2f}" if dropped else "kept", flush=True)
""")


def test_driver_listens_on_no_wildcard_and_drops_strangers(spark, backend, tmp_path,
                                                           monkeypatch):
    from pyspark import SparkConf, SparkContext

    # As on a cluster where spark.driver.bindAddress is not set (the session sets it to
    # loopback): the runner must still not listen on every interface.
    get_conf = SparkContext.getConf

    def conf_without_bind_address(sc):
        conf = SparkConf(loadDefaults=False)
        conf.setAll([(k, v) for k, v in get_conf(sc).getAll()
                     if k != "spark.driver.bindAddress"])
        return conf

    monkeypatch.setattr(SparkContext, "getConf", conf_without_bind_address)
    monkeypatch.setattr(_driver, "_HELLO_TIMEOUT_S", 2.0)
    services = []

    class RecordedService(_driver.DriverService):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            services.append(self)

    monkeypatch.setattr(runner, "DriverService", RecordedService)
    started, go = tmp_path / "started", tmp_path / "go"
    started.mkdir()
    result = {}

    def run():
        try:
            result["value"] = HorovodRunner(np=2, backend=backend).run(
                wait_for_go, started_dir=str(started), go_path=str(go))
        except BaseException as e:  # shown by the assertion below
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while len(os.listdir(started)) < 2 and thread.is_alive():
            assert time.monotonic() < deadline, "the ranks did not start"
            time.sleep(0.2)
        assert thread.is_alive(), result
        (service,) = services
        pid = os.getpid()
        listening = [(a, p) for a, p, state in tcp_sockets(pid) if state == "0A"]
        assert ("0100007F", service.port) in listening  # 127.0.0.1
        assert not [(a, p) for a, p in listening if a in _WILDCARDS], listening

        kinds = ["endless", "garbage", "array", "wrong-token", "json-hello", "slow"]
        before = rss_kib()
        attackers = {kind: subprocess.Popen(
            [sys.executable, "-c", _ATTACKER, "127.0.0.1", str(service.port), kind],
            stdout=subprocess.PIPE, text=True) for kind in kinds}
        took = {kind: p.communicate(timeout=120)[0].strip() for kind, p in attackers.items()}
        grown = rss_kib() - before
        assert "kept" not in took.values(), took
        assert all(float(took[k]) < 5 for k in kinds if k != "slow"), took
        assert 1.5 < float(took["slow"]) < 10, took
        assert grown < 8 * 1024, f"driver RSS grew by {grown} KiB"
        # The strangers' sockets are gone: only the two ranks' connections remain.
        time.sleep(0.5)
        served = [s for s in tcp_sockets(pid) if s[1] == service.port and s[2] != "0A"]
        assert len(served) == 2, served
        peers = [t for t in threading.enumerate() if t.name == "sparkdl-horovod-peer"]
        assert len(peers) == 2, peers
    finally:
        go.touch()
        thread.join(120)
    assert result.get("value") == {"rank": 0, "value": 4242}, result
    # The run's listener, connections and threads all went with it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            [s for s in tcp_sockets(pid) if s[1] == service.port]
            or [t for t in threading.enumerate() if t.name.startswith("sparkdl-horovod")]):
        time.sleep(0.2)
    assert not [s for s in tcp_sockets(pid) if s[1] == service.port]
    assert not [t for t in threading.enumerate() if t.name.startswith("sparkdl-horovod")]


def test_bind_address_follows_spark(monkeypatch):
    """Spark's own rule on a cluster: bindAddress, else driver.host; local masters: loopback."""

    class Context:
        def __init__(self, master, conf):
            self.master, self._conf = master, conf

        def getConf(self):
            from pyspark import SparkConf

            return SparkConf(loadDefaults=False, _jvm=None).setAll(self._conf.items())

    host = {"spark.driver.host": "10.1.2.3"}
    assert runner._driver_addresses(Context("yarn", host)) == ("10.1.2.3", "10.1.2.3")
    assert runner._driver_addresses(
        Context("spark://m:7077", {**host, "spark.driver.bindAddress": "10.9.9.9"})
    ) == ("10.9.9.9", "10.1.2.3")
    assert runner._driver_addresses(Context("local[4]", host)) == ("127.0.0.1", "127.0.0.1")
