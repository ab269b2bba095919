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


def private_imports(source: Path) -> list[str]:
    """``module.name`` of every ``_``-prefixed name ``source`` imports from the package."""
    found = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tl_dynamics"):
            found += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.endswith("__")  # __all__ is public
            ]
    return found


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_modules_private_names(source):
    assert private_imports(source) == []


def test_the_check_sees_a_private_import(tmp_path):
    module = tmp_path / "reaching.py"
    module.write_text("from tl_dynamics.collect import _kept_positions\n")
    assert private_imports(module) == ["tl_dynamics.collect._kept_positions"]


def package_imports(source: Path) -> set[str]:
    """The package modules ``source`` imports (relative to ``tl_dynamics``), anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tl_dynamics."):
            found.add(node.module.removeprefix("tl_dynamics."))
        elif isinstance(node, ast.ImportFrom) and node.module == "tl_dynamics":
            found |= {alias.name for alias in node.names}
    return found


@pytest.mark.parametrize(("module", "forbidden"), sorted(NEVER_IMPORTS.items()))
def test_imports_stay_one_way(module, forbidden):
    assert package_imports(PACKAGE / f"{module}.py") & forbidden == set()


def test_the_check_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "compare.py"
    module.write_text("def f():\n    from tl_dynamics.report import run_report\n")
    assert package_imports(module) & NEVER_IMPORTS["compare"] == {"report"}
