"""Compare models: the paper's findings side by side, and per-depth curves on normalised depth.

The findings table puts each report's verdicts (both conditions, with effect, interval
and p; see :mod:`tl_dynamics.findings`) in one row per finding, so a reader sees which of
the paper's findings hold in which model.

Models differ in depth (MiniLM has 6 layers, Llama 3.1 8B 32, Gemma 2 9B 42), so each
curve is drawn against *normalised depth*: sublayer s of a model with 2L sublayers sits
at s / 2L, and transition t (sublayer t -> t+1) at the depth of its target, (t + 1) / 2L. Every quantity comes
from the ``metrics.json`` of a report written by :func:`tl_dynamics.report.run_report`;
no model is run again. Velocities and norms are in each model's own units, so they are
also shown divided by the model's mean residual-stream norm.

Example::

    from tl_dynamics.report.compare import run_compare
    run_compare(["llama-report", "gemma-report"], out="llama-vs-gemma")
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from tl_dynamics._output import COMPARE_KIND, atomic_folder, check_output
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.errors import DynamicsInputError
from tl_dynamics.metrics import FINAL_LABEL
from tl_dynamics.plot import dsa_matrix
from tl_dynamics.report.figures import depth_curve_figures
from tl_dynamics.report.findings import Finding
from tl_dynamics.report.html import effect_html, write_page
from tl_dynamics.report.record import CONTRASTS_KEY, TWIN_FILE, TWIN_TEXTS, read_report, write_record
from tl_dynamics.similarity import DynamicalSimilarity, dynamical_similarity

__all__ = [
    "CURVES",
    "DERIVED",
    "DSA_SAMPLES",
    "read_report",
    "report_labels",
    "normalised_depth",
    "depth_curves",
    "findings_table",
    "run_compare",
]

CURVES = (
    # (key in a condition of metrics.json, axis title, per "sublayer" or "transition")
    ("fig1e_cosine_similarity_mean", "cosine similarity of successive sublayers", "transition"),
    ("fig1f_velocity_mean", "velocity ‖h(t+1) − h(t)‖₂ (model units)", "transition"),
    ("relative_velocity", "velocity / mean norm", "transition"),
    ("fig1h_unit_correlation_mean", "mean per-unit Pearson r", "transition"),
    ("fig1h_mutual_information_mean_nats", "mean per-unit MI (nats)", "transition"),
    ("norms_mean", "mean ‖h‖₂ (model units)", "sublayer"),
)
DERIVED = ("relative_velocity",)  # computed here from velocity and norms, not read

# Dynamical similarity (DSA) of the reports' saved trajectories. Each condition uses its
# first DSA_SAMPLES samples, as many as the random twin is collected on, so every
# condition has the same number. DSA_ITERATIONS steps of the similarity
# transform's optimisation: the package's default is 1500; on MiniLM's original,
# shuffled and twin conditions (256 texts) 500 moved every distance by < 0.001 rad in a
# third of the time (17 s against 57 s on a shared 2-core machine).
DSA_SAMPLES = TWIN_TEXTS
DSA_ITERATIONS = 500
DSA_SPLITS = 2  # split halves per condition behind its noise floor
DSA_RESAMPLES = 10  # bootstrap resamples of the distance matrix: a usable interval, not a precise one
DSA_CONDITIONS = (
    # (file in the report folder, condition name; the twin only with --random-twin)
    ("dynamics.safetensors", "original"),
    ("dynamics_shuffled.safetensors", "shuffled text"),
    (TWIN_FILE, "random twin"),
)


def report_labels(folders: Sequence[str | Path], records: Sequence[dict[str, Any]]) -> list[str]:
    """One distinct label per report: the model's short name, with the folder where needed.

    Raises:
        ValueError: the same folder is given twice.
    """
    resolved = [Path(folder).resolve() for folder in folders]
    for i, folder in enumerate(resolved):
        if folder in resolved[:i]:
            raise DynamicsInputError(
                f"report {str(folders[i])!r} is given twice; pass each report once"
            )
    names = [record["model"]["model_name"].rstrip("/").split("/")[-1] for record in records]
    return [
        name if names.count(name) == 1 else f"{name} ({Path(folder)})"
        for name, folder in zip(names, folders, strict=True)
    ]


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


def findings_table(labels: Sequence[str], records: Sequence[dict[str, Any]]) -> str:
    """The paper's findings as each report tested them, side by side, as an HTML table.

    One row per finding (in the order the reports list them), one column per report and
    condition: the verdict, with the effect, its 95 % interval and the Holm-adjusted p.
    """
    found = {
        (label, condition): {record["key"]: Finding.from_json(record) for record in findings}
        for label, report in zip(labels, records, strict=True)
        for condition, findings in report.get("findings", {}).items()
        if condition != CONTRASTS_KEY
    }
    claims: dict[str, str] = {}
    for by_key in found.values():
        for key, finding in by_key.items():
            claims.setdefault(key, finding.claim)
    header = "".join(
        f"<th>{html.escape(label)}<br><small>{html.escape(condition)}</small></th>"
        for label, condition in found
    )
    rows = []
    for key, claim in claims.items():
        cells = []
        for by_key in found.values():
            finding = by_key.get(key)
            cells.append(
                "<td>not tested</td>"
                if finding is None
                else f"<td class='{finding.verdict}'>{finding.verdict}<br>{effect_html(finding)}</td>"
            )
        rows.append(f"<tr><td>{html.escape(claim)}</td>{''.join(cells)}</tr>")
    return (
        "<p>Each report's verdicts, as its own findings table states them: effect "
        "[95 % bootstrap interval over texts], p after Holm's correction within the report "
        "and condition. <i>original</i>: the texts; <i>shuffled</i>: the same tokens in "
        "random order after BOS, the control.</p>"
        f"<table class='findings'><thead><tr><th>the paper's finding</th>{header}</tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def dsa_conditions(
    folders: Sequence[str | Path], labels: Sequence[str]
) -> dict[str, DynamicsCache]:
    """The saved trajectories of every report and control, ``"label · condition"``: the
    original texts, the shuffled-text control and, where the report saved one, the
    random-weight twin; the first :data:`DSA_SAMPLES` samples of each."""
    conditions = {}
    for folder, label in zip(folders, labels, strict=True):
        for name, condition in DSA_CONDITIONS:
            path = Path(folder) / name
            if path.is_file():
                dyn = DynamicsCache.load(path)
                conditions[f"{label} · {condition}"] = dyn.select(slice(0, DSA_SAMPLES))
    return conditions


def dsa_section(
    conditions: dict[str, DynamicsCache], seed: int = 0
) -> tuple[str, list[go.Figure], dict[str, Any] | None]:
    """The DSA distance matrix of ``conditions``: HTML text, figures, JSON (``None`` when
    it could not be computed: dsa-metric missing, fewer than two conditions)."""
    twins = [name for name in conditions if name.endswith("random twin")]
    text = (
        "<p>Dynamical Similarity Analysis (Ostrow et al. 2023; <code>tl_dynamics.similarity"
        "</code>): each condition's trajectories, resampled to normalised depth and reduced "
        "to its own principal axes, are fitted with a linear operator; the distance is the "
        "angle between two operators up to a change of basis (radians, 0: the same flow). "
        "Controls: each model on shuffled text (same weights, no word order) and its "
        "random-weight twin (same architecture)."
        + ("" if twins else " No report saved a random twin (<code>tl-dynamics report "
           "--random-twin</code>).")
        + "</p>"
    )
    if len(conditions) < 2:
        return text + "<p>Fewer than two conditions: nothing to compare.</p>", [], None
    try:
        result = dynamical_similarity(
            conditions, iters=DSA_ITERATIONS, seed=seed, n_splits=DSA_SPLITS, n_resamples=DSA_RESAMPLES
        )
    except ImportError as error:
        return text + f"<p>Not computed: {html.escape(str(error))}.</p>", [], None
    record = {
        "names": list(result.names),
        "distance": result.distance.tolist(),
        "score_method": result.score_method,
        "n_points": result.n_points,
        "n_components": result.n_components,
        "iters": result.iters,
        "samples_per_condition": DSA_SAMPLES,
        "seed": result.seed,
        "noise_floor": result.noise_floor.tolist(),
        "n_splits": result.n_splits,
        "distance_ci": result.distance_ci.tolist(),
        "n_resamples": result.n_resamples,
    }
    return text + _floor_text(result), [dsa_matrix(result)], record


def _floor_text(result: DynamicalSimilarity) -> str:
    """HTML: each condition's noise floor and the pairs whose interval clears both floors."""
    floors = ", ".join(
        f"{html.escape(name)} {floor:.3f}" for name, floor in zip(result.names, result.noise_floor.tolist())
    )
    pairs = result.to_frame()
    above = pairs[pairs.above_floors]
    listed = "; ".join(
        f"{html.escape(row.a)} vs {html.escape(row.b)}: {row.distance:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
        for row in above.itertuples()
    )
    return (
        f"<p>Noise floors (distance between disjoint halves of one condition's texts, mean of "
        f"{result.n_splits} splits, radians): {floors}. A distance means a difference only when "
        f"its {result.n_resamples}-resample bootstrap interval lies above both conditions' floors: "
        f"{len(above)} of {len(pairs)} pairs do{': ' + listed if listed else ''}.</p>"
    )


