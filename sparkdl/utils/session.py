"""SparkSession helpers for sparkdl's own entry points (CLI, demo, tests, benchmarks)."""
import os
import sys

__all__ = ["local_session", "is_connect", "defaultParallelism", "inputFiles", "start_connect_server",
           "ConnectServer"]


def is_connect(session):
    """Whether ``session`` is a Spark Connect session (no SparkContext, no RDDs)."""
    return type(session).__module__.startswith("pyspark.sql.connect")


def defaultParallelism(session):
    """The cluster's task slots as Spark counts them (``defaultParallelism``), from the
    SparkContext of a classic session; a Spark Connect session has none, so there it is
    ``spark.default.parallelism`` when that is set, else None (unknown)."""
    if not is_connect(session):
        return int(session.sparkContext.defaultParallelism)
    value = session.conf.get("spark.default.parallelism", None)
    return int(value) if value else None


def inputFiles(df):
    """``df.inputFiles()`` in one round trip to the JVM: a classic session's
    ``DataFrame.inputFiles`` fetches the files one py4j call each (0.1 s for 500 files, at
    every readImages call); here the JVM sends them as one JSON array (Jackson, which Spark
    ships)."""
    import json

    if is_connect(df.sparkSession):
        return df.inputFiles()
    mapper = df.sparkSession._jvm.com.fasterxml.jackson.databind.ObjectMapper()
    return json.loads(mapper.writeValueAsString(df._jdf.inputFiles()))


def _options(master, app_name, conf):
    options = {
        "spark.master": master,
        "spark.app.name": app_name,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
    }
    if master.startswith("local"):
        # Local masters (local, local[n], local-cluster): bind to loopback, and run the Python
        # workers on this interpreter so they see the same packages. A real cluster's driver
        # must be reachable from its executors, whose Python is the cluster's to configure.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        options.update({
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.pyspark.python": os.environ["PYSPARK_PYTHON"],
        })
    options.update(conf or {})
    return options


def _start_context(options, jvm_output):
    """Start the JVM with its stdout and stderr on ``jvm_output``, then the SparkContext."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    spark_conf = SparkConf()
    spark_conf.setAll(options.items())
    gateway = launch_gateway(spark_conf,
                             popen_kwargs={"stdout": jvm_output, "stderr": jvm_output})
    SparkContext(conf=spark_conf, gateway=gateway)


def local_session(master="local[*]", app_name="sparkdl", conf=None, jvm_output=None):
    """Return a SparkSession for sparkdl's own entry points.

    With a local master (``local[*]``, ``local[n]``, ``local-cluster[...]``) the driver is bound
    to loopback and the Python workers run this interpreter; any other master URL is passed
    on as it is. A session that already runs is returned as it is, like
    ``SparkSession.builder.getOrCreate``.

    :param master: Spark master URL, ``local[*]`` by default.
    :param app_name: application name.
    :param conf: extra ``{key: value}`` Spark configuration.
    :param jvm_output: a file object for the JVM's stdout and stderr (Spark's log, the JVM's
        own warnings, the Python workers' stderr) when this call starts the JVM; None leaves
        them on this process's.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    options = _options(master, app_name, conf)
    if (jvm_output is not None and SparkContext._gateway is None
            and "PYSPARK_GATEWAY_PORT" not in os.environ):
        _start_context(options, jvm_output)
    builder = SparkSession.builder
    for key, value in options.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


class ConnectServer:
    """A Spark Connect server in a child process, bound to loopback on a free port with a
    random token (``url`` carries both); it stops with :meth:`stop`, or when this process
    exits (the child watches its stdin)."""

    def __init__(self, proc, port, token):
        self.proc, self.port, self.token = proc, port, token
        self.url = f"sc://localhost:{port}/;token={token}"

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # the child stops Spark and exits
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


_SERVER_MAIN = """
import sys
from sparkdl.utils.session import _serve_connect
_serve_connect(sys.argv[1], sys.argv[2], sys.argv[3:])
"""


def _serve_connect(master, token, conf_items):
    """Child side of :func:`start_connect_server`: start Spark with the Connect plugin, print
    the port it bound, serve until stdin closes."""
    conf = dict(item.split("=", 1) for item in conf_items)
    conf.update({
        "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": "0",  # a free port, read back below
        "spark.connect.authenticate.token": token,
        "spark.sql.artifact.isolation.enabled": "true",
    })
    session = local_session(master, app_name="sparkdl-connect-server", conf=conf)
    jvm = session.sparkContext._jvm
    service = getattr(jvm, "org.apache.spark.sql.connect.service.SparkConnectService$")
    port = getattr(service, "MODULE$").localPort()
    print(f"SPARKDL_CONNECT_PORT={port}", flush=True)
    sys.stdin.read()
    session.stop()


def start_connect_server(master="local[*]", conf=None, log=None, timeout=180):
    """Start a Spark Connect server for ``master`` in a child process and return it as a
    :class:`ConnectServer` (``SparkSession.builder.remote(server.url).getOrCreate()``).

    Unlike ``remote("local[n]")``, which runs the server inside this process and on Spark
    Connect's fixed default port 15002, it takes a free port, so several can run at once.

    :param master: the server's Spark master URL.
    :param conf: extra ``{key: value}`` Spark configuration for the server.
    :param log: a file object for the server's output (Spark's log), None to discard it.
    :param timeout: seconds to wait for the server to start.
    """
    import secrets
    import subprocess
    import threading

    token = secrets.token_hex(16)
    args = [f"{k}={v}" for k, v in (conf or {}).items()]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER_MAIN, master, token, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL, text=True,
    )
    found = {}

    def read():
        for line in proc.stdout:
            if line.startswith("SPARKDL_CONNECT_PORT="):
                found["port"] = int(line.split("=", 1)[1])
                break
            if log is not None:
                log.write(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if "port" not in found:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the Spark Connect server for {master} did not start within "
                           f"{timeout} s (exit code {proc.poll()})")
    return ConnectServer(proc, found["port"], token)
