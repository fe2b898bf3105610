"""SparkSession helpers for sparkdl's own entry points (CLI, demo, tests, benchmarks)."""
import os
import sys

__all__ = ["local_session"]


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
