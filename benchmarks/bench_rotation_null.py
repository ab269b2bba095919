"""Layer-shuffle null of rotation counts: vectorised against per-unit Python loops.

The paper's null (docs/paper.md, metric 6) permutes the sublayer order of every unit 1000
times and counts the rotations of each permuted phase portrait ``(a_l, da_l/dl)``. For
Llama-3.1-8B that is 4096 units x 1000 shuffles x 64 sublayers.
``tl_dynamics.metrics.rotation_null`` does it at once in torch, in chunks of shuffles.
It is timed on the whole problem (synthetic random-walk trajectories of that shape, the
batch-mean trajectory, the function's default) against two loops over units, timed on
:data:`N_LOOP_UNITS` units and extrapolated to 4096:

* **per unit and shuffle**: the formula as written, one ``numpy`` permutation,
  ``numpy.gradient``, tangent angles and wrapped sum per (unit, shuffle);
* **per unit**: a loop over units only, each unit's 1000 shuffles vectorised in numpy.

Both loops must give the function's observed counts (no randomness there); their null
means must agree with it to sampling error. Target: vectorised >= 100x faster than the
per-unit loop.

Run from the repository root::

    python benchmarks/bench_rotation_null.py
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from _common import interleaved, machine

from tl_dynamics import metrics

N_UNITS = 4096  # Llama-3.1-8B d_model
N_SUBLAYERS = 64  # 2 x 32 layers
N_SAMPLES = 16  # trajectories averaged into the mean one
N_SHUFFLES = 1000  # the paper's
N_LOOP_UNITS = 8  # units timed by the loops, then extrapolated to N_UNITS
TARGET = 100.0  # vectorised / per-unit loop, from the issue
SEED = 0
REPEATS = 2  # interleaved rounds; the best of each is kept


def turns(a: np.ndarray) -> np.ndarray:
    """Rotation count of ``(a_l, da_l/dl)`` along the last axis, the formula of docs/paper.md, metric 6."""
    derivative = np.gradient(a, axis=-1)
    tangent_x, tangent_y = np.diff(a, axis=-1), np.diff(derivative, axis=-1)
    theta = np.arctan2(tangent_y, tangent_x)
    dtheta = np.pi - (np.pi - np.diff(theta, axis=-1)) % (2 * np.pi)  # wrapped into (-pi, pi]
    return dtheta.sum(axis=-1) / (2 * np.pi)


def loop_units_and_shuffles(
    mean: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Observed counts ``[unit]`` and null ``[shuffle, unit]``, one (unit, shuffle) at a time."""
    n_sublayers, n_units = mean.shape
    null = np.empty((N_SHUFFLES, n_units))
    for unit in range(n_units):
        for shuffle in range(N_SHUFFLES):
            null[shuffle, unit] = turns(mean[rng.permutation(n_sublayers), unit])
    return turns(mean.T), null


def loop_units(mean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same, one unit at a time with its shuffles vectorised."""
    n_sublayers, n_units = mean.shape
    null = np.empty((N_SHUFFLES, n_units))
    for unit in range(n_units):
        order = rng.permuted(np.tile(np.arange(n_sublayers), (N_SHUFFLES, 1)), axis=1)
        null[:, unit] = turns(mean[order, unit])
    return turns(mean.T), null


def main():
    print(machine())
    if not hasattr(metrics, "rotation_null"):
        print("skipped: tl_dynamics.metrics has no rotation_null yet")
        return
    generator = torch.Generator().manual_seed(SEED)
    drift = torch.randn(1, 1, N_UNITS, generator=generator)
    steps = torch.randn(N_SAMPLES, N_SUBLAYERS, N_UNITS, generator=generator) + drift
    resid = steps.cumsum(dim=1)  # random walks with a drift per unit, [sample, sublayer, unit]
    mean = resid.mean(dim=0, dtype=torch.float64).numpy()

    subset = mean[:, :N_LOOP_UNITS]
    results = {}
    loops = {"loop per unit and shuffle": loop_units_and_shuffles, "loop per unit": loop_units}
    best = interleaved(
        {
            "vectorised": lambda: results.update(
                vectorised=metrics.rotation_null(resid, n_shuffles=N_SHUFFLES, seed=SEED)
            ),
            **{
                name: lambda name=name, loop=loop: results.update(
                    {name: loop(subset, np.random.default_rng(SEED))}
                )
                for name, loop in loops.items()
            },
        },
        REPEATS,
    )
    result, vectorised = results["vectorised"], best["vectorised"]
    print(f"\n{N_SHUFFLES} shuffles x {N_UNITS} units x {N_SUBLAYERS} sublayers, mean trajectory")
    print(f"  tl_dynamics.metrics.rotation_null   {vectorised:8.2f} s (measured, whole problem)")
    for name in loops:
        observed, null = results[name]
        projected = best[name] * N_UNITS / N_LOOP_UNITS
        speedup = projected / vectorised
        verdict = "met" if speedup >= TARGET else "NOT met"
        print(
            f"  {name:<35} {projected:8.2f} s (measured on {N_LOOP_UNITS} units, extrapolated)"
            f"\n    vectorised is {speedup:.1f}x faster (target >= {TARGET:.0f}x: {verdict})"
        )
        observed_gap = np.abs(observed - result.observed[:N_LOOP_UNITS].numpy()).max()
        null_gap = np.abs(null.mean(0) - result.null[:, :N_LOOP_UNITS].mean(0).numpy())
        standard_error = result.null[:, :N_LOOP_UNITS].std(0).numpy() / math.sqrt(N_SHUFFLES)
        print(
            f"    agreement: observed counts max |difference| {observed_gap:.1e} turns; null means "
            f"differ by {(null_gap / standard_error).max():.1f} standard errors at most"
        )


if __name__ == "__main__":
    sys.exit(main())
