"""The main job: every measure of the paper on one model, as an HTML report plus data.

:func:`run_report` runs the paper's two conditions on the same texts, the original
token order and the token-shuffled control (section 2.1), computes every measure of
Figures 1-4, tests the paper's findings on the numbers (:mod:`tl_dynamics.findings`) and
writes a folder:

* ``report.html``: self-contained (plotly's JavaScript embedded once), opens offline;
* ``metrics.json``: every number behind every figure, with a schema version;
* ``dynamics.safetensors`` / ``dynamics.json`` and ``dynamics_shuffled.*``: the
  trajectories, loadable with :meth:`tl_dynamics.DynamicsCache.load`.

The folder is written atomically: everything goes to a temporary sibling folder that is
renamed into place at the end, so an interrupted run leaves no half-written report, and
an existing folder is replaced only with ``overwrite=True`` and only when tl-dynamics
wrote it (:mod:`tl_dynamics._output`).

Example::

    import tl_dynamics as tld
    from tl_dynamics.report import run_report
    model = tld.models.load_model()
    run_report(model, tld.data.python_docs()[:200], out="smollm2-report", corpus="python-docs")
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from tqdm.auto import tqdm

from tl_dynamics import beyond as beyond_module
from tl_dynamics import findings as findings_module
from tl_dynamics import metrics, plot
from tl_dynamics._html import effect_html, render_html
from tl_dynamics._output import (
    SCHEMA_VERSION,
    TWIN_FILE,
    atomic_folder,
    check_output,
    tensor_json,
    write_json,
)
from tl_dynamics._version import __version__
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.collect import collect
from tl_dynamics.embed import (
    CAE_EPOCHS,
    DEFAULT_PCA_COMPONENTS,
    CompressingAutoencoder,
    PCATrajectories,
    pca_trajectories,
)
from tl_dynamics.hooks import TLModel
from tl_dynamics.interventions import DEFAULT_GRID, TeleportSweep, teleport_sweep
from tl_dynamics.similarity import check_twin_model, random_weight_twin

__all__ = [
    "CAE_MAX_VECTORS",
    "ROTATION_SHUFFLES",
    "MI_METHOD",
    "REPORT_FILES",
    "StageTimer",
    "condition_measures",
    "measures_json",
    "condition_figures",
    "TrajectoryMeasures",
    "trajectory_measures",
    "trajectory_json",
    "trajectory_figures",
    "TRAJECTORY_TEXT",
    "run_report",
]

CAE_MAX_VECTORS = 12_288  # training vectors per condition: MiniLM's 823 x 12 sublayers x 85 %
# is ~8.4k; at 60 sublayers (SmolLM2) all ~42k would make the autoencoder the report's
# slowest stage by far, for little gain on a 2-D bottleneck
ROTATION_SHUFFLES = 1000  # the paper's layer-order permutations per unit (section 6)
MI_METHOD = "binned"  # within 0.04 % (mean) of the exact Gaussian KDE, 113-402x the paper's scipy loop (benchmarks, run 7)

# Texts the random-weight twin is collected on (run_report(random_twin=True)): the
# dynamical similarity of `tl-dynamics compare` uses at most this many samples per
# condition (compare.DSA_SAMPLES), far fewer than the findings' bootstrap needs.
TWIN_TEXTS = 256

REPORT_FILES = ("report.html", "metrics.json", "dynamics.safetensors", "dynamics.json")


@dataclass
class StageTimer:
    """Wall time of each stage of a report, in seconds (in the order the stages ran)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, progress: bool):
        """Time the block; print the stage name when progress is shown."""
        if progress:
            tqdm.write(f"[tl-dynamics] {name} ...")
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def condition_measures(
    dyn: DynamicsCache, seed: int, progress: bool, n_shuffles: int = ROTATION_SHUFFLES
) -> dict[str, Any]:
    """Every Figure 1-2 measure of one condition, as tensors and result objects.

    Returns a dict keyed by measure name (an internal record that is turned into JSON
    and figures; users call the metric functions directly).
    """
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("mean_activation", lambda: metrics.mean_activation(dyn.resid)),
        ("unit_order", lambda: metrics.unit_order(dyn.resid)),
        ("norms", lambda: metrics.norms(dyn.resid)),
        ("cosine_similarity", lambda: metrics.cosine_similarity(dyn.resid)),
        ("velocity", lambda: metrics.velocity(dyn.resid)),
        ("unit_correlation", lambda: metrics.unit_correlation(dyn.resid)),
        ("correlation_distribution", lambda: metrics.correlation_distribution(dyn.resid)),
        ("mutual_information", lambda: metrics.mutual_information(dyn.resid, method=MI_METHOD)),
        ("rotations", lambda: metrics.rotations(dyn.resid)),
        ("rotation_null", lambda: metrics.rotation_null(dyn.resid, n_shuffles, seed=seed)),
    ]
    measures = {}
    for name, compute in tqdm(steps, desc="measures", unit="measure", disable=not progress):
        measures[name] = compute()
    return measures


