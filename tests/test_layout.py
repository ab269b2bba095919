"""The layout rules of CONTRIBUTING.md, checked on the source: one-way imports, no module
reaching into another's private (``_``-prefixed) names, by import or by attribute, and
plots that never reach code that runs a model."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tl_dynamics as tld

PACKAGE = Path(tld.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
PLOTS = sorted((PACKAGE / "plot").glob("*.py"))

# (module, modules it must never import): the arrows the layout keeps one-way.
NEVER_IMPORTS = {
    "report.compare": {"report", "report.pipeline"},  # compare reads report folders, not report's code
    "report.record": {"report", "report.pipeline", "report.compare", "report.findings"},
    "report.findings": {"report", "report.pipeline", "report.beyond", "report.html"},
    "stats": {"report", "report.findings", "report.beyond"},  # under the claims
    "collect": {"store", "distributed", "streaming"},  # the store drives collection
    "_batching": {"collect", "interventions", "store"},  # under both of its users
    "hooks": {"collect", "interventions", "report", "metrics"},
}

# Modules that run a model (directly or through hooks); plots must never reach them.
RUNS_A_MODEL = {
    "hooks", "collect", "_batching", "interventions", "similarity", "stability", "models",
    "distributed", "store", "streaming", "presets", "report.pipeline", "report.measures", "report.tokens",
}


def module_name(path: Path) -> str:
    """``path``'s module relative to ``tl_dynamics`` (``report.findings``, ``report``)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_path(name: str) -> Path | None:
    """The file of package module ``name`` (``""``: the package), or ``None``."""
    base = PACKAGE.joinpath(*name.split(".")) if name else PACKAGE
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _nodes(tree: ast.AST, runtime_only: bool):
    """Every node of ``tree``; without the bodies of ``if TYPE_CHECKING:`` when ``runtime_only``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if runtime_only and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(source: Path, runtime_only: bool = False) -> list[tuple[str, str, str]]:
    """``(module, name, local name)`` of every import of the package in ``source``, anywhere
    in it (functions included); ``module`` relative to ``tl_dynamics`` (``""``: the package).
    ``import tl_dynamics.x as y`` gives ``("x", "", "y")``."""
    found = []
    for node in _nodes(ast.parse(source.read_text()), runtime_only):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tl_dynamics":
            module = node.module.removeprefix("tl_dynamics").removeprefix(".")
            found += [(module, alias.name, alias.asname or alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tl_dynamics":
                    module = alias.name.removeprefix("tl_dynamics").removeprefix(".")
                    found.append((module, "", alias.asname or alias.name.split(".")[0]))
    return found


def private_imports(source: Path) -> list[str]:
    """``module.name`` of every ``_``-prefixed name ``source`` imports from the package."""
    return [
        f"tl_dynamics.{module}.{name}"
        for module, name, _ in imported_names(source)
        if name.startswith("_") and not name.endswith("__")  # __all__ is public
    ]


def package_imports(source: Path, runtime_only: bool = False) -> set[str]:
    """The package modules ``source`` imports (relative to ``tl_dynamics``), anywhere in it;
    ``from tl_dynamics.report import findings`` counts as ``report.findings``."""
    modules = set()
    for module, name, _ in imported_names(source, runtime_only):
        submodule = f"{module}.{name}".lstrip(".")
        modules.add(submodule if name and module_path(submodule) else module)
    return modules


def private_attributes(source: Path) -> list[str]:
    """``alias._name`` of every ``_``-prefixed attribute ``source`` reads from a package
    module it imported (``findings_module._Resampler``, ``tld.findings._tested``)."""
    modules = {local for module, name, local in imported_names(source)
               if not name or module_path(f"{module}.{name}".lstrip("."))}
    found = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                found.append(f"{ast.unparse(node.value)}.{node.attr}")
    return found


def reachable(source: Path) -> set[str]:
    """Every package module ``source`` reaches through run-time imports, transitively
    (``if TYPE_CHECKING:`` imports are for type checkers only and do not count)."""
    seen: set[str] = set()
    todo = [source]
    while todo:
        for module in package_imports(todo.pop(), runtime_only=True):
            path = module_path(module)
            if module and module not in seen and path is not None:
                seen.add(module)
                todo.append(path)
    return seen


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_modules_private_names(source):
    assert private_imports(source) == []


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_reads_another_modules_private_attributes(source):
    assert private_attributes(source) == []


def test_the_check_sees_a_private_import(tmp_path):
    module = tmp_path / "reaching.py"
    module.write_text("from tl_dynamics.collect import _kept_positions\n")
    assert private_imports(module) == ["tl_dynamics.collect._kept_positions"]


def test_the_check_sees_a_private_attribute(tmp_path):
    module = tmp_path / "reaching.py"
    module.write_text(
        "import tl_dynamics as tld\n"
        "from tl_dynamics.report import findings as findings_module\n"
        "resampler = findings_module._Resampler.of(None, 10, 0)\n"
        "tested = tld.findings._tested\n"
        "mine = self._cache  # not a module: fine\n"
    )
    assert sorted(private_attributes(module)) == ["findings_module._Resampler", "tld.findings._tested"]


@pytest.mark.parametrize(("module", "forbidden"), sorted(NEVER_IMPORTS.items()))
def test_imports_stay_one_way(module, forbidden):
    assert package_imports(module_path(module)) & forbidden == set()


def test_the_check_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "compare.py"
    module.write_text("def f():\n    from tl_dynamics.report import pipeline\n")
    assert package_imports(module) & NEVER_IMPORTS["report.compare"] == {"report.pipeline"}


@pytest.mark.parametrize("source", PLOTS, ids=lambda p: p.name)
def test_plots_never_reach_code_that_runs_a_model(source):
    assert reachable(source) & RUNS_A_MODEL == set()


def test_the_check_sees_a_plot_that_reaches_a_model(tmp_path):
    module = tmp_path / "plot.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tl_dynamics.similarity import DynamicalSimilarity\n"
    )
    assert reachable(module) & RUNS_A_MODEL == set()  # for type checkers only: allowed
    module.write_text("from tl_dynamics.interventions import TeleportSweep\n")
    assert {"interventions", "hooks"} <= reachable(module) & RUNS_A_MODEL
