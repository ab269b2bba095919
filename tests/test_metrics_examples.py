"""Every metrics module opens with a runnable example; run each one."""

from __future__ import annotations

import importlib
import textwrap

import pytest

MODULES = [
    "tl_dynamics.metrics",
    "tl_dynamics.metrics._validation",
    "tl_dynamics.metrics.transitions",
    "tl_dynamics.metrics.geometry",
    "tl_dynamics.metrics.correlation",
    "tl_dynamics.metrics.information",
    "tl_dynamics.metrics.phase",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_docstring_example_runs(name):
    doc = importlib.import_module(name).__doc__
    assert doc is not None and "Example::" in doc, f"{name} has no Example:: block"
    exec(compile(textwrap.dedent(doc.split("Example::", 1)[1]), f"<{name} example>", "exec"), {})
