"""The package's floors, read from the source with ``ast`` (every import, also those inside
functions): a floor never imports one above it (the low floors never import the engine, the
engine never imports the stages), and no private name (``_x``, a module or an object) is
imported from another subpackage."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "sparkdl")

#: Subpackage -> the subpackages above it, which it never imports.
STAGES = ("transformers", "estimators", "udf", "cli")
ABOVE = {
    **{low: ("engine", "horovod") + STAGES
       for low in ("utils", "models", "graph", "image", "param")},
    "horovod": ("engine",) + STAGES,
    "engine": STAGES,
}


def imports(source, module):
    """``[(line, imported module, imported name or None)]`` of a module's source; relative
    imports are resolved against ``module`` (its dotted name)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[:-node.level]
                base = ".".join(parts + ([base] if base else []))
            found += [(node.lineno, base, alias.name) for alias in node.names]
    return found


def subpackage(dotted):
    """``sparkdl.image.reader`` -> ``image``; top-level modules -> ``""``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and _isPackage(parts[1])) else ""


def _isPackage(name):
    return os.path.isdir(os.path.join(PACKAGE, name))


def violations(source, module):
    """The floor and privacy violations of one module's source, one line each."""
    mine = subpackage(module)
    out = []
    for line, target, name in imports(source, module):
        if not (target == "sparkdl" or target.startswith("sparkdl.")):
            continue
        dotted = f"{target}.{name}" if name and _isModule(f"{target}.{name}") else target
        theirs = subpackage(dotted) if dotted != "sparkdl" else ""
        if theirs in ABOVE.get(mine, ()):
            out.append(f"{module}:{line}: the {mine!r} floor imports {dotted}")
        if theirs and theirs != mine:
            private = [p for p in dotted.split(".") if p.startswith("_") and not p.startswith("__")]
            if name and name.startswith("_") and not name.startswith("__"):
                private.append(name)
            if private:
                out.append(f"{module}:{line}: private {private} of {theirs!r} imported by "
                           f"{mine or 'sparkdl'!r}")
    return out


def _isModule(dotted):
    path = os.path.join(ROOT, *dotted.split("."))
    return os.path.isdir(path) or os.path.exists(path + ".py")


def modules():
    for folder, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                yield path, ".".join(rel)


def test_the_checker_sees_both_kinds_of_violation():
    low = "def f():\n    from sparkdl.engine.model_cache import get\n"
    assert violations(low, "sparkdl.image.reader") == [
        "sparkdl.image.reader:2: the 'image' floor imports sparkdl.engine.model_cache"]
    private = ("from sparkdl.transformers.keras_image import _toOutputMode\n"
               "import sparkdl.horovod._wire\n")
    assert len(violations(private, "sparkdl.estimators.x")) == 2
    relative = "from ..engine import handle\n"
    assert violations(relative, "sparkdl.param.shared") != []
    # Within a subpackage, private names are its own business; the engine may use the floors.
    assert violations("from sparkdl.horovod._wire import send\n", "sparkdl.horovod.runner") == []
    assert violations("from sparkdl.utils.worker import iterChunks\n", "sparkdl.engine.x") == []
    assert violations("from sparkdl.transformers import stage\n", "sparkdl.engine.x") != []


def test_the_package_respects_the_floors():
    found = []
    for path, module in modules():
        with open(path, encoding="utf-8") as f:
            found += violations(f.read(), module)
    assert found == []