def measures_json(dyn: DynamicsCache, measures: dict[str, Any]) -> dict[str, Any]:
    """The numbers behind every Figure 1-2 panel of one condition, JSON-ready."""
    distribution = measures["correlation_distribution"]
    null = measures["rotation_null"]
    return {
        "labels": list(dyn.labels),
        "transition_kinds": dyn.transition_kinds,
        "n_samples": dyn.n_samples,
        "fig1b_mean_activation": tensor_json(measures["mean_activation"]),
        "fig1b_unit_order": measures["unit_order"].tolist(),
        "norms_mean": tensor_json(measures["norms"].mean(0)),
        "fig1c_unit_correlation": tensor_json(measures["unit_correlation"]),
        "fig1d_correlation_distribution": {
            "bin_edges": tensor_json(distribution.bin_edges),
            "fraction": tensor_json(distribution.fraction),
            "below": tensor_json(distribution.below),
            "above": tensor_json(distribution.above),
            "undefined": tensor_json(distribution.undefined),
        },
        "fig1e_cosine_similarity_mean": tensor_json(measures["cosine_similarity"].mean(0)),
        "fig1e_cosine_similarity_sd": tensor_json(measures["cosine_similarity"].std(0)),
        "fig1f_velocity_mean": tensor_json(measures["velocity"].mean(0)),
        "fig1f_velocity_sd": tensor_json(measures["velocity"].std(0)),
        "fig1g_mutual_information_nats": tensor_json(measures["mutual_information"]),
        "mutual_information_method": MI_METHOD,
        "fig1h_mutual_information_mean_nats": tensor_json(measures["mutual_information"].nanmean(-1)),
        "fig1h_unit_correlation_mean": tensor_json(measures["unit_correlation"].nanmean(-1)),
        "fig2b_rotations_per_unit": tensor_json(measures["rotations"].mean(0)),
        "fig2c_rotation_null": {
            "observed": tensor_json(null.observed),
            "null_mean": tensor_json(null.null.mean(0)),
            "null_sd": tensor_json(null.null.std(0)),
            "p_value": tensor_json(null.p_value),
            "n_shuffles": null.n_shuffles,
            "seed": null.seed,
            "signed": null.signed,
            "trajectory": null.trajectory,
            "gradient": null.gradient,
        },
    }


def condition_figures(dyn: DynamicsCache, measures: dict[str, Any]) -> list[go.Figure]:
    """The Figure 1-2 panels of one condition."""
    return [
        plot.mean_activation(dyn),
        plot.unit_correlation(dyn),
        plot.correlation_distribution(dyn),
        plot.cosine_similarity(dyn),
        plot.velocity(dyn),
        plot.mutual_information(dyn, values=measures["mutual_information"]),
        plot.mutual_information_depth(dyn, values=measures["mutual_information"]),
        plot.phase_portrait(dyn),
        plot.rotations(dyn, values=measures["rotations"]),
        plot.rotation_null(dyn, null=measures["rotation_null"]),
    ]


