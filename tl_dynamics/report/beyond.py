"""Beyond the paper in the report: basis-free rotations and local stability, as tests.

The paper's two dynamical claims rest on measures that depend on choices a reviewer
questions. The report's "Beyond the paper" section asks three questions of
the original texts, each with a null, an effect, a 95 % interval and a p-value as the
paper's findings have them (:mod:`tl_dynamics.findings`):

* **Does the per-unit rotation verdict survive a change of basis?** The residual stream
  has no privileged basis. The paper's Fig 2 test (``rotations_exceed_null``: how much
  the units turn together minus the same under shuffles of the sublayer order shared
  by all units, interval from a bootstrap over texts, permutation p) is run again on
  the same states after a seeded Haar-random rotation of ``d_model``
  (:func:`tl_dynamics.metrics.basis_matrix`). What survives, when both bases give the
  same verdict, is the verdict, whichever it is: a "no" that survives is a failure to
  rotate in any basis, not a rotation.
* **Is the population's flow a rotation?** jPCA (Churchland et al. 2012,
  :func:`tl_dynamics.jpca`): the effect is ``r2_skew`` minus its mean over
  maximum-entropy surrogates that keep every trajectory's smoothness and the
  components' covariance (Elsayed & Cunningham 2017; any smooth ordered flow beats
  layer shuffles, so they are only described), the "yes" test the surrogates'
  permutation p together with the bootstrap over texts (principal axes held fixed,
  :func:`tl_dynamics.jpca.bootstrap_r2_skew`) against :data:`MIN_R2_EXCESS`; the
  skew fit's ``r2`` on held-out texts and the planes' turns over depth are listed.
* **Do the layers that pull teleports back also contract locally?** Opt-in
  (``jacobian=True``; tens of seconds per layer on SmolLM2, because every
  product runs the model from its input): the Jacobian spectrum from each teleported
  layer's input to the last sublayer a teleport is followed to
  (:func:`tl_dynamics.jacobian_sweep` with ``to_end=True``), the whole spectrum at
  :data:`~tl_dynamics.stability.DEFAULT_PROMPTS` (8 prompts, two positions each): the
  top singular value raw, normalised by the state's norm and by its median unit
  (robust to massive units), the number of expanding directions and the log-volume
  change, means over prompts, beside the teleports' contraction on the same span.

The three tests are decided together (Holm's correction within the section).

Example::

    import tl_dynamics as tld
    from tl_dynamics import findings
    from tl_dynamics.report import beyond
    from tl_dynamics.report.measures import trajectory_measures

    model = tld.models.load_model()
    dyn = tld.collect(model, tld.data.python_docs()[:200])
    units = next(f for f in findings.dynamics_findings(dyn) if f.key == "rotations_exceed_null")
    sweep = trajectory_measures(model, dyn, seed=0, progress=False).sweep
    section = beyond.beyond_measures(model, dyn, units, sweep, seed=0)
    [(f.key, f.verdict, f.effect, f.ci, f.p_adjusted) for f in section.findings]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tl_dynamics import metrics
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.hooks import TLModel
from tl_dynamics.interventions import TeleportSweep
from tl_dynamics.jpca import DEFAULT_COMPONENTS as JPCA_COMPONENTS
from tl_dynamics.jpca import DEFAULT_SHUFFLES as JPCA_SHUFFLES
from tl_dynamics.jpca import JPCAResult, bootstrap_r2_skew, jpca
from tl_dynamics.report import findings as findings_module
from tl_dynamics.report.record import tensor_json
from tl_dynamics.stability import DEFAULT_POSITIONS, DEFAULT_PROMPTS, JacobianSweep, jacobian_sweep
from tl_dynamics.report.findings import N_RESAMPLES
from tl_dynamics.stats import Resampler

__all__ = [
    "BASIS_SHUFFLES",
    "MIN_R2_EXCESS",
    "CLAIMS",
    "BeyondMeasures",
    "random_basis_finding",
    "jpca_finding",
    "beyond_measures",
    "contraction_table",
    "beyond_json",
]

# Layer shuffles of the random-basis rotation null: its mean and spread are all the test
# uses, and 200 shuffles estimate both to a few percent; 1000 (the units' null) would
# cost the report about 2 s more at SmolLM2's size.
BASIS_SHUFFLES = 200
# A rotational flow counts when the skew fit explains at least a tenth more of the squared
# steps than in smooth surrogates (r2 is a fraction of ||dZ||^2; Churchland et al. report
# r2_skew of about half the full fit's on motor cortex, far above such a margin).
MIN_R2_EXCESS = 0.1

CLAIMS = {
    "rotations_random_basis": (
        "The per-unit rotation test (Fig 2) run in a Haar-random orthonormal basis of the "
        "residual stream: axes turn together more than under shuffled sublayer orders."
    ),
    "jpca_rotation": (
        "The population's flow over depth is rotational (jPCA, Churchland et al. 2012): a "
        "skew-symmetric fit explains more of the steps than in smooth, non-rotational "
        "surrogate populations."
    ),
}


@dataclass(frozen=True)
class BeyondMeasures:
    """The "Beyond the paper" section of one condition.

    Attributes:
        units_finding: The paper's Fig 2 test in the model's own axes (``rotations_exceed_null``).
        random_null: The layer-shuffle rotation null counted in a Haar-random basis.
        findings: The section's tests, decided together (Holm): the Fig 2 test in the
            random basis (``rotations_random_basis``) and jPCA (``jpca_rotation``).
        jpca: The jPCA fit with its layer-shuffle null.
        teleports: The report's teleport sweep (Fig 4D).
        jacobian: Jacobian spectra from each teleported layer to the last sublayer a
            teleport is followed to; ``None`` unless asked for.
        jpca_controls: The jPCA test on each matched control (``"shuffled"``,
            ``"random_twin"``), decided alone, side by side with the original's: a
            rotation the controls show too belongs to depth or the architecture.
    """

    units_finding: findings_module.Finding
    random_null: metrics.RotationNull
    findings: tuple[findings_module.Finding, ...]
    jpca: JPCAResult
    teleports: TeleportSweep
    jacobian: JacobianSweep | None
    jpca_controls: dict[str, findings_module.Finding] = dataclasses.field(default_factory=dict)

    @property
    def basis_survives(self) -> bool:
        """Whether the per-unit verdict is the same in the model's axes and a random basis."""
        return self.units_finding.verdict == self.findings[0].verdict


