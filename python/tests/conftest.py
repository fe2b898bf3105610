"""Shared test harness: one local SparkSession for the run, and a local-cluster one for the
tests marked ``local_cluster`` (run last, so the switch happens once)."""
import os
import sys
import warnings

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=".*pandas >= 3.0.0.*")

LOCAL_MASTER = "local[2]"
CLUSTER_MASTER = "local-cluster[2,1,1024]"

_current = {"master": None, "session": None}
_connect = {"server": None, "session": None}


def _session(master):
    if _current["master"] != master:
        if _current["session"] is not None:
            _current["session"].stop()
        from sparkdl.utils.session import local_session

        conf = {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4"}
        if master.startswith("local-cluster"):
            conf["spark.executor.cores"] = "1"
            conf["spark.executorEnv.PYTHONPATH"] = os.pathsep.join(sys.path)
        session = local_session(master, app_name="sparkdl-tests", conf=conf)
        session.sparkContext.setLogLevel("ERROR")
        _current.update(master=master, session=session)
    return _current["session"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "local_cluster: runs on local-cluster[2,1,1024] (real separate executors)"
    )


def pytest_collection_modifyitems(config, items):
    # Cluster tests last: the session switches from local to local-cluster only once.
    items.sort(key=lambda item: item.get_closest_marker("local_cluster") is not None)


@pytest.fixture
def spark():
    """The shared local[2] SparkSession."""
    return _session(LOCAL_MASTER)


@pytest.fixture(scope="module")
def own_session():
    """For a module whose tests start a session of their own configuration (e.g. Spark's GPU
    scheduling): the shared session is stopped first (one SparkContext per process); the
    next test that asks for ``spark`` or ``cluster_spark`` starts it again."""
    if _current["session"] is not None:
        _current["session"].stop()
    _current.update(master=None, session=None)


@pytest.fixture
def cluster_spark(request):
    """A local-cluster[2,1,1024] SparkSession: two executors in their own JVMs and workers."""
    if request.node.get_closest_marker("local_cluster") is None:
        raise RuntimeError("tests using cluster_spark must be marked @pytest.mark.local_cluster")
    return _session(CLUSTER_MASTER)


def _connect_server():
    if _connect["server"] is None:
        from sparkdl.utils.session import start_connect_server

        conf = {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4",
                "spark.log.level": "ERROR"}
        _connect["server"] = start_connect_server(LOCAL_MASTER, conf=conf)
    return _connect["server"]


@pytest.fixture
def connect_server():
    """The shared Spark Connect server: local[2] in its own process, started once on a free
    loopback port (never Connect's default 15002) with a token; ``.url`` to connect."""
    return _connect_server()


@pytest.fixture
def connect_spark():
    """A Spark Connect session on the shared server, with Connect mode on for the test, as in
    a client process. Use ``connect_helpers.classic_mode`` for the classic side of a
    comparison."""
    if _connect["session"] is None:
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        _connect["session"] = ConnectSession.builder.remote(_connect_server().url).getOrCreate()
    saved = os.environ.get("SPARK_CONNECT_MODE_ENABLED")
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    try:
        yield _connect["session"]
    finally:
        if saved is None:
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)


def pytest_sessionfinish(session, exitstatus):
    if _current["session"] is not None:
        _current["session"].stop()
    if _connect["session"] is not None:
        _connect["session"].stop()
    if _connect["server"] is not None:
        _connect["server"].stop()
