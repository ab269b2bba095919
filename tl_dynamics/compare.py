"""Compare models: overlay the per-depth curves of several reports on normalised depth.

Models differ in depth (MiniLM has 6 layers, Llama 3.1 8B 32, Gemma 2 9B 42), so each
curve is drawn against *normalised depth*: sublayer s of a model with 2L sublayers sits
at s / 2L, and transition t (sublayer t -> t+1) at the depth of its target, (t + 1) / 2L. Every quantity comes
from the ``metrics.json`` of a report written by :func:`tl_dynamics.report.run_report`;
no model is run again. Velocities and norms are in each model's own units, so they are
also shown divided by the model's mean residual-stream norm.

Example::

    from tl_dynamics.compare import run_compare
    run_compare(["llama-report", "gemma-report"], out="llama-vs-gemma")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from tl_dynamics._version import __version__
from tl_dynamics.hooks import FINAL_LABEL
from tl_dynamics._output import atomic_folder, render_html, write_json
from tl_dynamics.report import SCHEMA_VERSION

CURVES = (
    # (key in a condition of metrics.json, axis title, per "sublayer" or "transition")
    ("fig1e_cosine_similarity_mean", "cosine similarity of successive sublayers", "transition"),
    ("fig1f_velocity_mean", "velocity ‖h(t+1) − h(t)‖₂ (model units)", "transition"),
    ("relative_velocity", "velocity / mean norm", "transition"),
    ("fig1h_unit_correlation_mean", "mean per-unit Pearson r", "transition"),
    ("fig1h_mutual_information_mean_nats", "mean per-unit MI (nats)", "transition"),
    ("norms_mean", "mean ‖h‖₂ (model units)", "sublayer"),
)
CONDITION_DASH = {"original": "solid", "shuffled": "dot"}


def read_report(folder: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` of a report folder, checked for a readable schema version.

    Raises:
        FileNotFoundError: no ``metrics.json`` in ``folder``.
        ValueError: a schema newer than this version of tl-dynamics reads.
    """
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} is not a tl-dynamics report: it has no metrics.json "
            "(write one with 'tl-dynamics report')"
        )
    record = json.loads(path.read_text())
    if record.get("schema_version", 0) > SCHEMA_VERSION:
        raise ValueError(f"{str(path)!r} has schema {record['schema_version']}; upgrade tl-dynamics")
    return record


def normalised_depth(labels: Sequence[str]) -> list[float]:
    """Depth of each sublayer as a fraction of the model: ``s / n`` for the ``n`` block
    sublayers (``2L`` with pre and mid sites), and 1 for ``final_post``."""
    n_blocks = sum(label != FINAL_LABEL for label in labels)
    return [1.0 if label == FINAL_LABEL else s / n_blocks for s, label in enumerate(labels)]


def depth_curves(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (condition, quantity): normalised depth and values, JSON-ready.

    A per-sublayer value sits at its sublayer's depth, a per-transition value at the depth
    of the transition's target sublayer (see :func:`normalised_depth`).
    """
    curves = []
    for condition, numbers in record["conditions"].items():
        depth = normalised_depth(numbers["labels"])
        mean_norm = sum(numbers["norms_mean"]) / len(depth)
        derived = {"relative_velocity": [v / mean_norm for v in numbers["fig1f_velocity_mean"]]}
        for key, title, axis in CURVES:
            curves.append(
                {
                    "condition": condition,
                    "quantity": key,
                    "title": title,
                    "depth": depth if axis == "sublayer" else depth[1:],
                    "values": derived.get(key, numbers.get(key)),
                }
            )
    return curves


def run_compare(folders: Sequence[str | Path], *, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``compare.html`` and ``compare.json`` overlaying the reports in ``folders``.

    Returns:
        The output folder.
    """
    if len(folders) < 1:
        raise ValueError("folders must name at least one report folder")
    reports = {}
    for folder in folders:
        record = read_report(folder)
        name = f"{record['model']['model_name'].rstrip('/').split('/')[-1]} ({Path(folder).name})"
        reports[name] = depth_curves(record)
    figures = []
    for key, title, _ in CURVES:
        figure = go.Figure()
        for colour, (name, curves) in enumerate(reports.items()):
            for curve in (c for c in curves if c["quantity"] == key):
                figure.add_trace(
                    go.Scatter(
                        x=curve["depth"],
                        y=curve["values"],
                        mode="lines+markers",
                        name=f"{name} · {curve['condition']}",
                        line={"dash": CONDITION_DASH.get(curve["condition"], "solid"),
                              "color": _palette(colour)},
                    )
                )
        figure.update_layout(
            title=title,
            xaxis_title="normalised depth (sublayer / number of sublayers)",
            yaxis_title=title,
            template="plotly_white",
        )
        figures.append(figure)
    with atomic_folder(out, overwrite) as staging:
        intro = "<p class='sub'>Solid: original texts; dotted: shuffled-token control.</p>"
        page = render_html("Transformer dynamics: model comparison", intro, [("Curves", "", figures)])
        (staging / "compare.html").write_text(page, encoding="utf-8")
        write_json(
            staging / "compare.json",
            {"schema_version": SCHEMA_VERSION, "tl_dynamics_version": __version__, "reports": reports},
        )
    return Path(out)


def _palette(i: int) -> str:
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
    return colours[i % len(colours)]