@dataclass(frozen=True)
class TrajectoryMeasures:
    """The Figure 3-4 results of one condition.

    Attributes:
        pca: PCA of all residual-stream vectors (Fig 4A-C).
        autoencoder: The fitted compressing autoencoder; its ``held_out_`` holds the
            held-out Fig 3B-D numbers.
        sweep: Teleports of a PCA grid at the default layers (Fig 4D).
    """

    pca: PCATrajectories
    autoencoder: CompressingAutoencoder
    sweep: TeleportSweep


def trajectory_measures(
    model: TLModel,
    dyn: DynamicsCache,
    seed: int,
    progress: bool,
    cae_epochs: int = CAE_EPOCHS,
    grid: int = DEFAULT_GRID,
) -> TrajectoryMeasures:
    """PCA, compressing autoencoder and teleport sweep of ``dyn``'s model (Figures 3-4)."""
    n_vectors = dyn.resid.shape[0] * dyn.resid.shape[1]
    components = min(DEFAULT_PCA_COMPONENTS, n_vectors, dyn.resid.shape[-1])
    pca = pca_trajectories(dyn, n_components=components, seed=seed)
    autoencoder = CompressingAutoencoder(
        dyn.resid.shape[-1], epochs=cae_epochs, max_vectors=CAE_MAX_VECTORS,
        random_state=seed, progress=progress,
    ).fit(dyn)
    sweep = teleport_sweep(model, pca, n=grid, progress=progress)
    return TrajectoryMeasures(pca, autoencoder, sweep)


def trajectory_json(measures: TrajectoryMeasures) -> dict[str, Any]:
    """The numbers behind every Figure 3-4 panel, JSON-ready."""
    pca, held_out = measures.pca, measures.autoencoder.held_out_
    return {
        "fig3b_cae_mean_trajectory": tensor_json(held_out.mean_trajectory),
        "fig3c_cae_step_distance_mean": tensor_json(held_out.step_distance.mean(0)),
        "fig3d_cae_explained_variance": tensor_json(held_out.explained_variance),
        "fig3d_cae_explained_variance_pooled": tensor_json(held_out.explained_variance_pooled),
        "cae_loss_history": tensor_json(measures.autoencoder.history_.to_frame().to_dict("list")),
        "fig4a_pca_trajectories_pc12": tensor_json(pca.trajectories[..., :2]),
        "fig4a_pca_mean_trajectory": tensor_json(pca.mean_trajectory[:, :2]),
        "fig4b_pca_cumulative_variance": tensor_json(pca.cumulative_variance),
        "fig4c_pca_variance_per_sublayer": tensor_json(pca.variance_per_sublayer),
        "fig4c_pca_variance_per_sublayer_pooled": tensor_json(pca.variance_per_sublayer_pooled),
        "fig4d_teleport": {
            "summary": tensor_json(measures.sweep.to_frame().to_dict("list")),
            "plane_trajectories": {
                str(result.layer): tensor_json(pca.project(result.trajectories)[..., :2])
                for result in measures.sweep.results
            },
            "plane_control": {
                str(result.layer): tensor_json(pca.project(result.control)[..., :2])
                for result in measures.sweep.results
            },
        },
    }


def trajectory_figures(measures: TrajectoryMeasures) -> list[go.Figure]:
    """The Figure 3-4 panels."""
    held_out = measures.autoencoder.held_out_
    return [
        plot.cae_trajectory(held_out),
        plot.cae_step_distance(held_out),
        plot.cae_explained_variance(held_out),
        plot.pca_plane(measures.pca),
        plot.pca_cumulative_variance(measures.pca),
        plot.pca_variance_per_sublayer(measures.pca),
        plot.teleport_quiver(measures.sweep, pca=measures.pca),
        plot.teleport_recovery(measures.sweep),
    ]


def _test_cells(finding: findings_module.Finding) -> str:
    """Verdict, effect with its interval, and Holm-adjusted p of one finding, as cells."""
    return (
        f"<td class='{finding.verdict}'>{finding.verdict}</td><td>{effect_html(finding)}</td>"
        f"<td>{html.escape(finding.observed)}</td>"
    )