def random_basis_finding(
    dyn: DynamicsCache, seed: int, n_shuffles: int = BASIS_SHUFFLES
) -> tuple[findings_module.Finding, metrics.RotationNull]:
    """The Fig 2 test after a seeded Haar-random rotation of ``d_model`` (module docstring).

    Returns the finding (decided alone) and the random-basis null.
    """
    change = metrics.basis_matrix(dyn.resid, "random", seed=seed).to(dyn.resid.dtype)
    rotated = dataclasses.replace(dyn, resid=dyn.resid @ change)
    null = metrics.rotation_null(rotated.resid, n_shuffles, seed=seed)
    resampler = Resampler.of(dyn.text_index, N_RESAMPLES, seed)
    finding = findings_module.rotations_exceed_null(rotated, null, resampler, seed)
    finding = dataclasses.replace(
        finding,
        key="rotations_random_basis",
        claim=CLAIMS["rotations_random_basis"],
        observed=f"in a Haar-random basis (seed {seed}): {finding.observed}",
    )
    return finding, dataclasses.replace(null, basis="random")


def jpca_finding(
    dyn: DynamicsCache, seed: int, n_shuffles: int = JPCA_SHUFFLES
) -> tuple[findings_module.Finding, JPCAResult]:
    """jPCA's rotational fit against its smooth maximum-entropy null, as a test (module
    docstring). Returns the finding (decided alone) and the fit."""
    result = jpca(dyn, k=JPCA_COMPONENTS, n_shuffles=n_shuffles, seed=seed)
    surrogate = result.surrogate_r2_skew.numpy()
    effect = result.r2_skew - float(surrogate.mean())
    weights = Resampler.of(dyn.text_index, N_RESAMPLES, seed).weights
    replicates = bootstrap_r2_skew(result, weights) - float(surrogate.mean())
    turns = ", ".join(f"{t:.2f}" for t in result.rotations.tolist())
    finding = findings_module.tested(
        "jpca_rotation",
        CLAIMS["jpca_rotation"],
        f"r2 of the skew fit {result.r2_skew:.3f} ({result.r2_skew_cv:.3f} on held-out texts; "
        f"free fit {result.r2_full:.3f}) vs {surrogate.mean():.3f} over {len(surrogate)} smooth "
        f"surrogates (p = {result.surrogate_p_value:.2g}) and {result.null_r2_skew.mean():.3f} "
        f"under {n_shuffles} layer shuffles; jPC planes turn {turns} times over depth",
        effect,
        replicates,
        effect_unit="r2_skew minus its mean over smooth surrogates (fraction of ||dZ||^2)",
        null=(
            "the flow is no more rotational than surrogate populations with the same "
            "smoothness over depth and covariance of components (permutation p), or beats "
            f"them by less than {MIN_R2_EXCESS} (bootstrap over texts, axes held fixed)"
        ),
        null_value=0.0,
        min_effect=MIN_R2_EXCESS,
        direction=1,
        numbers={
            "r2_skew": result.r2_skew,
            "r2_full": result.r2_full,
            "r2_skew_cv": result.r2_skew_cv,
            "surrogate_mean": float(surrogate.mean()),
            "surrogate_p": result.surrogate_p_value,
            "shuffle_mean": float(result.null_r2_skew.mean()),
            "shuffle_p": result.p_value,
            "rotations": result.rotations.tolist(),
            "k": JPCA_COMPONENTS,
        },
        null_p_value=result.surrogate_p_value,
    )
    return finding, result


