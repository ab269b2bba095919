"""Every module's docstring ends with an example; run each one, on tiny inputs.

The examples are written for the default model and corpus. Here ``load_model`` returns
the session's SmolLM2 whatever it is asked for, ``python_docs()`` gives its first
:data:`TEXTS` paragraphs, figures do not open a browser, and fragments that start from a
user's ``model``, ``dyn`` or ``resid`` find them in their namespace. Examples that need
the hub, a shell, ``torchrun`` or report folders are listed in :data:`NOT_RUN` with the
test that covers them; the heavy ones (a whole report, teleports at every default layer,
Jacobians at every layer) are marked slow.
"""

from __future__ import annotations

import importlib
import pkgutil
import textwrap

import plotly.graph_objects as go
import pytest

import tl_dynamics as tld

TEXTS = 24  # python_docs() in the examples: enough for every shape, small enough to be quick

NOT_RUN = {
    "tl_dynamics.__main__": "the entry point; no example",
    "tl_dynamics._version": "a version string; no example",
    "tl_dynamics.cli": "a shell example; tests/test_report.py runs the commands",
    "tl_dynamics.report.compare": "needs two report folders; tests/test_report.py compares reports",
    "tl_dynamics.distributed": "runs inside torchrun; tests/test_distributed.py starts it",
}
SLOW = {
    "tl_dynamics.interventions",
    "tl_dynamics.plot.trajectories",
    "tl_dynamics.report",
    "tl_dynamics.report.beyond",
    "tl_dynamics.report.pipeline",
    "tl_dynamics.similarity",
    "tl_dynamics.stability",
}
BEFORE = {"tl_dynamics.streaming": "tl_dynamics.store"}  # reads the store the other writes

MODULES = sorted(
    {"tl_dynamics"}
    | {name for _, name, _ in pkgutil.walk_packages(tld.__path__, prefix="tl_dynamics.")}
)


def example(name: str) -> str:
    doc = importlib.import_module(name).__doc__ or ""
    assert "Example::" in doc, f"{name} has no Example:: block"
    return textwrap.dedent(doc.split("Example::", 1)[1])


def test_every_module_is_run_or_says_why_not():
    assert set(NOT_RUN) | SLOW <= set(MODULES)
    for name in set(MODULES) - set(NOT_RUN):
        example(name)


@pytest.fixture(scope="session")
def example_texts():
    return tld.data.python_docs()[:TEXTS]


@pytest.fixture(scope="session")
def example_dyn(smollm2, example_texts):
    return tld.collect(smollm2, example_texts, progress=False)


@pytest.fixture
def example_namespace(smollm2, example_texts, example_dyn, tmp_path, monkeypatch):
    monkeypatch.setattr(tld.models, "load_model", lambda *args, **kwargs: smollm2)
    monkeypatch.setattr(tld.data, "python_docs", lambda: list(example_texts))
    monkeypatch.setattr(go.Figure, "show", lambda self, *args, **kwargs: None)
    monkeypatch.chdir(tmp_path)
    return {"model": smollm2, "dyn": example_dyn, "resid": example_dyn.resid}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
        for name in MODULES
        if name not in NOT_RUN
    ],
)
def test_module_example_runs(name, example_namespace):
    for module in (BEFORE.get(name), name):
        if module is not None:
            code = compile(example(module), f"<{module} example>", "exec")
            exec(code, {"__name__": "__example__", **example_namespace})
