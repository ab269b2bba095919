"""Teleport grids: batched forward passes against one forward pass per grid point.

``tld.teleport`` writes every point of an ``n x n`` PCA grid into the residual stream of
one prompt and records each run's trajectory; it runs the points as
``ceil(n*n / batch_size)`` batched passes. The contender is the obvious loop: one call
per point (``batch_size=1``), i.e. ``n*n`` passes. Both give the same trajectories
(checked here), so the ratio is pure batching. The model is the default
(SmolLM2-135M), teleported at its middle layer; the two contenders run in interleaved
rounds, and the speed-up is the median and range of the per-round ratios.

Run from the repository root::

    python benchmarks/bench_teleport.py
"""

from __future__ import annotations

import os
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from _common import interleaved_runs, machine, ratio_summary

import tl_dynamics as tld

GRID = 10  # the paper's 10 x 10 grid
N_TEXTS = 128  # texts behind the PCA
REPEATS = 5


def main():
    print(machine())
    model = tld.models.load_model(progress=False)  # the default: SmolLM2-135M, 30 layers
    layer = model.cfg.n_layers // 2  # a middle layer, as in the paper's Figure 4
    dyn = tld.collect(model, tld.data.python_docs()[:N_TEXTS], progress=False)
    grid = tld.pca_grid(tld.pca_trajectories(dyn, n_components=2), n=GRID)

    def run(batch_size):
        return tld.teleport(model, layer=layer, points=grid, batch_size=batch_size)

    batched, single = run(32), run(1)
    difference = (batched.trajectories - single.trajectories).abs().max().item()
    runs = interleaved_runs(
        {"batched (32)": lambda: run(32), "one pass per point": lambda: run(1)}, REPEATS
    )
    print(f"\n{model.cfg.model_name}, {GRID}x{GRID} grid at layer {layer}, {REPEATS} interleaved rounds")
    for name, seconds in runs.items():
        print(f"  {name:<20} median {statistics.median(seconds):7.2f} s (range {min(seconds):.2f}-{max(seconds):.2f})")
    speed_up = ratio_summary(runs["one pass per point"], runs["batched (32)"])
    print(f"  speed-up of batching: {speed_up}")
    print(f"  max |difference| between the two: {difference:.1e}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
