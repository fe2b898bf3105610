"""``python -m sparkdl.cli``: the ``sparkdl`` command line."""
import sys

from sparkdl.cli import main

sys.exit(main())