def run_compare(
    folders: Sequence[str | Path], *, out: str | Path, overwrite: bool = False, dsa: bool = True
) -> Path:
    """Write ``compare.html`` and ``compare.json`` overlaying the reports in ``folders``.

    Each report is labelled with its model's name, and with its folder too when two
    reports share a model (:func:`report_labels`).

    Args:
        folders: Report folders written by :func:`tl_dynamics.report.run_report`.
        out: The folder to write; with ``overwrite``, an existing one is replaced only if
            tl-dynamics wrote it and it holds none of ``folders``.
        dsa: Add the dynamical-similarity matrix of the reports' saved trajectories and
            their controls (:func:`dsa_section`; needs dsa-metric).

    Returns:
        The output folder.

    Raises:
        FileNotFoundError, ValueError: a folder is no readable report or is given twice;
            ``out`` cannot be written (see :func:`tl_dynamics._output.check_output`).
    """
    if isinstance(folders, (str, Path)) or len(folders) < 1:
        raise DynamicsInputError(f"folders must be a list of report folders; got {folders!r}")
    check_output(out, overwrite, inputs=folders, kind=COMPARE_KIND)
    records = [read_report(folder) for folder in folders]
    labels = report_labels(folders, records)
    reports = {label: depth_curves(record) for label, record in zip(labels, records, strict=True)}
    figures = depth_curve_figures(reports, [(key, title) for key, title, _ in CURVES])
    similarity_text, similarity_figures, similarity = (
        dsa_section(dsa_conditions(folders, labels)) if dsa else ("", [], None)
    )
    with atomic_folder(out, overwrite, kind=COMPARE_KIND, inputs=folders) as staging:
        intro = "<p class='sub'>Solid: original texts; dotted: shuffled-token control.</p>"
        sections = [("Findings", findings_table(labels, records), []), ("Curves", "", figures)]
        if dsa:
            sections.append(("Dynamical similarity", similarity_text, similarity_figures))
        write_page(staging / "compare.html", "Transformer dynamics: model comparison", intro, sections)
        write_record(
            staging / "compare.json",
            {
                "reports": reports,
                "findings": {
                    label: record.get("findings", {})
                    for label, record in zip(labels, records, strict=True)
                },
                "dynamical_similarity": similarity,
            },
        )
    return Path(out)

