"""The README's main job, kept for ``python -m sparkdl.demo [PATH]``: the same as
``sparkdl predict [PATH]`` (local Spark, offline EfficientNetLite0 on sparkdl's sample photos
when no PATH is given). See :mod:`sparkdl.cli`."""
import sys


def main(argv=None):
    from sparkdl.cli import main as cli_main

    return cli_main(["predict", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
