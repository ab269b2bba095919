"""Helpers shared by the benchmark scripts: interleaved timing and the machine's name.

Timings on a shared machine are noisy, so every benchmark runs its contenders in turn,
``repeats`` rounds of each. :func:`interleaved` keeps each one's fastest round (a slow
round means the machine was busy, not that the code was slower); :func:`interleaved_runs`
keeps every round, so that :func:`ratio_summary` can give the median and the range of
the ratio of two contenders measured in the same rounds.

Example::

    from _common import interleaved, machine
    print(machine())
    best = interleaved({"sum": lambda: sum(range(10**6)), "max": lambda: max(range(10**6))}, 3)
    best["sum"] / best["max"]
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch


def interleaved_runs(
    contenders: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Wall-clock seconds of every round of each contender, ``repeats`` interleaved rounds."""
    runs = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            runs[name].append(time.perf_counter() - start)
    return runs


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest wall-clock seconds of each contender over ``repeats`` interleaved rounds."""
    return {name: min(times) for name, times in interleaved_runs(contenders, repeats).items()}


def ratio_summary(numerator: list[float], denominator: list[float]) -> str:
    """Median and range of the per-round ratios of two contenders timed in the same rounds,
    e.g. ``"1.04x (range 0.98-1.12 over 5 rounds)"``."""
    ratios = sorted(a / b for a, b in zip(numerator, denominator, strict=True))
    return (
        f"{statistics.median(ratios):.2f}x (range {ratios[0]:.2f}-{ratios[-1]:.2f} "
        f"over {len(ratios)} rounds)"
    )


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` prints it (``platform.processor()`` without lscpu)."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    names = [
        line.split(":", 1)[1].strip()
        for line in listing.splitlines()
        if line.startswith("Model name")
    ]
    return names[0] if names else platform.processor() or "unknown CPU"


def machine() -> str:
    """One line naming the machine: cores, CPU model, torch build and its threads, and the
    load average when the run starts (above the core count, other work shares the CPU)."""
    return (
        f"{os.cpu_count()} CPU cores, {cpu_model()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
