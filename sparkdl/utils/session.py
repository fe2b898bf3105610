"""SparkSession helpers for sparkdl's own entry points (CLI, demo, tests, benchmarks)."""
import os
import sys

__all__ = ["local_session"]


def local_session(master="local[*]", app_name="sparkdl", conf=None):
    """Return a SparkSession bound to loopback, with Python workers on this interpreter.

    Used where sparkdl itself starts Spark (CLI, demo, tests). A session that already runs is
    returned as it is, like ``SparkSession.builder.getOrCreate``.

    :param master: Spark master URL, ``local[*]`` by default.
    :param app_name: application name.
    :param conf: extra ``{key: value}`` Spark configuration.
    """
    from pyspark.sql import SparkSession

    # Workers must run the same interpreter (and so see the same packages) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        .config("spark.sql.shuffle.partitions", "4")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