def _findings_table(original: list[findings_module.Finding], shuffled: list[findings_module.Finding]) -> str:
    """The findings of both conditions: verdict, effect [95 % CI], Holm p, in words."""
    rows = []
    for mine, control in zip(original, shuffled):
        rows.append(
            "<tr>"
            f"<td>{html.escape(mine.claim)}<br><small>effect: {html.escape(mine.effect_unit)}; "
            f"null: {html.escape(mine.null)}</small></td>"
            f"{_test_cells(mine)}{_test_cells(control)}"
            "</tr>"
        )
    alpha = original[0].alpha if original else findings_module.ALPHA
    return (
        f"<p>Each finding is a test: effect [95 % bootstrap interval over texts], p-value "
        f"after Holm's correction across the findings of the condition; <i>yes</i> needs "
        f"p &le; {alpha:g} in the paper's direction and the finding's minimum effect "
        "(see <code>tl_dynamics.findings</code>).</p>"
        "<table class='findings'><thead><tr><th>the paper's finding</th>"
        "<th>this model</th><th>effect [CI], p</th><th>observed</th>"
        "<th>shuffled control</th><th>effect [CI], p</th><th>observed (control)</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


TRAJECTORY_TEXT = (
    "<p>PCA is fitted on every residual-stream vector of every sample and sublayer; the "
    "compressing autoencoder's numbers are on held-out samples. Teleports write points of "
    "a square grid in the PC1–PC2 plane into the residual stream "
    "of the default prompt at the input of the attention sub-block of the chosen layers, "
    "then follow the runs; <i>contraction</i> is the final distance to the unperturbed run "
    "divided by the displacement (below 1: pulled back). In a post-LayerNorm model such "
    "as BERT the normalisation alone pulls distant points in.</p>"
)


def _finding(found: list[findings_module.Finding], key: str) -> findings_module.Finding:
    """The finding with ``key``."""
    return next(f for f in found if f.key == key)


def _provenance_note(provenance: dict[str, Any] | None) -> str:
    """A line saying where a preset's weights came from (empty for other models)."""
    if not provenance:
        return ""
    quantised = not str(provenance["quantisation"]).startswith("none")
    caveat = (
        " These are the real trained weights with 4-bit quantisation noise, not the "
        "original bf16 checkpoint."
        if quantised
        else ""
    )
    return (
        f"<p class='sub'>Weights: preset {html.escape(str(provenance['preset']))}, "
        f"{html.escape(str(provenance['source_file']))} from the "
        f"{html.escape(str(provenance['source_package']))} package "
        f"({html.escape(str(provenance['quantisation']))}).{caveat}</p>"
    )


BEYOND_TEXT = (
    "<p>Tests the paper does not run (see <code>tl_dynamics.beyond</code>), on the original "
    "texts, decided together (Holm): the per-unit rotation test of Fig 2 again after a "
    "seeded Haar-random rotation of the residual stream's basis, which has no privileged "
    "axes; and jPCA (Churchland et al. 2012), whether the whole population's flow over "
    "depth is a rotation, against layer-shuffled orders.</p>"
)


def beyond_section_html(measures: beyond_module.BeyondMeasures) -> str:
    """The "Beyond the paper" section's text: the basis verdicts, the tests, the contraction."""
    units, (random_basis, rotational) = measures.units_finding, measures.findings
    survives = "survives" if measures.basis_survives else "does not survive"
    rows = "".join(
        f"<tr><td>{html.escape(f.claim)}<br><small>effect: {html.escape(f.effect_unit)}; null: "
        f"{html.escape(f.null)}</small></td>{_test_cells(f)}</tr>"
        for f in (units, random_basis, rotational)
    )
    table = (
        f"<p><b>The per-unit rotation result {survives} a change of basis</b>: "
        f"<i>{units.verdict}</i> in the model's own axes (the paper's test), "
        f"<i>{random_basis.verdict}</i> in a random basis.</p>"
        "<table class='findings'><thead><tr><th>test</th><th>verdict</th>"
        "<th>effect [CI], p</th><th>observed</th></tr></thead><tbody>" + rows + "</tbody></table>"
    )
    return BEYOND_TEXT + table + _contraction_html(measures)


def _contraction_html(measures: beyond_module.BeyondMeasures) -> str:
    """Per teleported layer: the teleports' contraction and, when measured, the Jacobian's."""
    table = beyond_module.contraction_table(measures)
    with_jacobian = measures.jacobian is not None
    columns = [("layer", "layer", "{}"), ("steps", "sublayers followed", "{}"),
               ("teleport_contraction", "teleports: contraction", "{:.3g}"),
               ("teleport_relative_contraction", "teleports: relative to the norm", "{:.3g}")]
    if with_jacobian:
        columns += [("jacobian_top_singular_value", "Jacobian: top &sigma;", "{:.3g}"),
                    ("jacobian_top_normalised_singular_value",
                     "Jacobian: top &sigma; &times; |x<sub>start</sub>| / |x<sub>stop</sub>|", "{:.3g}")]
    head = "".join(f"<th>{title}</th>" for _, title, _ in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt.format(row[key])}</td>" for key, _, fmt in columns) + "</tr>"
        for row in table
    )
    note = (
        "The Jacobian of the map from each teleported layer's input to the last sublayer the "
        "teleport is followed to (one token, the prompt's last), top singular value raw and "
        "relative to the state's growth; below 1 every direction contracts."
        if with_jacobian
        else "The Jacobian contraction was not computed: it is opt-in "
        "(<code>tl-dynamics report --jacobian</code>, <code>run_report(..., jacobian=True)"
        "</code>), since it costs tens of seconds per layer on SmolLM2."
    )
    return (
        "<p><b>Contraction per layer.</b> Teleports: median final distance to the unperturbed "
        f"run over the displacement (below 1: pulled back). {note}</p>"
        f"<table class='findings'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def collect_twin(
    model: Any, texts: Sequence[str], corpus: str | None, batch_size: int, seed: int, progress: bool
) -> DynamicsCache:
    """Trajectories of the first :data:`TWIN_TEXTS` texts through a random-weight twin of
    ``model`` (same architecture, freshly initialised with ``seed``)."""
    twin = random_weight_twin(model, seed=seed)
    return collect(twin, texts[:TWIN_TEXTS], batch_size=batch_size, corpus=corpus, progress=progress)


