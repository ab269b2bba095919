"""Mutual information: the vectorised estimator against the paper's loop over unit pairs.

The paper (PAPER.md, metric 5) estimates, for every unit and pair of successive
sublayers, ``MI = mean_i log((p(x_i, y_i) + 1e-10) / (p(x_i) p(y_i) + 1e-10))`` with
three Gaussian kernel density estimates (``scipy.stats.gaussian_kde``, Scott's
bandwidth: one joint, two marginals) evaluated at the samples themselves. Written
directly, that is a Python loop of three ``gaussian_kde`` fits and evaluations per
(transition, unit) pair. ``tl_dynamics.metrics.mutual_information(method="kde")``
computes the same numbers in torch, all pairs of a chunk at once.

On the same N = 1000 real MiniLM residual-stream samples (every token of a few offline
texts) and the same unit pairs, this prints the time per pair of both, their speed
ratio, their mean relative difference, the projected time of each for the full
Llama-3.1-8B problem (4096 units x 63 transitions at N = 1000) on this machine, and how
far ``method="gaussian"`` (``-1/2 log(1 - r^2)``) lies from the exact KDE.

Run from the repository root::

    python benchmarks/bench_mutual_information.py
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch
from _common import interleaved, machine
from scipy.stats import gaussian_kde

import tl_dynamics as tld
from tl_dynamics import metrics

N_SAMPLES = 1000  # the paper's N
N_UNITS = 16  # units timed by both estimators (x 11 MiniLM transitions = 176 pairs)
REPEATS = 3  # interleaved rounds; the best of each is kept
LLAMA_PAIRS = 4096 * 63  # Llama-3.1-8B: d_model x (64 sublayers - 1)
LOG_EPSILON = 1e-10  # inside both logs (PAPER.md, metric 5)


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
    model = tld.models.load_model()
    texts, dyn = tld.data.python_docs(), None
    for n_texts in range(8, len(texts), 8):
        dyn = tld.collect(model, texts[:n_texts], positions="all", progress=False)
        if dyn.n_samples >= N_SAMPLES:
            return dyn.resid[:N_SAMPLES].double()
    raise RuntimeError("the offline corpus has too few tokens")


def main():
    print(machine())
    if not hasattr(metrics, "mutual_information"):
        print("skipped: tl_dynamics.metrics has no mutual_information yet")
        return
    resid = minilm_samples()[:, :, :N_UNITS]
    pairs = (resid.shape[1] - 1) * N_UNITS
    results = {}
    best = interleaved(
        {
            "paper loop (scipy)": lambda: results.update(
                paper=paper_mutual_information(resid.numpy())
            ),
            "tl_dynamics kde": lambda: results.update(
                kde=metrics.mutual_information(resid).numpy()
            ),
            "tl_dynamics binned": lambda: results.update(
                binned=metrics.mutual_information(resid, method="binned").numpy()
            ),
        },
        REPEATS,
    )
    gaussian = metrics.mutual_information(resid, method="gaussian").numpy()
    paper, kde = results["paper"], results["kde"]
    print(f"\nN = {N_SAMPLES} MiniLM samples, {pairs} (transition, unit) pairs, best of {REPEATS}")
    for name, seconds in best.items():
        per_pair = seconds / pairs
        projected = per_pair * LLAMA_PAIRS
        print(
            f"  {name:<20} {per_pair * 1e3:7.2f} ms/pair   Llama-3.1-8B ({LLAMA_PAIRS} pairs): "
            f"{projected / 3600:5.2f} h"
        )
    for name in ("tl_dynamics kde", "tl_dynamics binned"):
        speedup = best["paper loop (scipy)"] / best[name]
        print(f"  speed-up of {name} over the paper loop: {speedup:.2f}x (target >= 100x)")
    binned_gap = np.abs(results["binned"] - paper) / np.abs(paper)
    print(
        f"  binned vs paper: mean relative difference {binned_gap.mean():.1e}, "
        f"max {binned_gap.max():.1e} (target <= 2 %)"
    )
    relative = np.abs(kde - paper) / np.abs(paper)
    print(
        f"  kde vs paper: mean relative difference {relative.mean():.1e}, max {relative.max():.1e}"
    )
    gap = np.abs(gaussian - paper)
    print(
        f"  method='gaussian' vs exact KDE: mean |difference| {gap.mean():.3f} nats "
        f"(KDE mean {paper.mean():.3f} nats), mean relative difference "
        f"{(gap / np.abs(paper)).mean():.1%}, correlation over pairs "
        f"{np.corrcoef(gaussian.ravel(), paper.ravel())[0, 1]:.3f}"
    )
    gaussian_time = interleaved(
        {"gaussian": lambda: metrics.mutual_information(resid, method="gaussian")}, REPEATS
    )
    print(f"  method='gaussian': {gaussian_time['gaussian'] / pairs * 1e6:.2f} us/pair")


if __name__ == "__main__":
    sys.exit(main())
