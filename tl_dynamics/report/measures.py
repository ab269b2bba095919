"""The report's measures per condition: every number of Figures 1-4, and its JSON record.

A condition is one :class:`~tl_dynamics.DynamicsCache` (the original texts or the
token-shuffled control). :func:`condition_measures` computes the Figure 1-2 measures of
:mod:`tl_dynamics.metrics` on it into a :class:`ConditionMeasures`;
:func:`trajectory_measures` fits the Figure 3-4 embeddings (PCA, compressing
autoencoder) and teleports a PCA grid through the model into a
:class:`TrajectoryMeasures`. :func:`measures_json` and :func:`trajectory_json` turn each
into the numbers ``metrics.json`` keeps, keyed by the panel they are drawn in. A new
measure goes here: a field, a line in the function that computes it, a key in its JSON.

Example::

    import tl_dynamics as tld
    from tl_dynamics.report.measures import condition_measures, measures_json

    model = tld.models.load_model("minilm")
    dyn = tld.collect(model, tld.data.python_docs()[:64], progress=False)
    measures = condition_measures(dyn, seed=0, progress=False, n_shuffles=50)
    measures_json(dyn, measures)["fig1f_velocity_mean"][:3]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tl_dynamics import metrics
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.embed import (
    CAE_EPOCHS,
    DEFAULT_PCA_COMPONENTS,
    CompressingAutoencoder,
    PCATrajectories,
    pca_trajectories,
)
from tl_dynamics.hooks import TLModel
from tl_dynamics.interventions import (
    DEFAULT_GRID,
    DEFAULT_PROMPTS,
    PROMPT_GRID,
    TeleportSweep,
    teleport_sweep,
)
from tl_dynamics.report.record import tensor_json

__all__ = [
    "CAE_MAX_VECTORS",
    "ROTATION_SHUFFLES",
    "MI_METHOD",
    "ConditionMeasures",
    "condition_measures",
    "measures_json",
    "TrajectoryMeasures",
    "trajectory_fits",
    "teleport_sweeps",
    "trajectory_measures",
    "trajectory_json",
]

CAE_MAX_VECTORS = 12_288  # training vectors per condition: MiniLM's 823 x 12 sublayers x 85 %
# is ~8.4k; at 60 sublayers (SmolLM2) all ~42k would make the autoencoder the report's
# slowest stage by far, for little gain on a 2-D bottleneck
ROTATION_SHUFFLES = 1000  # the paper's layer-order permutations per unit (section 6)
MI_METHOD = "binned"  # within 0.04 % (mean) of the exact Gaussian KDE, 113-402x the paper's scipy loop (benchmarks, run 7)


@dataclass(frozen=True)
class ConditionMeasures:
    """The Figure 1-2 measures of one condition (:mod:`tl_dynamics.metrics`, same names).

    Attributes:
        mean_activation: ``[sublayer, d_model]`` mean |activation| (Fig 1B).
        unit_order: ``[d_model]`` unit order of the Fig 1B heatmap.
        norms: ``[sample, sublayer]`` L2 norms of the states.
        cosine_similarity: ``[sample, transition]`` cosine of successive sublayers (Fig 1E).
        velocity: ``[sample, transition]`` distance between successive sublayers (Fig 1F).
        unit_correlation: ``[transition, d_model]`` per-unit Pearson r (Fig 1C, 1H).
        correlation_distribution: The histogram of those r (Fig 1D).
        mutual_information: ``[transition, d_model]`` per-unit MI in nats (Fig 1G-H).
        rotations: ``[sample, d_model]`` phase-space turns per unit (Fig 2B).
        rotation_null: The layer-shuffle null of the rotations (Fig 2C).
    """

    mean_activation: Float[Tensor, "sublayer d_model"]
    unit_order: Tensor
    norms: Float[Tensor, "sample sublayer"]
    cosine_similarity: Float[Tensor, "sample transition"]
    velocity: Float[Tensor, "sample transition"]
    unit_correlation: Float[Tensor, "transition d_model"]
    correlation_distribution: metrics.CorrelationDistribution
    mutual_information: Float[Tensor, "transition d_model"]
    rotations: Float[Tensor, "sample d_model"]
    rotation_null: metrics.RotationNull


def condition_measures(
    dyn: DynamicsCache, seed: int, progress: bool, n_shuffles: int = ROTATION_SHUFFLES
) -> ConditionMeasures:
    """Every Figure 1-2 measure of one condition (``seed`` seeds the rotation null)."""
    steps: dict[str, Callable[[], Any]] = {
        "mean_activation": lambda: metrics.mean_activation(dyn.resid),
        "unit_order": lambda: metrics.unit_order(dyn.resid),
        "norms": lambda: metrics.norms(dyn.resid),
        "cosine_similarity": lambda: metrics.cosine_similarity(dyn.resid),
        "velocity": lambda: metrics.velocity(dyn.resid),
        "unit_correlation": lambda: metrics.unit_correlation(dyn.resid),
        "correlation_distribution": lambda: metrics.correlation_distribution(dyn.resid),
        "mutual_information": lambda: metrics.mutual_information(dyn.resid, method=MI_METHOD),
        "rotations": lambda: metrics.rotations(dyn.resid),
        "rotation_null": lambda: metrics.rotation_null(dyn.resid, n_shuffles, seed=seed),
    }
    values = {
        name: compute()
        for name, compute in tqdm(steps.items(), desc="measures", unit="measure", disable=not progress)
    }
    return ConditionMeasures(**values)


def measures_json(dyn: DynamicsCache, measures: ConditionMeasures) -> dict[str, Any]:
    """The numbers behind every Figure 1-2 panel of one condition, JSON-ready."""
    distribution = measures.correlation_distribution
    null = measures.rotation_null
    return {
        "labels": list(dyn.labels),
        "transition_kinds": dyn.transition_kinds,
        "n_samples": dyn.n_samples,
        "fig1b_mean_activation": tensor_json(measures.mean_activation),
        "fig1b_unit_order": measures.unit_order.tolist(),
        "norms_mean": tensor_json(measures.norms.mean(0)),
        "fig1c_unit_correlation": tensor_json(measures.unit_correlation),
        "fig1d_correlation_distribution": {
            "bin_edges": tensor_json(distribution.bin_edges),
            "fraction": tensor_json(distribution.fraction),
            "below": tensor_json(distribution.below),
            "above": tensor_json(distribution.above),
            "undefined": tensor_json(distribution.undefined),
        },
        "fig1e_cosine_similarity_mean": tensor_json(measures.cosine_similarity.mean(0)),
        "fig1e_cosine_similarity_sd": tensor_json(measures.cosine_similarity.std(0)),
        "fig1f_velocity_mean": tensor_json(measures.velocity.mean(0)),
        "fig1f_velocity_sd": tensor_json(measures.velocity.std(0)),
        "fig1g_mutual_information_nats": tensor_json(measures.mutual_information),
        "mutual_information_method": MI_METHOD,
        "fig1h_mutual_information_mean_nats": tensor_json(measures.mutual_information.nanmean(-1)),
        "fig1h_unit_correlation_mean": tensor_json(measures.unit_correlation.nanmean(-1)),
        "fig2b_rotations_per_unit": tensor_json(measures.rotations.mean(0)),
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


@dataclass(frozen=True)
class TrajectoryMeasures:
    """The Figure 3-4 results of one condition.

    Attributes:
        pca: PCA of all residual-stream vectors (Fig 4A-C).
        autoencoder: The fitted compressing autoencoder; its ``held_out_`` holds the
            held-out Fig 3B-D numbers.
        sweep: Teleports of the paper's ``grid x grid`` PCA grid into the paper's prompt
            at the default layers (Fig 4D).
        prompt_sweeps: One sweep per prompt of
            :data:`~tl_dynamics.interventions.DEFAULT_PROMPTS` (the same layers, a
            :data:`~tl_dynamics.interventions.PROMPT_GRID` grid each): the prompts are
            the independent units of the attractor test.
    """

    pca: PCATrajectories
    autoencoder: CompressingAutoencoder
    sweep: TeleportSweep
    prompt_sweeps: tuple[TeleportSweep, ...]


def trajectory_fits(
    dyn: DynamicsCache, seed: int, progress: bool, cae_epochs: int = CAE_EPOCHS
) -> tuple[PCATrajectories, CompressingAutoencoder]:
    """The PCA (Fig 4A-C) and the compressing autoencoder (Fig 3) of ``dyn``: no forward pass."""
    n_vectors = dyn.resid.shape[0] * dyn.resid.shape[1]
    components = min(DEFAULT_PCA_COMPONENTS, n_vectors, dyn.resid.shape[-1])
    pca = pca_trajectories(dyn, n_components=components, seed=seed)
    autoencoder = CompressingAutoencoder(
        epochs=cae_epochs, max_vectors=CAE_MAX_VECTORS, random_state=seed, progress=progress,
    ).fit(dyn)
    return pca, autoencoder


def teleport_sweeps(
    model: TLModel, pca: PCATrajectories, progress: bool, grid: int = DEFAULT_GRID
) -> tuple[TeleportSweep, tuple[TeleportSweep, ...]]:
    """The paper's ``grid x grid`` teleports into its prompt (Fig 4D), and a
    :data:`~tl_dynamics.interventions.PROMPT_GRID` grid into each of the
    :data:`~tl_dynamics.interventions.DEFAULT_PROMPTS` at the same layers."""
    sweep = teleport_sweep(model, pca, n=grid, progress=progress)
    prompt_sweeps = tuple(
        teleport_sweep(model, pca, layers=sweep.layers, n=PROMPT_GRID, prompt=prompt, progress=False)
        for prompt in tqdm(DEFAULT_PROMPTS, desc="teleport prompts", unit="prompt", disable=not progress)
    )
    return sweep, prompt_sweeps


def trajectory_measures(
    model: TLModel,
    dyn: DynamicsCache,
    seed: int,
    progress: bool,
    cae_epochs: int = CAE_EPOCHS,
    grid: int = DEFAULT_GRID,
) -> TrajectoryMeasures:
    """Every Figure 3-4 result of ``dyn`` and its model: :func:`trajectory_fits` then
    :func:`teleport_sweeps`."""
    pca, autoencoder = trajectory_fits(dyn, seed, progress, cae_epochs)
    return TrajectoryMeasures(pca, autoencoder, *teleport_sweeps(model, pca, progress, grid))


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
