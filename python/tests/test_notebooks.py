"""The example notebooks in notebooks/ run top to bottom; their cells assert real results
(accuracies, agreement with Keras run directly, rank 0's value), so a notebook that stops
working fails here with the failing cell's traceback.

Each notebook runs in a fresh kernel of this interpreter (which starts its own SparkSession)
in a temporary directory. To re-execute them and save their outputs in place (what GitHub
shows), from the repository root::

    .venv/bin/python python/tests/test_notebooks.py --write            # all of them
    .venv/bin/python python/tests/test_notebooks.py --write 02_your_own_models.ipynb
"""
import argparse
import os
import sys
import tempfile
import time
from datetime import datetime

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(name for name in os.listdir(NOTEBOOKS_DIR) if name.endswith(".ipynb"))
CELL_TIMEOUT = 600  # seconds: generous for a loaded 2-core machine


def kernel_env():
    """The kernel's environment: this checkout's sparkdl first on the path (for the kernel and,
    through it, for Spark's Python workers), and this interpreter for the workers."""
    env = dict(os.environ)
    path = [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # The kernel's own PYSPARK_GATEWAY_* would make it reuse a JVM it does not own.
    for name in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):
        env.pop(name, None)
    return env


def execute(name, cwd):
    """Run notebook ``name`` in a fresh kernel with ``cwd`` as its working directory; return
    the executed notebook and each code cell's seconds. A failing cell raises nbclient's
    CellExecutionError, whose message holds the cell's source and traceback."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(os.path.join(NOTEBOOKS_DIR, name), as_version=4)
    # Kernel "python3" is ipykernel's, started with sys.executable (jupyter_client maps a
    # kernelspec's bare "python" to it). Without fd capture, what native code writes to the
    # process's stdout/stderr (TensorFlow's C++ start-up lines) stays out of the notebook.
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": cwd}}, record_timing=True,
                            extra_arguments=["--IPKernelApp.capture_fd_output=False"])
    client.execute(env=kernel_env())
    seconds = []
    for cell in nb.cells:
        timing = cell.metadata.pop("execution", None)
        if cell.cell_type == "code" and timing:
            start, end = (datetime.fromisoformat(timing[key].replace("Z", "+00:00"))
                          for key in ("iopub.execute_input", "shell.execute_reply"))
            seconds.append((end - start).total_seconds())
    return nb, seconds


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    start = time.monotonic()
    nb, seconds = execute(name, str(tmp_path))
    print(f"{name}: {time.monotonic() - start:.0f} s; cells: {[round(s) for s in seconds]}")
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


def main(argv=None):
    parser = argparse.ArgumentParser(description="Execute the notebooks in notebooks/.")
    parser.add_argument("--write", action="store_true",
                        help="save the executed notebooks (with their outputs) in place")
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    args = parser.parse_args(argv)
    import nbformat

    for name in args.names or NOTEBOOKS:
        name = os.path.basename(name)
        start = time.monotonic()
        with tempfile.TemporaryDirectory() as cwd:
            nb, seconds = execute(name, cwd)
        print(f"{name}: {time.monotonic() - start:.0f} s; code cells: "
              f"{[round(s) for s in seconds]}", flush=True)
        if args.write:
            nbformat.write(nb, os.path.join(NOTEBOOKS_DIR, name))


if __name__ == "__main__":
    main()
