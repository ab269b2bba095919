"""Teleport grids: batched forward passes against one forward pass per grid point.

``tld.teleport`` writes every point of an ``n x n`` PCA grid into the residual stream of
one prompt and records each run's trajectory; it runs the points as
``ceil(n*n / batch_size)`` batched passes. The contender is the obvious loop: one call
per point (``batch_size=1``), i.e. ``n*n`` passes. Both give the same trajectories
(checked here), so the ratio is pure batching.

Run from the repository root::

    python benchmarks/bench_teleport.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from _common import interleaved, machine

import tl_dynamics as tld

GRID = 10  # the paper's 10 x 10 grid
N_TEXTS = 128  # texts behind the PCA
LAYER = 2  # a middle layer of MiniLM's 6
REPEATS = 3


def main():
    print(machine())
    model = tld.models.load_model()
    dyn = tld.collect(model, tld.data.python_docs()[:N_TEXTS], progress=False)
    grid = tld.pca_grid(tld.pca_trajectories(dyn, n_components=2), n=GRID)

    def run(batch_size):
        return tld.teleport(model, layer=LAYER, points=grid, batch_size=batch_size)

    batched, single = run(32), run(1)
    difference = (batched.trajectories - single.trajectories).abs().max().item()
    best = interleaved({"batched (32)": lambda: run(32), "one pass per point": lambda: run(1)}, REPEATS)
    print(f"\nMiniLM, {GRID}x{GRID} grid at layer {LAYER}, best of {REPEATS} rounds")
    for name, seconds in best.items():
        print(f"  {name:<20} {seconds:7.2f} s")
    print(f"  speed-up of batching  {best['one pass per point'] / best['batched (32)']:6.1f}x")
    print(f"  max |difference| between the two: {difference:.1e}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
