"""The ``sparkdl`` command line: pretrained image models on Spark, from a shell.

::

    sparkdl predict [PATH ...] [--model EfficientNetLite0] [--top-k 5] [--output FILE]
    sparkdl featurize PATH [PATH ...] [--model NAME] [--pooling avg] --output FILE.parquet
    sparkdl models

``PATH`` is anything Spark reads (a folder, read recursively; a file; a glob such as
``'photos/*.jpg'``; an ``hdfs://`` or ``s3a://`` URI). ``predict`` without a PATH classifies the
sample photos shipped with sparkdl. Spark runs locally (``local[*]``) unless ``--master`` names
another master; when a SparkSession is already active in the process (``main([...])`` called
from Python), that session is used and left running.

Files that are not images never fail a run: they are listed as invalid and counted in the
summary line. Errors (missing path, unknown model, a failed Spark job) are one line on stderr,
never a Java stack trace; the JVM's own output (Spark's log, the Python workers' stderr) goes to
a log file that the error message names (``--verbose`` shows all of it, and Python tracebacks).

Output: the table goes to stdout; the summary line, progress of long runs (every
``--progress`` seconds) and errors go to stderr. Exit status: 0 on success, 1 when the run
fails, 2 for bad arguments (including an unknown model or output format).
"""
import argparse
import contextlib
import os
import re
import sys
import tempfile
import threading
import time
from urllib.parse import urlparse

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_MODEL = "EfficientNetLite0"
PREDICT_FORMATS = ("parquet", "csv", "json")
FEATURIZE_FORMATS = ("parquet",)
_GLOB_CHARS = re.compile(r"[*?\[{]")


