"""Mutual information: the vectorised estimator against the paper's loop over unit pairs.

The paper (docs/paper.md, metric 5) estimates, for every unit and pair of successive
sublayers, ``MI = mean_i log((p(x_i, y_i) + 1e-10) / (p(x_i) p(y_i) + 1e-10))`` with
three Gaussian kernel density estimates (``scipy.stats.gaussian_kde``, Scott's
bandwidth: one joint, two marginals) evaluated at the samples themselves. Written
directly, that is a Python loop of three ``gaussian_kde`` fits and evaluations per
(transition, unit) pair. ``tl_dynamics.metrics.mutual_information(method="kde")``
computes the same numbers in torch, all pairs of a chunk at once.

The binned estimator (``method="binned"``) is timed on several data shapes, since its
cost per pair depends on the number of samples and on the spread of the whitened data
(outliers widen the grid):

* MiniLM: N = 1000 real residual-stream samples (every token of a few offline texts);
* random walk + noise: 1000 samples x 13 sublayers x 64 units (768 pairs), the shape the
  issue measured at 64x;
* heavy tails: the same walk with Student-t (3 degrees of freedom) increments;
* N = 300: the walk with fewer samples (the report's order of magnitude of texts).

For each shape the paper's scipy loop runs on :data:`SCIPY_PAIRS` pairs (it costs tens of
ms per pair) and ``tl_dynamics`` on all pairs of the shape in one call, as a report
calls it; both run interleaved for :data:`REPEATS` rounds and the script prints the
median time per pair of each, the per-round speed ratios (median and range) and the mean
and max relative difference of the binned MI from the scipy values on the shared pairs.
Target: >= 100x at <= 2 % mean relative error on every shape.

Run from the repository root::

    python benchmarks/bench_mutual_information.py
"""

from __future__ import annotations

import os
import statistics
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The scipy loop runs one small KDE after another: numpy's OpenBLAS threads only spin
# between them, and while they spin they take the cores from torch's threads in the
# interleaved rounds (measured: the binned run right after a scipy round was 1.7x slower
# than alone, and the scipy loop itself 1.1-1.7x faster with one BLAS thread). One BLAS
# thread is the scipy loop's fastest setting, and it leaves the cores to torch.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch
from _common import interleaved_runs, machine
from scipy.stats import gaussian_kde

import tl_dynamics as tld
from tl_dynamics import metrics

N_SAMPLES = 1000  # the paper's N
SCIPY_PAIRS = 48  # (transition, unit) pairs timed with the scipy loop per shape
REPEATS = 3  # interleaved rounds
LOG_EPSILON = 1e-10  # inside both logs (docs/paper.md, metric 5)
TARGET_SPEEDUP = 100
TARGET_ERROR = 0.02


def paper_mutual_information(resid: np.ndarray) -> np.ndarray:
    """The paper's estimator, one unit pair at a time: ``[transition, unit]`` nats."""
    _, n_sublayers, n_units = resid.shape
    mi = np.empty((n_sublayers - 1, n_units))
    for t in range(n_sublayers - 1):
        for unit in range(n_units):
            x, y = resid[:, t, unit], resid[:, t + 1, unit]
            xy = np.vstack([x, y])
            joint = gaussian_kde(xy)(xy)
            product = gaussian_kde(x)(x) * gaussian_kde(y)(y)
            mi[t, unit] = np.mean(np.log((joint + LOG_EPSILON) / (product + LOG_EPSILON)))
    return mi


def minilm_samples() -> torch.Tensor:
    """``[N_SAMPLES, 12, 384]`` float64: every token of the first offline texts."""
    model = tld.models.load_model("minilm")
    texts, dyn = tld.data.python_docs(), None
    for n_texts in range(8, len(texts), 8):
        dyn = tld.collect(model, texts[:n_texts], positions="all", progress=False)
        if dyn.n_samples >= N_SAMPLES:
            return dyn.resid[:N_SAMPLES].double()
    raise RuntimeError("the offline corpus has too few tokens")