def run_report(
    model: TLModel,
    texts: Sequence[str],
    *,
    out: str | Path,
    corpus: str | None = None,
    batch_size: int = 16,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    n_shuffles: int = ROTATION_SHUFFLES,
    cae_epochs: int = CAE_EPOCHS,
    grid: int = DEFAULT_GRID,
    jacobian: bool = False,
    random_twin: bool = False,
) -> dict[str, float]:
    """Run every measure on ``texts`` in both conditions and write the report folder.

    Args:
        model: A TransformerLens model in eval mode.
        texts: The texts (the same ones in both conditions).
        out: The report folder to write.
        corpus: Name of the texts' source, for the record.
        batch_size: Texts per forward pass.
        seed: Seed of the shuffled control, the rotation null, the PCA and autoencoder.
        overwrite: Replace an existing ``out`` that tl-dynamics wrote (see
            :func:`tl_dynamics._output.check_output`).
        progress: Show progress bars.
        n_shuffles: Layer-order shuffles of the rotation null (the paper: 1000).
        cae_epochs: Training epochs of the compressing autoencoder.
        grid: Teleport grid side (``grid x grid`` points; the paper: about 10).
        jacobian: Also measure the Jacobian spectra of the "Beyond the paper" section
            (:mod:`tl_dynamics.beyond`; tens of seconds per teleported layer).
        random_twin: Also collect the first :data:`TWIN_TEXTS` texts through a
            random-weight twin of ``model`` (:func:`tl_dynamics.random_weight_twin`) into
            ``dynamics_twin.safetensors``, the control of ``tl-dynamics compare``'s
            dynamical similarity (one more forward pass over those texts).

    Returns:
        Wall time of each stage in seconds.
    """
    out = Path(out)
    check_output(out, overwrite)
    if random_twin:
        check_twin_model(model)
    timer = StageTimer()
    with timer.stage("collect", progress):
        original = collect(model, texts, batch_size=batch_size, corpus=corpus, progress=progress)
        shuffled = collect(
            model, texts, batch_size=batch_size, corpus=corpus, shuffle=True, seed=seed,
            progress=progress,
        )
    with timer.stage("measures", progress):
        measures = {
            "original": condition_measures(original, seed, progress, n_shuffles),
            "shuffled": condition_measures(shuffled, seed, progress, n_shuffles),
        }
    with timer.stage("trajectories and teleports", progress):
        trajectories = {
            name: trajectory_measures(model, dyn, seed, progress, cae_epochs, grid)
            for name, dyn in (("original", original), ("shuffled", shuffled))
        }
    with timer.stage("findings", progress):
        found = {
            name: findings_module.decide(
                findings_module.dynamics_findings(
                    dyn, measures[name]["mutual_information"], measures[name]["rotation_null"],
                    unit_correlation=measures[name]["unit_correlation"], seed=seed,
                )
                + findings_module.trajectory_findings(
                    trajectories[name].pca, trajectories[name].sweep, dyn, seed=seed
                )
            )
            for name, dyn in (("original", original), ("shuffled", shuffled))
        }
    with timer.stage("beyond the paper", progress):
        beyond = beyond_module.beyond_measures(
            model, original, _finding(found["original"], "rotations_exceed_null"),
            trajectories["original"].sweep, seed=seed, jacobian=jacobian, progress=progress,
        )
    twin = None
    if random_twin:
        with timer.stage("random-weight twin", progress):
            twin = collect_twin(model, texts, corpus, batch_size, seed, progress)
    with timer.stage("figures", progress):
        sections = [
            ("Findings", _findings_table(found["original"], found["shuffled"]), []),
            ("Figures 1-2: original texts", "", condition_figures(original, measures["original"])),
            ("Figures 1-2: shuffled control", "", condition_figures(shuffled, measures["shuffled"])),
            ("Figures 3-4: original texts", TRAJECTORY_TEXT, trajectory_figures(trajectories["original"])),
            ("Figures 3-4: shuffled control", "", trajectory_figures(trajectories["shuffled"])),
            ("Beyond the paper", beyond_section_html(beyond),
             beyond_module.beyond_figures(beyond, measures["original"]["rotation_null"])),
        ]
    with timer.stage("write", progress), atomic_folder(out, overwrite) as staging:
        meta = original.metadata
        intro = (
            f"<p class='sub'>{html.escape(meta.model_name)} · {meta.n_layers} layers · "
            f"d_model {meta.d_model} · {len(texts)} texts from {html.escape(str(corpus))} · "
            f"last token · seed {seed} · tl-dynamics {__version__}</p>"
            + _provenance_note(meta.provenance)
        )
        page = render_html("Transformer dynamics report", intro, sections)
        (staging / "report.html").write_text(page, encoding="utf-8")
        write_json(
            staging / "metrics.json",
            {
                "schema_version": SCHEMA_VERSION,
                "tl_dynamics_version": __version__,
                "model": meta.to_json() | {"texts": None},
                "n_texts": len(texts),
                "corpus": corpus,
                "seed": seed,
                "conditions": {
                    name: measures_json(dyn, measures[name]) | trajectory_json(trajectories[name])
                    for name, dyn in (("original", original), ("shuffled", shuffled))
                },
                "findings": {name: [f.to_json() for f in fs] for name, fs in found.items()},
                "beyond": beyond_module.beyond_json(beyond),
                "stage_seconds": timer.seconds,
            },
        )
        original.save(staging / "dynamics.safetensors")
        shuffled.save(staging / "dynamics_shuffled.safetensors")
        if twin is not None:
            twin.save(staging / TWIN_FILE)
    return timer.seconds
