"""Helpers shared by the HorovodRunner tests."""
import os

import pytest

from sparkdl.horovod.runner import horovod_available

BACKENDS = ["horovod", "tensorflow"]


def require_backend(backend):
    """Skip a Horovod-backend test when Horovod is not installed, except in CI, where
    bootstrap.sh installs it and its absence is a failure."""
    if backend == "horovod" and not horovod_available():
        message = "Horovod is not installed (scripts/install_horovod.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def alive(pid):
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