def random_walk(n: int, heavy: bool = False, seed: int = 0) -> torch.Tensor:
    """``[n, 13, 64]`` float64 random walk over depth plus independent noise."""
    rng = np.random.default_rng(seed)
    draw = (lambda size: rng.standard_t(3, size)) if heavy else rng.standard_normal
    walk = np.cumsum(draw((n, 13, 64)), axis=1) + 0.5 * draw((n, 13, 64))
    return torch.from_numpy(walk)


def shared_pairs(resid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``SCIPY_PAIRS`` (transition, unit) pairs spread over the shape, seeded."""
    n_transitions, n_units = resid.shape[1] - 1, resid.shape[2]
    chosen = np.random.default_rng(0).choice(n_transitions * n_units, SCIPY_PAIRS, replace=False)
    return np.divmod(chosen, n_units)


def paper_pairs(resid: np.ndarray, transitions: np.ndarray, units: np.ndarray) -> np.ndarray:
    """The paper's estimator on the chosen pairs, nats."""
    mi = np.empty(len(units))
    for k, (t, unit) in enumerate(zip(transitions, units, strict=True)):
        mi[k] = paper_mutual_information(resid[:, [t, t + 1]][:, :, [unit]])[0, 0]
    return mi


def bench(name: str, resid: torch.Tensor) -> tuple[float, float]:
    transitions, units = shared_pairs(resid)
    n_pairs = (resid.shape[1] - 1) * resid.shape[2]
    results = {}
    runs = interleaved_runs(
        {
            "scipy": lambda: results.update(paper=paper_pairs(resid.numpy(), transitions, units)),
            "binned": lambda: results.update(
                binned=metrics.mutual_information(resid, method="binned").numpy()
            ),
        },
        REPEATS,
    )
    per_pair = {
        "scipy": [t / SCIPY_PAIRS for t in runs["scipy"]],
        "binned": [t / n_pairs for t in runs["binned"]],
    }
    ratios = sorted(a / b for a, b in zip(per_pair["scipy"], per_pair["binned"], strict=True))
    paper = results["paper"]
    gap = np.abs(results["binned"][transitions, units] - paper) / np.abs(paper)
    speedup = statistics.median(ratios)
    print(
        f"  {name:<22} N={resid.shape[0]:>5} pairs={n_pairs:>5}  scipy "
        f"{statistics.median(per_pair['scipy']) * 1e3:6.2f} ms/pair  binned "
        f"{statistics.median(per_pair['binned']) * 1e3:6.3f} ms/pair  speed-up "
        f"{speedup:6.1f}x (range {ratios[0]:.1f}-{ratios[-1]:.1f})  rel. error mean "
        f"{gap.mean():.2%} max {gap.max():.2%}"
    )
    return speedup, float(gap.mean())


def main():
    print(machine())
    if not hasattr(metrics, "mutual_information"):
        print("skipped: tl_dynamics.metrics has no mutual_information yet")
        return
    print(
        f"\nbinned MI vs the paper's scipy loop ({SCIPY_PAIRS} shared pairs per shape), "
        f"{REPEATS} interleaved rounds, median per pair"
    )
    shapes = {
        "MiniLM tokens": minilm_samples(),
        "random walk + noise": random_walk(N_SAMPLES),
        "heavy tails (t, 3 df)": random_walk(N_SAMPLES, heavy=True),
        "random walk, N = 300": random_walk(300),
    }
    outcomes = {name: bench(name, resid) for name, resid in shapes.items()}
    speedups = [s for s, _ in outcomes.values()]
    errors = [e for _, e in outcomes.values()]
    met = min(speedups) >= TARGET_SPEEDUP and max(errors) <= TARGET_ERROR
    print(
        f"  across shapes: speed-up {min(speedups):.0f}-{max(speedups):.0f}x, mean relative "
        f"error {min(errors):.2%}-{max(errors):.2%} (target >= {TARGET_SPEEDUP}x at <= "
        f"{TARGET_ERROR:.0%} on every shape: {'met' if met else 'NOT met'})"
    )


if __name__ == "__main__":
    sys.exit(main())
