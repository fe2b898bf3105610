"""Helpers for tests that compare a Spark Connect session (the ``connect_spark`` fixture) with
the classic one (``spark``) in one test process."""
import contextlib
import os


@contextlib.contextmanager
def classic_mode():
    """Inside a test that uses ``connect_spark``: run classic PySpark code (pyspark's own
    functions pick their Connect or classic flavour from ``SPARK_CONNECT_MODE_ENABLED``)."""
    saved = os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["SPARK_CONNECT_MODE_ENABLED"] = saved


def sorted_rows(df, key, cols):
    """``cols`` of every row of ``df`` as tuples, sorted by ``key``."""
    return [tuple(r[c] for c in cols) for r in sorted(df.collect(), key=lambda r: r[key])]
