"""The command line's Spark session (started and stopped, or the active one, with the JVM's
output in a log file), its progress lines, and one-line summaries of any error."""
import contextlib
import os
import re
import sys
import tempfile
import threading
import time

from sparkdl.cli.parsing import EXIT_USAGE, CliError, note, one_line

__all__ = ["Session", "Progress", "summarize"]


class Session:
    """The SparkSession of one command: the active one if any (left running), else a new one,
    stopped at the end, whose JVM writes its output to a log file unless ``verbose``."""

    def __init__(self, master, verbose, remote=None):
        self.master = master
        self.remote = remote
        self.verbose = verbose
        self.spark = None
        self.owned = False
        self.log = None
        self.keep_log = False

    def __enter__(self):
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        if self.remote:
            return self._connect()
        active = SparkContext._active_spark_context
        if active is not None:
            self.spark = SparkSession.active()
            if self.master and self.master != active.master:
                note(f"using the active Spark session (master {active.master}), "
                      f"not --master {self.master}")
            return self
        from sparkdl.utils.session import local_session

        self._own()
        try:
            self.spark = local_session(self.master or "local[*]", app_name="sparkdl",
                                       jvm_output=self.log)
        except Exception as e:
            message = f"could not start Spark: {self._jvm_failure(e)}"
            if self.log is not None:
                self.log.close()
                message += f" (Spark log: {self.log.name})"
            raise CliError(message) from e
        if not self.verbose:
            self.spark.sparkContext.setLogLevel("ERROR")
        return self

    def _own(self):
        """This session is ours to stop; without --verbose, Spark's and TensorFlow's output go
        to a log file."""
        self.owned = True
        if not self.verbose:
            self.log = tempfile.NamedTemporaryFile(prefix="sparkdl-", suffix=".log",
                                                   delete=False)

    def _connect(self):
        """A Spark Connect session on ``remote`` (nothing runs in a JVM here; the log file only
        takes TensorFlow's native output while the model is built)."""
        from pyspark.sql import SparkSession

        if self.master:
            raise CliError("--master and --remote exclude each other: the Spark Connect "
                           "server has its own master", EXIT_USAGE)
        if not self.remote.startswith("sc://"):
            raise CliError(f"--remote must be a Spark Connect URL sc://host:port, got "
                           f"{_shown(self.remote)!r}", EXIT_USAGE)
        _reachable(self.remote)
        self._own()
        try:
            self.spark = SparkSession.builder.remote(self.remote).getOrCreate()
            self.spark.version  # connects now, so an unreachable server fails here
        except Exception as e:
            raise CliError(f"could not connect to the Spark Connect server "
                           f"{_shown(self.remote)}: {summarize(e)}") from e
        return self

    def _jvm_failure(self, error):
        """Why the JVM did not start: its first error line in the log (spark-submit exits on
        a bad master URL or a missing java before PySpark can say more than that it exited)."""
        if "JAVA_GATEWAY_EXITED" not in str(error) or self.log is None:
            return summarize(error)
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        lines = [line for line in lines if not (line.startswith(("at ", "WARNING:", "Using "))
                                                or re.search(r" (WARN|INFO) ", line))]
        errors = [line for line in lines if re.search(r"Exception|Error", line)]
        reason = (errors or lines or ["the JVM exited"])[0]
        reason = one_line(re.sub(r'^Exception in thread "\w+" ', "", reason), 300)
        if any(re.search(r"bin/java|JAVA_HOME|java: |UnsupportedClassVersion", line)
               for line in lines):
            reason += " (Spark 4 needs Java 17 or newer)"
        return reason

    def __exit__(self, exc_type, exc, tb):
        if self.owned and self.spark is not None:
            with contextlib.suppress(Exception):
                self.spark.stop()
        if self.log is not None:
            self.log.close()
            if not self.keep_log:
                with contextlib.suppress(OSError):
                    os.unlink(self.log.name)
        return False

    def failure(self, error):
        """The :class:`CliError` for ``error``; a failed job's names the log file, kept."""
        from pyspark.errors import AnalysisException

        message = summarize(error)
        if self.log is not None and not isinstance(error, AnalysisException):
            self.keep_log = True
            message += f" (Spark log: {self.log.name})"
        return CliError(message)

    @contextlib.contextmanager
    def quiet(self):
        """Send this process's native stderr to the log file while TensorFlow is imported and
        the model is built on the driver (its C++ logging ignores TF_CPP_MIN_LOG_LEVEL)."""
        if self.log is None:
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(self.log.fileno(), 2)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _reachable(url, timeout=15):
    """Fail in one line when nothing listens at a Spark Connect URL (the client itself retries
    an unreachable server for minutes)."""
    import socket
    from urllib.parse import urlparse

    try:
        parsed = urlparse(url.split(";", 1)[0].replace("sc://", "http://", 1))
        host, port = parsed.hostname, parsed.port or 15002
    except ValueError as e:
        raise CliError(f"--remote {_shown(url)!r} is not a Spark Connect URL: {e}",
                       EXIT_USAGE) from e
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise CliError(f"could not connect to the Spark Connect server {_shown(url)}: "
                       f"{e.strerror or e}") from e


