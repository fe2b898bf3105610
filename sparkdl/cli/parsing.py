"""The command line's arguments: the parser, and the checks of paths, models and outputs
that fail before Spark starts."""
import argparse
import os
import re
import sys
from urllib.parse import urlparse

__all__ = ["CliError", "build_parser", "model_entry", "check_inputs", "output_format",
           "check_output", "error", "note", "one_line"]

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


def error(message):
    print(f"sparkdl: error: {message}", file=sys.stderr, flush=True)


def note(message):
    print(f"sparkdl: {message}", file=sys.stderr, flush=True)


def one_line(text, limit=None):
    text = " ".join(str(text).split())
    if limit and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _number(value, cast, ok, wanted):
    try:
        number = cast(value)
    except ValueError:
        number = None
    if number is None or not ok(number):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {value!r}")
    return number


def _positive_int(value):
    return _number(value, int, lambda n: n > 0, "a positive integer")


def _seconds(value):
    return _number(value, float, lambda n: n >= 0, "a number of seconds >= 0")


def build_parser(commands):
    """The ``sparkdl`` parser; ``commands`` maps each command name to the function that runs
    it (``args -> exit status``)."""
    from sparkdl import __version__

    parser = argparse.ArgumentParser(
        prog="sparkdl",
        description="Deep Learning Pipelines for Apache Spark: pretrained image models on Spark.",
        epilog="Run 'sparkdl COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"sparkdl {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    spark_options = argparse.ArgumentParser(add_help=False)
    spark_options.add_argument(
        "--master", metavar="URL",
        help="Spark master URL (default: local[*], all cores of this machine)")
    spark_options.add_argument(
        "--remote", metavar="URL",
        help="run the job on the Spark Connect server at URL (sc://host:port; needs "
             "sparkdl[connect]): PATHs and --output are then read and written by its executors")
    spark_options.add_argument(
        "--overwrite", action="store_true", help="replace --output if it exists")
    spark_options.add_argument(
        "--progress", type=_seconds, default=10.0, metavar="SECONDS",
        help="print the progress of Spark's stages every SECONDS on stderr, the first time "
             "after SECONDS, so short runs stay quiet (default: 10; 0: never)")
    spark_options.add_argument(
        "-v", "--verbose", action="store_true",
        help="show Spark's and TensorFlow's own output, and full tracebacks on errors")
    # What runs the model (sparkdl.param.shared.RUNTIMES; kept literal so --help imports no
    # pyspark.ml): auto picks the fastest installed CPU runtime and never fails a run.
    spark_options.add_argument(
        "--runtime", choices=("auto", "tensorflow", "openvino", "litert"), default="auto",
        help="what runs the model: auto (default: OpenVINO, else LiteRT, else TensorFlow, "
             "falling back to TensorFlow when a runtime cannot convert it), tensorflow, "
             "openvino or litert; the summary line says which ran")
    spark_options.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="fp32 (default) or bf16 (OpenVINO on CPUs with bfloat16: faster, less exact)")

    predict = subcommands.add_parser(
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
    predict.set_defaults(run=commands["predict"])

    featurize = subcommands.add_parser(
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
    featurize.set_defaults(run=commands["featurize"])

    models = subcommands.add_parser(
        "models", help="list the models, their sizes and whether their weights are offline",
        description="List the supported models with their input size, feature size and "
                    "whether their ImageNet weights are on this machine.")
    models.set_defaults(run=commands["models"], verbose=False)
    return parser


def model_entry(name):
    from sparkdl.models.registry import getModelEntry

    try:
        return getModelEntry(name)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def is_local(path):
    return urlparse(path).scheme in ("", "file")


def local_path(path):
    parsed = urlparse(path)
    return parsed.path if parsed.scheme == "file" else path


def check_inputs(paths):
    """Fail fast on a local path that does not exist (globs and other file systems are left to
    Spark, whose error is summarized too)."""
    for path in paths:
        if is_local(path) and not _GLOB_CHARS.search(path):
            if not os.path.exists(local_path(path)):
                raise CliError(f"no such file or directory: {path}")


def output_format(output, formats):
    extension = os.path.splitext(output.rstrip("/"))[1].lower().lstrip(".")
    if extension not in formats:
        wanted = ", ".join("." + f for f in formats)
        raise CliError(f"cannot tell the output format of {output!r}: its name must end in "
                       f"{wanted}", EXIT_USAGE)
    return extension


def check_output(output, overwrite):
    if not overwrite and is_local(output) and os.path.exists(local_path(output)):
        raise CliError(f"output {output} already exists (use --overwrite to replace it)")


