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
from sparkdl.cli import jobs
from sparkdl.cli.parsing import (EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CliError,
                                 build_parser, error)
from sparkdl.cli.session import summarize

__all__ = ["main"]


def main(argv=None):
    """Run the ``sparkdl`` command line with ``argv`` (default ``sys.argv[1:]``); returns the
    exit status (0 success, 1 failure, 2 bad arguments)."""
    parser = build_parser(jobs.COMMANDS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        return args.run(args)
    except CliError as e:
        if args.verbose and e.__cause__ is not None:
            raise
        error(e)
        return e.code
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:
        if args.verbose:
            raise
        error(summarize(e))
        return EXIT_FAILURE