def _shown(url):
    """A Spark Connect URL without its parameters (a token must not reach a log)."""
    return url.split(";", 1)[0].rstrip("/")


class Progress:
    """Every ``interval`` seconds (the first time after ``interval``), one stderr line with the
    tasks done in each active Spark stage, from ``SparkContext.statusTracker()`` (on Spark
    Connect, from the server's progress reports)."""

    def __init__(self, spark, interval):
        from sparkdl.utils.session import is_connect

        self.spark = spark
        self.connect = is_connect(spark)
        # Spark Connect has no status tracker: the server reports each query's stages.
        self.tracker = None if self.connect else spark.sparkContext.statusTracker()
        self.stages = {}
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = None
        self.start = time.monotonic()

    def _onProgress(self, stages, inflight_tasks, operation_id, done):
        self.stages = {} if done else {s.stage_id: s for s in stages if not s.done}

    def __enter__(self):
        if self.interval > 0 and self.connect:
            self.spark.registerProgressHandler(self._onProgress)
        if self.interval > 0:
            self.thread = threading.Thread(target=self._run, name="sparkdl-progress", daemon=True)
            self.thread.start()
        return self

    def _run(self):
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(Exception):
                line = self.status()
                if line and not self.stopped.is_set():
                    print(f"sparkdl: {time.monotonic() - self.start:.0f} s: {line}",
                          file=sys.stderr, flush=True)

    def status(self):
        if self.connect:
            return "; ".join(f"stage {i}: {s.num_completed_tasks}/{s.num_tasks} tasks done"
                             for i, s in sorted(self.stages.items()))
        parts = []
        for stage_id in sorted(self.tracker.getActiveStageIds()):
            info = self.tracker.getStageInfo(stage_id)
            if info is None:
                continue
            part = f"stage {stage_id}: {info.numCompletedTasks}/{info.numTasks} tasks done"
            if info.numActiveTasks:
                part += f", {info.numActiveTasks} running"
            if info.numFailedTasks:
                part += f", {info.numFailedTasks} failed"
            parts.append(part)
        return "; ".join(parts)

    def __exit__(self, *exc):
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
        if self.interval > 0 and self.connect:
            with contextlib.suppress(Exception):
                self.spark.removeProgressHandler(self._onProgress)
        return False



# --- errors --------------------------------------------------------------------------------

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)):?( .*)?$")


def summarize(error):
    """One line for any exception: Py4J/Java errors by their root cause, Spark's analysis and
    Python worker errors by their message, without stack traces."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException, PythonException

    if isinstance(error, PythonException):
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
        return "a Python worker failed: " + one_line(raised[-1] if raised else lines[0], 300)
    if isinstance(error, Py4JJavaError):
        cause = error.java_exception
        with contextlib.suppress(Exception):
            while cause.getCause() is not None and cause.getCause() != cause:
                cause = cause.getCause()
        with contextlib.suppress(Exception):
            return one_line(first_line(cause.toString()), 300)
        return one_line(first_line(str(error)), 300)
    if isinstance(error, PySparkException):
        text = getattr(error, "_desc", None) or str(error)
        text = re.sub(r"\s*SQLSTATE: \w+\.?$", "", first_line(text).strip())
        return one_line(re.sub(r"^\[[A-Z_.]+\]\s*", "", text), 300)
    message = one_line(error, 300)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def first_line(text):
    for line in str(text).splitlines():
        if line.strip():
            return line
    return ""