def beyond_measures(
    model: TLModel,
    dyn: DynamicsCache,
    units_finding: findings_module.Finding,
    teleports: TeleportSweep,
    *,
    seed: int = 0,
    jacobian: bool = False,
    progress: bool = True,
    controls: Mapping[str, DynamicsCache] | None = None,
) -> BeyondMeasures:
    """Every measure of the section on ``dyn`` (the original texts) and ``model``.

    Args:
        model: The model (run only with ``jacobian``).
        dyn: Trajectories of the original texts.
        units_finding: The report's ``rotations_exceed_null`` finding on ``dyn``.
        teleports: The report's teleport sweep of ``model``.
        seed: Seeds the random basis, the shuffles and the bootstraps.
        jacobian: Also measure Jacobian spectra at the teleported layers.
        progress: Show the Jacobian sweep's progress bar.
        controls: Matched controls of ``dyn`` by name (the token-shuffled texts, the
            random-weight twin), each given the jPCA test too.
    """
    basis, random_null = random_basis_finding(dyn, seed)
    rotational, fit = jpca_finding(dyn, seed)
    spectra = None
    if jacobian:
        layers = [result.layer for result in teleports.results]
        spectra = jacobian_sweep(model, DEFAULT_PROMPTS, layers=layers, to_end=True,
                                 k=int(model.cfg.d_model), positions=DEFAULT_POSITIONS,
                                 seed=seed, progress=progress)
    jpca_controls = {
        name: findings_module.decide([jpca_finding(control, seed)[0]])[0]
        for name, control in (controls or {}).items()
    }
    return BeyondMeasures(
        jpca_controls=jpca_controls,
        units_finding=units_finding,
        random_null=random_null,
        findings=tuple(findings_module.decide([basis, rotational])),
        jpca=fit,
        teleports=teleports,
        jacobian=spectra,
    )


def contraction_table(measures: BeyondMeasures) -> list[dict[str, Any]]:
    """Per teleported layer: the teleports' contraction (absolute and relative to the
    stream's norm) and, with the Jacobian, its top singular value raw and normalised by
    the state's growth, all also as ``log(.) / steps`` (nats per sublayer step; below 0:
    contracting). JSON-ready rows."""
    rows = measures.teleports.to_frame()
    spectra = {} if measures.jacobian is None else {
        int(row["layer"]): row for row in measures.jacobian.to_frame().to_dict("records")
    }
    table = []
    for row in rows.itertuples():
        steps = max(1, int(row.steps))
        entry: dict[str, Any] = {
            "layer": int(row.layer),
            "steps": steps,
            "teleport_contraction": float(row.contraction),
            "teleport_relative_contraction": float(row.relative_contraction),
            "teleport_log_per_step": _log_per_step(row.contraction, steps),
            "teleport_relative_log_per_step": _log_per_step(row.relative_contraction, steps),
        }
        spectrum = spectra.get(int(row.layer))
        if spectrum is not None:  # means over the sweep's prompts and positions
            entry |= {
                f"jacobian_{name}": float(spectrum[name])
                for name in ("top_singular_value", "top_normalised_singular_value",
                             "top_robust_singular_value", "top_lyapunov",
                             "top_normalised_lyapunov", "n_expanding", "n_expanding_robust",
                             "log_volume", "log_volume_robust")
            } | {"jacobian_steps": int(spectrum["steps"]), "jacobian_n_prompts": int(spectrum["n_prompts"])}
        table.append(entry)
    return table


def _log_per_step(value: float, steps: int) -> float:
    return math.log(value) / steps if value > 0 and math.isfinite(value) else math.nan


def beyond_json(measures: BeyondMeasures) -> dict[str, Any]:
    """The section's numbers, JSON-ready."""
    fit, null = measures.jpca, measures.random_null
    summary = null.summary()
    return {
        "basis_survives": measures.basis_survives,
        "findings": [f.to_json() for f in measures.findings],
        "units_finding": measures.units_finding.to_json(),
        "random_basis_rotations": {
            "seed": null.seed,
            "n_shuffles": null.n_shuffles,
            "observed_mean": summary.mean_observed,
            "null_mean": summary.mean_null,
            "fraction_significant": summary.fraction_significant,
            "observed": tensor_json(null.observed),
        },
        "jpca": {
            "k": fit.components.shape[0],
            "r2_skew": fit.r2_skew,
            "r2_full": fit.r2_full,
            "p_value": fit.p_value,
            "surrogate_p_value": fit.surrogate_p_value,
            "surrogate_mean": float(fit.surrogate_r2_skew.mean()),
            "n_surrogates": len(fit.surrogate_r2_skew),
            "r2_skew_cv": fit.r2_skew_cv,
            "r2_full_cv": fit.r2_full_cv,
            "n_shuffles": fit.n_shuffles,
            "null_mean": float(fit.null_r2_skew.mean()),
            "null_sd": float(fit.null_r2_skew.std()),
            "frequencies": tensor_json(fit.frequencies),
            "rotations": tensor_json(fit.rotations),
            "explained_variance_ratio": tensor_json(fit.explained_variance_ratio),
        },
        "jpca_controls": {name: f.to_json() for name, f in measures.jpca_controls.items()},
        "jacobian": None if measures.jacobian is None else measures.jacobian.to_frame().to_dict("list"),
        "contraction": contraction_table(measures),
    }

