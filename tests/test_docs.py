"""Every public name is documented: module docstrings teach and show an example."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import tl_dynamics as tld

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(tld.__path__, prefix="tl_dynamics.")
    if not name.rsplit(".", 1)[-1].startswith("_")
)
PUBLIC = sorted(
    {
        f"{namespace.__name__}.{name}"
        for namespace in (tld, tld.metrics, tld.plot)
        for name in namespace.__all__
        if callable(getattr(namespace, name)) and not name.isupper()
    }
)


@pytest.mark.parametrize("module_name", MODULES)
def test_module_docstring_teaches_with_an_example(module_name):
    module = importlib.import_module(module_name)
    doc = inspect.getdoc(module) or ""
    assert len(doc.split()) >= 25, f"{module_name} needs a docstring that explains its method"
    if module_name != "tl_dynamics.__main__":
        assert "Example" in doc or ">>>" in doc, f"{module_name} docstring needs an example"


@pytest.mark.parametrize("qualified", PUBLIC)
def test_public_callable_has_a_docstring(qualified):
    namespace, name = qualified.rsplit(".", 1)
    obj = getattr(importlib.import_module(namespace), name)
    doc = inspect.getdoc(obj) or ""
    assert len(doc.split()) >= 8, f"{qualified} needs a docstring saying what it returns"
