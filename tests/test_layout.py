"""The layout rules of CONTRIBUTING.md, checked on the source: one-way imports, and no
module reaching into another's private (``_``-prefixed) names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tl_dynamics as tld

PACKAGE = Path(tld.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))

# (module, modules it must never import): the arrows that DESIGN.md keeps one-way.
NEVER_IMPORTS = {
    "compare": {"report"},  # compare reads report folders, not report's code
    "collect": {"store", "distributed", "streaming"},  # the store drives collection
    "_batching": {"collect", "interventions", "store"},  # under both of its users
    "hooks": {"collect", "interventions", "report"},
}


def imported_names(source: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from tl_dynamics... import name`` in ``source``, anywhere
    in it (functions included); the module relative to ``tl_dynamics`` (``""``: the package)."""
    found = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tl_dynamics":
            module = node.module.removeprefix("tl_dynamics").removeprefix(".")
            found += [(module, alias.name) for alias in node.names]
    return found


def private_imports(source: Path) -> list[str]:
    """``module.name`` of every ``_``-prefixed name ``source`` imports from the package."""
    return [
        f"tl_dynamics.{module}.{name}"
        for module, name in imported_names(source)
        if name.startswith("_") and not name.endswith("__")  # __all__ is public
    ]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_modules_private_names(source):
    assert private_imports(source) == []


def test_the_check_sees_a_private_import(tmp_path):
    module = tmp_path / "reaching.py"
    module.write_text("from tl_dynamics.collect import _kept_positions\n")
    assert private_imports(module) == ["tl_dynamics.collect._kept_positions"]


def package_imports(source: Path) -> set[str]:
    """The package modules ``source`` imports (relative to ``tl_dynamics``), anywhere in it."""
    return {module or name for module, name in imported_names(source)}


@pytest.mark.parametrize(("module", "forbidden"), sorted(NEVER_IMPORTS.items()))
def test_imports_stay_one_way(module, forbidden):
    assert package_imports(PACKAGE / f"{module}.py") & forbidden == set()


def test_the_check_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "compare.py"
    module.write_text("def f():\n    from tl_dynamics.report import run_report\n")
    assert package_imports(module) & NEVER_IMPORTS["compare"] == {"report"}
