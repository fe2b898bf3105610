"""The Sphinx docs (docs/) build with warnings as errors, and the API reference has an entry
for every public name, so a new public name without docs fails here.

The build runs ``sphinx-build -W --keep-going -E -b html`` in a subprocess with this Python
(autodoc imports sparkdl's modules, hence TensorFlow; about 10 s).
"""
import importlib
import os
import posixpath
import re
import subprocess
import sys

import pytest
from sphinx.util.inventory import InventoryFile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")

# Modules whose ``__all__`` is public API besides ``sparkdl._EXPORTS``.
PUBLIC_MODULES = [
    "sparkdl.horovod",
    "sparkdl.horovod.tensorflow",
    "sparkdl.horovod.tensorflow.keras",
    "sparkdl.models.registry",
    "sparkdl.image.imageIO",
]


def publicNames():
    """Fully qualified name of every public object, as the API reference must name it.

    A module name that re-exports a ``sparkdl`` top-level name (``sparkdl.horovod.HorovodRunner``)
    is documented once, as ``sparkdl.<name>``.
    """
    import sparkdl

    names = {f"sparkdl.{n}" for n in sparkdl._EXPORTS}
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for n in module.__all__:
            if n in sparkdl._EXPORTS and getattr(module, n) is getattr(sparkdl, n):
                continue
            names.add(f"{modname}.{n}")
    return names


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs_html")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         DOCS, str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    return proc, out


def test_docs_build_without_warnings(built_docs):
    proc, _ = built_docs
    output = proc.stdout + proc.stderr
    problems = [line for line in output.splitlines()
                if re.search(r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b", line)
                and "absl::InitializeLog" not in line]  # TensorFlow's start-up line
    ok = proc.returncode == 0 and not problems
    assert ok, (
        f"sphinx-build failed (exit {proc.returncode}):\n" + "\n".join(problems)
        + ("" if problems else output[-5000:]))


def test_every_public_name_has_an_api_entry(built_docs):
    proc, out = built_docs
    with open(out / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    documented = {name for kind, entries in inventory.items() if kind.startswith("py:")
                  for name in entries}
    expected = publicNames()
    assert len(expected) > 40  # the lists above were read
    missing = sorted(expected - documented)
    assert not missing, f"public names without an entry in docs/api: {missing}"


def test_guide_model_table_lists_every_registry_model(built_docs):
    from sparkdl.models.registry import MODELS

    _, out = built_docs
    html = (out / "guide" / "featurization.html").read_text(encoding="utf-8")
    for entry in MODELS:
        assert f"<td><p>{entry.name}</p></td>" in html, entry.name
