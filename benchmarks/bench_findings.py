"""The findings stage of the default report: both conditions at SmolLM2-135M size.

The report's default model is SmolLM2-135M (30 layers: 60 sublayers of 576 units) on 823
texts, original and token-shuffled. Its findings stage gets the mutual information and
the rotation null from the measures stage and runs, per condition, every bootstrap of
:mod:`tl_dynamics.findings` (1000 resamples over texts; per-sample shares of r, cosine,
velocity, |activation|; the MI's per-sample terms and the rotation counts of resampled
mean trajectories on 32 seeded units; resampled unit means for the sign kappa) and
Holm's correction.

This times :func:`tl_dynamics.findings.dynamics_findings` on two synthetic conditions of
that shape (a random walk over depth plus noise, and iid noise), with the MI and the
rotation null precomputed as the report does, over :data:`REPEATS` rounds, and prints
the wall and CPU seconds of both conditions together (CPU seconds are what an idle
machine's wall time would be with one thread; the machine is shared).

Target: both conditions in <= 20 s.

Run from the repository root::

    python benchmarks/bench_findings.py
"""

from __future__ import annotations

import statistics
import time

import torch
from _common import machine

import tl_dynamics as tld
from tl_dynamics import findings, metrics
from tl_dynamics.metrics import default_labels

SHAPE = (823, 60, 576)  # texts x sublayers x d_model: SmolLM2-135M on the default corpus
REPEATS = 3
TARGET_SECONDS = 20.0
SHUFFLES = 1000  # the report's rotation null


def condition(resid: torch.Tensor):
    """``(cache, mutual information, rotation null)`` as the report's measures stage has them."""
    n = resid.shape[0]
    dyn = tld.DynamicsCache(
        resid, default_labels(resid.shape[1]), torch.arange(n), torch.zeros(n, dtype=torch.long)
    )
    # The point estimate of MI only enters as a mean; its cost belongs to the measures
    # stage, so a Gaussian-MI stand-in of the right shape keeps this benchmark short.
    information = metrics.mutual_information(resid, method="gaussian")
    return dyn, information, metrics.rotation_null(resid, SHUFFLES, seed=0)


def main():
    print(machine())
    generator = torch.Generator().manual_seed(0)
    walk = (0.3 * torch.randn(*SHAPE, generator=generator)).cumsum(1)
    noise = torch.randn(*SHAPE, generator=generator)
    conditions = [condition(walk), condition(noise)]
    wall, cpu = [], []
    for _ in range(REPEATS):
        start, start_cpu = time.perf_counter(), time.process_time()
        for dyn, information, null in conditions:
            findings.dynamics_findings(dyn, information, null)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    print(
        f"\ndynamics_findings, 2 conditions of {SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]}, "
        f"{REPEATS} rounds: wall median {statistics.median(wall):.1f} s (range "
        f"{min(wall):.1f}-{max(wall):.1f}), CPU median {statistics.median(cpu):.1f} s "
        f"(target <= {TARGET_SECONDS:.0f} s: "
        f"{'met' if statistics.median(wall) <= TARGET_SECONDS else 'NOT met'} on wall time)"
    )


if __name__ == "__main__":
    main()
