"""``python -m sparkdl``: the ``sparkdl`` command line (:mod:`sparkdl.cli`)."""
import sys

from sparkdl.cli import main

sys.exit(main())