class CliError(Exception):
    """An error the CLI reports as one line (``message``) with exit status ``code``."""

    def __init__(self, message, code=EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def _error(message):
    print(f"sparkdl: error: {message}", file=sys.stderr, flush=True)


def _note(message):
    print(f"sparkdl: {message}", file=sys.stderr, flush=True)


def _one_line(text, limit=None):
    text = " ".join(str(text).split())
    if limit and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


# --- arguments -----------------------------------------------------------------------------

def _positive_int(value):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return number


def _seconds(value):
    try:
        number = float(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {value!r}")
    return number


def _parser():
    from sparkdl import __version__

    parser = argparse.ArgumentParser(
        prog="sparkdl",
        description="Deep Learning Pipelines for Apache Spark: pretrained image models on Spark.",
        epilog="Run 'sparkdl COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"sparkdl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    spark_options = argparse.ArgumentParser(add_help=False)
    spark_options.add_argument(
        "--master", metavar="URL",
        help="Spark master URL (default: local[*], all cores of this machine)")
    spark_options.add_argument(
        "--overwrite", action="store_true", help="replace --output if it exists")
    spark_options.add_argument(
        "--progress", type=_seconds, default=10.0, metavar="SECONDS",
        help="print the progress of Spark's stages every SECONDS on stderr, the first time "
             "after SECONDS, so short runs stay quiet (default: 10; 0: never)")
    spark_options.add_argument(
        "-v", "--verbose", action="store_true",
        help="show Spark's and TensorFlow's own output, and full tracebacks on errors")

    predict = commands.add_parser(
        "predict", parents=[spark_options],
        help="classify images with an ImageNet model (default: the bundled sample photos)",
        description="Classify images with a pretrained ImageNet classifier and print the top-K "
                    "classes of each (or write them with --output). Files that are not images "
                    "are listed as invalid and counted, not fatal.")
    predict.add_argument(
        "paths", nargs="*", metavar="PATH",
        help="image folder (read recursively), file, glob or URI that Spark reads; "
             "default: sparkdl's sample photos")
    predict.add_argument("--model", default=DEFAULT_MODEL,
                         help=f"model name, see 'sparkdl models' (default: {DEFAULT_MODEL})")
    predict.add_argument("--top-k", type=_positive_int, default=5, metavar="K",
                         help="classes kept per image (default: 5)")
    predict.add_argument(
        "--output", metavar="FILE",
        help="write the predictions instead of printing them; the format follows the "
             "extension: .parquet or .json (path, predictions as a list of (class, "
             "description, probability), error) or .csv (predictions as one string "
             "'description:probability;...'). Written by Spark: FILE is a directory holding "
             "one part file")
    predict.set_defaults(run=_predict)

    featurize = commands.add_parser(
        "featurize", parents=[spark_options],
        help="compute image features with a model without its classifier",
        description="Compute one feature vector per image (the model without its classifier) "
                    "and write path, features (a Spark ML vector, null for invalid files) and "
                    "error to Parquet.")
    featurize.add_argument("paths", nargs="+", metavar="PATH",
                           help="image folder (read recursively), file, glob or URI")
    featurize.add_argument("--model", default=DEFAULT_MODEL,
                           help=f"model name, see 'sparkdl models' (default: {DEFAULT_MODEL})")
    featurize.add_argument(
        "--pooling", choices=("avg", "max", "none"), default="avg",
        help="pooling of the last feature map: avg (default), max, or none (the flattened map)")
    featurize.add_argument("--output", required=True, metavar="FILE.parquet",
                           help="Parquet output, written by Spark (a directory of part files)")
    featurize.set_defaults(run=_featurize)

    models = commands.add_parser(
        "models", help="list the models, their sizes and whether their weights are offline",
        description="List the supported models with their input size, feature size and "
                    "whether their ImageNet weights are on this machine.")
    models.set_defaults(run=_models, verbose=False)
    return parser


def _model_entry(name):
    from sparkdl.models.registry import getModelEntry

    try:
        return getModelEntry(name)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def _is_local(path):
    return urlparse(path).scheme in ("", "file")


def _local_path(path):
    parsed = urlparse(path)
    return parsed.path if parsed.scheme == "file" else path


def _check_inputs(paths):
    """Fail fast on a local path that does not exist (globs and other file systems are left to
    Spark, whose error is summarized too)."""
    for path in paths:
        if _is_local(path) and not _GLOB_CHARS.search(path):
            if not os.path.exists(_local_path(path)):
                raise CliError(f"no such file or directory: {path}")


def _output_format(output, formats):
    extension = os.path.splitext(output.rstrip("/"))[1].lower().lstrip(".")
    if extension not in formats:
        wanted = ", ".join("." + f for f in formats)
        raise CliError(f"cannot tell the output format of {output!r}: its name must end in "
                       f"{wanted}", EXIT_USAGE)
    return extension


def _check_output(output, overwrite):
    if not overwrite and _is_local(output) and os.path.exists(_local_path(output)):
        raise CliError(f"output {output} already exists (use --overwrite to replace it)")


# --- Spark ---------------------------------------------------------------------------------

class _Spark:
    """The SparkSession of one command: the active one if any (left running), else a new one,
    stopped at the end, whose JVM writes its output to a log file unless ``verbose``."""

    def __init__(self, master, verbose):
        self.master = master
        self.verbose = verbose
        self.spark = None
        self.owned = False
        self.log = None
        self.keep_log = False

    def __enter__(self):
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        active = SparkContext._active_spark_context
        if active is not None:
            self.spark = SparkSession.active()
            if self.master and self.master != active.master:
                _note(f"using the active Spark session (master {active.master}), "
                      f"not --master {self.master}")
            return self
        from sparkdl.utils.session import local_session

        self.owned = True
        if not self.verbose:
            self.log = tempfile.NamedTemporaryFile(prefix="sparkdl-", suffix=".log",
                                                   delete=False)
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

    def _jvm_failure(self, error):
        """Why the JVM did not start: its first error line in the log (spark-submit exits on
        a bad master URL or a missing java before PySpark can say more than that it exited)."""
        if "JAVA_GATEWAY_EXITED" not in str(error) or self.log is None:
            return _summarize(error)
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        lines = [line for line in lines if not (line.startswith(("at ", "WARNING:", "Using "))
                                                or re.search(r" (WARN|INFO) ", line))]
        errors = [line for line in lines if re.search(r"Exception|Error", line)]
        reason = (errors or lines or ["the JVM exited"])[0]
        reason = _one_line(re.sub(r'^Exception in thread "\w+" ', "", reason), 300)
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

        message = _summarize(error)
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


class _Progress:
    """Every ``interval`` seconds (the first time after ``interval``), one stderr line with the
    tasks done in each active Spark stage, from ``SparkContext.statusTracker()``."""

    def __init__(self, spark, interval):
        self.tracker = spark.sparkContext.statusTracker()
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = None
        self.start = time.monotonic()

    def __enter__(self):
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
        return False


def _read_images(spark, paths):
    from sparkdl import readImages

    images = readImages(paths[0] if len(paths) == 1 else list(paths))
    try:  # the file index Spark listed, counted in the JVM (no per-file transfer)
        count = len(images._jdf.inputFiles())
    except Exception:
        count = None
    if count == 0:
        raise CliError(f"no files found at {' '.join(paths)}")
    return images


def _write(df, output, fmt, overwrite):
    writer = df.write.mode("overwrite" if overwrite else "errorifexists").format(fmt)
    if fmt == "csv":
        writer = writer.option("header", True)
    writer.save(output)


def _written_counts(spark, output, fmt):
    """``(rows, invalid)`` of a written output, read back from its ``error`` column."""
    from pyspark.sql import functions as F

    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", True)
    elif fmt == "json":  # null fields are left out of JSON lines; give the reader the schema
        reader = reader.schema("path string, error string")
    row = reader.load(output).agg(F.count(F.lit(1)).alias("rows"),
                                  F.count("error").alias("invalid")).first()
    return row["rows"], row["invalid"]


# --- commands ------------------------------------------------------------------------------

def _predict(args):
    from sparkdl.resources import samplesDir

    entry = _model_entry(args.model)
    paths = args.paths or [samplesDir()]
    _check_inputs(paths)
    fmt = None
    if args.output:
        fmt = _output_format(args.output, PREDICT_FORMATS)
        _check_output(args.output, args.overwrite)
    start = time.monotonic()
    with _Spark(args.master, args.verbose) as run:
        try:
            result = _predictions(run, paths, entry, args.top_k)
            with _Progress(run.spark, args.progress):
                if fmt is None:
                    rows = result.collect()
                else:
                    _write(_flat(result) if fmt == "csv" else result, args.output, fmt,
                           args.overwrite)
                    total, invalid = _written_counts(run.spark, args.output, fmt)
        except CliError:
            raise
        except Exception as e:
            raise run.failure(e) from e
    if fmt is None:
        rows = sorted(rows, key=lambda r: r["path"] or "")
        total, invalid = len(rows), sum(r["predictions"] is None for r in rows)
        print(_prediction_table(rows, args.top_k))
    where = f" -> {args.output}" if fmt else ""
    _note(f"{total} image file{'s' * (total != 1)}, {invalid} invalid, from "
          f"{' '.join(paths)}{where} ({entry.name}, top {args.top_k}, "
          f"{time.monotonic() - start:.1f} s)")
    return EXIT_OK


def _predictions(run, paths, entry, top_k):
    from pyspark.sql import functions as F

    from sparkdl import DeepImagePredictor

    images = _read_images(run.spark, paths)
    predictor = DeepImagePredictor(inputCol="image", outputCol="predictions",
                                   modelName=entry.name, decodePredictions=True, topK=top_k)
    with run.quiet():  # builds the model on the driver
        predicted = predictor.transform(images)
    result = predicted.select(F.col("image.origin").alias("path"), "predictions", "error")
    # One small part file per output, sorted; inference keeps the input's partitions.
    return result.repartition(1).sortWithinPartitions("path")


def _flat(result):
    """Predictions as one string column, ``description:probability;...``, for CSV."""
    from pyspark.sql import functions as F

    labels = F.transform("predictions", lambda p: F.format_string("%s:%.4f", p["description"],
                                                                  p["probability"]))
    text = F.when(F.col("predictions").isNull(), F.lit(None)).otherwise(F.concat_ws(";", labels))
    return result.select("path", text.alias("predictions"), "error")


def _featurize(args):
    from pyspark.sql import functions as F

    from sparkdl import DeepImageFeaturizer

    entry = _model_entry(args.model)
    _check_inputs(args.paths)
    fmt = _output_format(args.output, FEATURIZE_FORMATS)
    _check_output(args.output, args.overwrite)
    pooling = None if args.pooling == "none" else args.pooling
    size = entry.featureSize if pooling else entry.flattenedFeatureSize
    start = time.monotonic()
    with _Spark(args.master, args.verbose) as run:
        try:
            images = _read_images(run.spark, args.paths)
            featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features",
                                             modelName=entry.name, pooling=pooling)
            with run.quiet():
                featurized = featurizer.transform(images)
            result = featurized.select(F.col("image.origin").alias("path"), "features", "error")
            with _Progress(run.spark, args.progress):
                _write(result, args.output, fmt, args.overwrite)
                total, invalid = _written_counts(run.spark, args.output, fmt)
        except CliError:
            raise
        except Exception as e:
            raise run.failure(e) from e
    _note(f"{total} image file{'s' * (total != 1)}, {invalid} invalid, from "
          f"{' '.join(args.paths)} -> {args.output} ({entry.name}, {size} features, "
          f"pooling {args.pooling}, {time.monotonic() - start:.1f} s)")
    return EXIT_OK


def _models(args):
    from sparkdl.models.registry import (
        getModelEntry, isWeightsAvailableOffline, kerasCacheDir, supportedModelNames)

    rows = []
    for name in supportedModelNames():
        entry = getModelEntry(name)
        notop = isWeightsAvailableOffline(entry, include_top=False)
        top = isWeightsAvailableOffline(entry, include_top=True)
        offline = {(True, True): "yes", (False, False): "no", (True, False): "featurize only",
                   (False, True): "predict only"}[(notop, top)]
        height, width = entry.inputSize
        rows.append((name, f"{height}x{width}", str(entry.featureSize), offline,
                     entry.description))
    print(_table(("model", "input", "features", "offline weights", "description"), rows,
                 right=(2,)))
    print(f"\nWeights that are not offline are downloaded on first use (keras.applications, "
          f"into {kerasCacheDir()}); 'featurize only' / 'predict only': only the weights "
          f"without / with the classifier are there.")
    return EXIT_OK


# --- output --------------------------------------------------------------------------------

def _table(header, rows, right=()):
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row):
        cells = [str(cell).rjust(widths[i]) if i in right else str(cell).ljust(widths[i])
                 for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _display_path(origin):
    return origin[len("file://"):] if origin.startswith("file:///") else origin


def _common_folder(paths):
    """The longest folder prefix (ending in '/') shared by all ``paths``."""
    folders = [p[: p.rfind("/") + 1] for p in paths]
    prefix = os.path.commonprefix(folders)
    return prefix[: prefix.rfind("/") + 1]


def _prediction_table(rows, top_k):
    if not rows:
        return "(no images)"
    paths = [_display_path(r["path"] or "") for r in rows]
    base = _common_folder(paths)
    width = max(len(r["predictions"]) for r in rows if r["predictions"] is not None) \
        if any(r["predictions"] is not None for r in rows) else top_k
    header = ["file"] + [f"top {i + 1}" for i in range(width)]
    body = []
    for path, row in zip(paths, rows):
        cells = [path[len(base):]]
        if row["predictions"] is None:
            reason = _one_line(row["error"] or "not an image", 100)
            cells += [f"invalid: {reason}"] + [""] * (width - 1)
        else:
            cells += [f"{p['description']} {p['probability']:.3f}" for p in row["predictions"]]
            cells += [""] * (width - len(row["predictions"]))
        body.append(cells)
    # The reason of an invalid file spans the prediction columns, so it sets no width.
    widths = [max([len(header[i])] + [len(c[i]) for c, r in zip(body, rows)
                                      if i == 0 or r["predictions"] is not None])
              for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


# --- errors --------------------------------------------------------------------------------

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)):?( .*)?$")


def _summarize(error):
    """One line for any exception: Py4J/Java errors by their root cause, Spark's analysis and
    Python worker errors by their message, without stack traces."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException, PythonException

    if isinstance(error, PythonException):
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
        return "a Python worker failed: " + _one_line(raised[-1] if raised else lines[0], 300)
    if isinstance(error, Py4JJavaError):
        cause = error.java_exception
        with contextlib.suppress(Exception):
            while cause.getCause() is not None and cause.getCause() != cause:
                cause = cause.getCause()
        with contextlib.suppress(Exception):
            return _one_line(_first_line(cause.toString()), 300)
        return _one_line(_first_line(str(error)), 300)
    if isinstance(error, PySparkException):
        text = getattr(error, "_desc", None) or str(error)
        text = re.sub(r"\s*SQLSTATE: \w+\.?$", "", _first_line(text).strip())
        return _one_line(re.sub(r"^\[[A-Z_.]+\]\s*", "", text), 300)
    message = _one_line(error, 300)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _first_line(text):
    for line in str(text).splitlines():
        if line.strip():
            return line
    return ""


def main(argv=None):
    """Run the ``sparkdl`` command line with ``argv`` (default ``sys.argv[1:]``); returns the
    exit status (0 success, 1 failure, 2 bad arguments)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        return args.run(args)
    except CliError as e:
        if args.verbose and e.__cause__ is not None:
            raise
        _error(e)
        return e.code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:
        if args.verbose:
            raise
        _error(_summarize(e))
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
