"""Structured nulls and planted effects: trajectories whose dynamics are known.

A finding about a language model's residual stream means something only if a process
without the property does not produce it. Noise iid over depth is the easiest null and
the least telling: anything with an order over depth (a random walk, a smooth decay, a
plain growth of scale) already makes successive sublayers correlate, cosines rise and
steps differ in length. This module makes such processes, seeded and shaped like
:func:`~tl_dynamics.collect`'s output (``[text, sublayer, unit]``, one sample per text,
the pre/mid labels of :func:`~tl_dynamics.metrics.default_labels`), so that every test
can be run on them (:func:`calibrate`) and its "yes" read against what the process
really has.

Nulls (``NULLS``), each with ``x`` the state of one text at sublayer ``s`` of ``S``:

* ``gaussian``: iid ``N(0, 1)`` everywhere; ``heavy_tailed``: iid Student t with 3
  degrees of freedom (infinite fourth moment); ``massive_dimension``: iid ``N(0, 1)`` with
  unit 0 scaled by :data:`MASSIVE_SCALE` (real models carry a few such units, Sun et al.
  2024, *Massive activations in large language models*);
* ``random_walk``: ``x_0 ~ N(0, 1)``, ``x_{s+1} = x_s + N(0, 1)``;
* ``ar1``: ``x_{s+1} = phi x_s + N(0, 1)`` with :data:`AR_PHI` = 0.9, started at its
  stationary law ``N(0, 1 / (1 - phi^2))``;
* ``growth`` / ``decay``: one random state per text, ``g_s (z + 0.1 e_s)`` with the scale
  ``g_s = 4^(+-s / (S - 1))``: magnitude changes by 4x over depth, nothing else does;
* ``rank_one``: ``a_{s} w + e_s``: all units share one factor ``a_s ~ N(0, 1)`` through
  fixed loadings ``w``, iid over depth and texts (units correlated, depth irrelevant).

Planted effects (``PLANTED``): ``rotation_2`` / ``rotation_5``: units paired into planes
turning 2 or 5 full times over depth, each text with its own radius and a phase near its
plane's shared phase; ``within_steady``: a random walk whose within-layer steps (pre ->
mid) are :data:`WITHIN_STEP` as long as its cross-layer ones.

Example::

    from tl_dynamics import synthetic

    dyn = synthetic.structured("random_walk", n_texts=100, n_sublayers=24, d_model=64, seed=0)
    dyn.resid.shape                                    # torch.Size([100, 24, 64])
    table = synthetic.calibrate(lambda d: {"mean_abs": "yes"}, ["gaussian"], seeds=[0, 1])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from tl_dynamics._checks import check_int
from tl_dynamics.cache import DynamicsCache, DynamicsMetadata
from tl_dynamics.errors import DynamicsInputError
from tl_dynamics.metrics import default_labels

__all__ = [
    "AR_PHI",
    "MASSIVE_SCALE",
    "SCALE_CHANGE",
    "STATE_NOISE",
    "WITHIN_STEP",
    "PHASE_JITTER",
    "NULLS",
    "PLANTED",
    "GENERATORS",
    "structured",
    "calibrate",
]

AR_PHI = 0.9  # the AR(1): strongly ordered, yet stationary
MASSIVE_SCALE = 30.0  # one unit 30x the others: ~93 % of ||x||^2 at d_model 64, like the
# 67-70 % three massive units hold in MiniLM's stream
SCALE_CHANGE = 4.0  # growth / decay: the scale changes by this factor over depth
STATE_NOISE = 0.1  # growth / decay: fresh noise per sublayer, relative to the state
WITHIN_STEP = 0.3  # within_steady: within-layer step length relative to cross-layer ones
PHASE_JITTER = 0.3  # rotations: sd of a text's phase around its plane's phase (radians)
OBSERVATION_NOISE = 0.1  # rotations: iid noise added to the turning states

Array = Float[np.ndarray, "text sublayer unit"]


def _gaussian(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
    return rng.standard_normal((n, s, d))


def _heavy_tailed(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
    return rng.standard_t(3, size=(n, s, d))


def _massive_dimension(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
    x = rng.standard_normal((n, s, d))
    x[..., 0] *= MASSIVE_SCALE
    return x


def _random_walk(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
    return rng.standard_normal((n, s, d)).cumsum(axis=1)


def _ar1(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
    shocks = rng.standard_normal((n, s, d))
    x = np.empty_like(shocks)
    x[:, 0] = shocks[:, 0] / math.sqrt(1 - AR_PHI**2)
    for step in range(1, s):
        x[:, step] = AR_PHI * x[:, step - 1] + shocks[:, step]
    return x


def _scaled_state(rng: np.random.Generator, n: int, s: int, d: int, sign: float) -> Array:
    state = rng.standard_normal((n, 1, d)) + STATE_NOISE * rng.standard_normal((n, s, d))
    scale = SCALE_CHANGE ** (sign * np.arange(s) / max(s - 1, 1))
    return state * scale[None, :, None]


def _growth(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
    return _scaled_state(rng, n, s, d, +1.0)


def _decay(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
    return _scaled_state(rng, n, s, d, -1.0)


def _rank_one(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
    loadings = rng.standard_normal(d)
    factor = rng.standard_normal((n, s, 1))
    return factor * loadings + rng.standard_normal((n, s, d))


def _rotation(n_cycles: int) -> Callable[[np.random.Generator, int, int, int], Array]:
    def generate(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
        planes = d // 2
        angle = 2 * math.pi * n_cycles * np.arange(s) / max(s - 1, 1)  # [sublayer]
        phase = rng.uniform(0, 2 * math.pi, planes) + PHASE_JITTER * rng.standard_normal((n, planes))
        radius = 1 + 0.5 * rng.standard_normal((n, planes))
        turning = angle[None, :, None] + phase[:, None, :]  # [text, sublayer, plane]
        x = OBSERVATION_NOISE * rng.standard_normal((n, s, d))
        x[..., 0 : 2 * planes : 2] += radius[:, None] * np.cos(turning)
        x[..., 1 : 2 * planes : 2] += radius[:, None] * np.sin(turning)
        return x

    return generate


def _within_steady(rng: np.random.Generator, n: int, s: int, d: int) -> Array:
    steps = rng.standard_normal((n, s, d))
    within = np.arange(1, s) % 2 == 1  # the step into sublayer t is pre -> mid when t is odd
    steps[:, 1:][:, within] *= WITHIN_STEP
    return steps.cumsum(axis=1)


NULLS = (
    "gaussian", "heavy_tailed", "massive_dimension", "random_walk", "ar1", "growth",
    "decay", "rank_one",
)
PLANTED = ("rotation_2", "rotation_5", "within_steady")
GENERATORS: Mapping[str, Callable[[np.random.Generator, int, int, int], Array]] = {
    "gaussian": _gaussian,
    "heavy_tailed": _heavy_tailed,
    "massive_dimension": _massive_dimension,
    "random_walk": _random_walk,
    "ar1": _ar1,
    "growth": _growth,
    "decay": _decay,
    "rank_one": _rank_one,
    "rotation_2": _rotation(2),
    "rotation_5": _rotation(5),
    "within_steady": _within_steady,
}


def structured(
    kind: str, n_texts: int = 300, n_sublayers: int = 24, d_model: int = 64, seed: int = 0
) -> DynamicsCache:
    """Trajectories of the process ``kind`` (a key of :data:`GENERATORS`, module docstring).

    Returns a :class:`~tl_dynamics.DynamicsCache` of float32 ``[n_texts, n_sublayers,
    d_model]`` on the CPU, one sample per text (``text_index`` 0..n-1, position 0), labels
    ``0_pre, 0_mid, ...`` and ``metadata.model_name == "synthetic:<kind>"``; the same
    ``seed`` gives the same numbers (numpy ``PCG64``).
    """
    if kind not in GENERATORS:
        raise DynamicsInputError(f"kind must be one of {sorted(GENERATORS)}; got {kind!r}")
    n_texts = check_int(n_texts, "n_texts", 2)
    n_sublayers = check_int(n_sublayers, "n_sublayers", 2)
    d_model = check_int(d_model, "d_model", 2)
    seed = check_int(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    resid = torch.from_numpy(GENERATORS[kind](rng, n_texts, n_sublayers, d_model)).float()
    return DynamicsCache(
        resid,
        tuple(default_labels(n_sublayers)),
        torch.arange(n_texts),
        torch.zeros(n_texts, dtype=torch.long),
        DynamicsMetadata(model_name=f"synthetic:{kind}"),
    )


def calibrate(
    verdicts: Callable[[DynamicsCache], Mapping[str, str]],
    kinds: Iterable[str] = NULLS + PLANTED,
    *,
    shapes: Iterable[tuple[int, int, int]] = ((300, 24, 64),),
    seeds: Iterable[int] = range(5),
) -> pd.DataFrame:
    """Run ``verdicts`` on every process, shape and seed, and count its verdicts.

    ``verdicts(dyn)`` returns ``{test key: verdict}`` (e.g. ``{f.key: f.verdict for f in
    dynamics_findings(dyn)}``); ``shapes`` are ``(n_texts, n_sublayers, d_model)``.

    Returns a tidy frame, one row per (kind, shape, key, verdict) with columns ``kind``,
    ``n_texts``, ``n_sublayers``, ``d_model``, ``key``, ``verdict``, ``count`` (runs with
    that verdict) and ``runs`` (runs of that kind and shape).
    """
    seeds = [check_int(s, "seed", 0) for s in seeds]
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        for n_texts, n_sublayers, d_model in shapes:
            for seed in seeds:
                dyn = structured(kind, n_texts, n_sublayers, d_model, seed)
                shape = {"kind": kind, "n_texts": n_texts, "n_sublayers": n_sublayers, "d_model": d_model}
                rows += [shape | {"key": k, "verdict": v} for k, v in verdicts(dyn).items()]
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise DynamicsInputError("kinds, shapes and seeds must each name at least one; got none")
    group = ["kind", "n_texts", "n_sublayers", "d_model"]
    counts = frame.groupby(group + ["key", "verdict"], sort=False).size().rename("count")
    return counts.reset_index().assign(runs=len(seeds))
