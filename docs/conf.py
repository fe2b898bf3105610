"""Sphinx configuration: user guide (guide/) and API reference (api/) from the docstrings.

Build: ``make docs`` or ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
``python/tests/test_docs.py`` runs the same build with warnings as errors and checks that every
public name has an API entry.
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))
# Importing sparkdl's modules imports TensorFlow: keep its start-up quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sparkdl  # noqa: E402

project = "sparkdl"
author = "sparkdl contributors"
copyright = "sparkdl contributors"
release = sparkdl.__version__
version = release

# Docstrings use reST field lists (:param x:, :return:, :raises E:), as pyspark.ml does.
extensions = [
    "sphinx.ext.autodoc",
    "sparkdl_docs",
]

exclude_patterns = ["_build", "README.md"]
html_theme = "alabaster"
html_title = f"sparkdl {release}"

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
autodoc_typehints = "none"
# Only sparkdl's own docstrings: e.g. keras.callbacks.Callback's hooks are not repeated.
autodoc_inherit_docstrings = False
# Broken references to sparkdl names are errors; other libraries are not linked (offline build).
nitpicky = True
# Types named in numpy-style docstrings that are not sparkdl objects.
nitpick_ignore = [("py:class", "keras.Model"), ("py:class", "path-like")]
