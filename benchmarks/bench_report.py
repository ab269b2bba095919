"""The main job's wall time: the default ``tl-dynamics report``, stage by stage.

Runs the README's main command (the default SmolLM2-135M preset, the offline Python-docs
corpus: all 823 of its texts, since it holds fewer than the default 1000, both
conditions, the random-weight twin) :data:`REPEATS` times in a row and prints, for each
run, the seconds of every stage as the report records them. Two standing targets:

* the whole report finishes in at most :data:`TARGET_SECONDS` on a 2-core machine;
* its total time is at most :data:`TARGET_RATIO` times the forward passes it needs: the
  stages that run the model (collection of 2 x 823 texts, the random-weight twin's 256
  texts, the teleports), so that everything computed from the trajectories costs at most
  a quarter of running the model.

The collection stage itself is compared with the same forward passes without reads in
``bench_collect.py``. The model is converted (once) and loaded before the first run, so
no run pays for the conversion.

Run from the repository root (about 3 x 5 minutes)::

    python benchmarks/bench_report.py [repeats]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from _common import machine

import tl_dynamics as tld
from tl_dynamics.cli import main as cli

REPEATS = 3  # whole reports, one after the other
TARGET_SECONDS = 300.0  # 5 minutes on this 2-core machine
TARGET_RATIO = 1.25  # total / the stages that run the model
FORWARD_STAGES = ("collect", "random-weight twin", "teleports")  # the stages that run the model


def run_once() -> tuple[float, dict[str, float], int]:
    """``(total seconds, stage seconds, number of texts)`` of one default report."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report"
        start = time.perf_counter()
        assert cli(["report", "--out", str(out), "--quiet"]) == 0
        total = time.perf_counter() - start
        record = json.loads((out / "metrics.json").read_text())
    return total, record["stage_seconds"], record["n_texts"]


def main(repeats: int = REPEATS) -> None:
    print(machine())
    tld.models.load_model()  # convert the preset once, outside the timed runs
    runs = [run_once() for _ in range(repeats)]
    n_texts = runs[0][2]
    print(f"\ntl-dynamics report (defaults: {tld.models.DEFAULT_MODEL}, {n_texts} texts, "
          f"both conditions), {repeats} runs")
    for stage in runs[0][1]:
        seconds = [stages[stage] for _, stages, _ in runs]
        print(f"  {stage:<28} median {statistics.median(seconds):7.1f} s "
              f"(range {min(seconds):.1f}-{max(seconds):.1f})")
    totals = [total for total, _, _ in runs]
    ratios = [total / sum(stages.get(name, 0.0) for name in FORWARD_STAGES) for total, stages, _ in runs]
    print(f"  {'total':<28} median {statistics.median(totals):7.1f} s "
          f"(range {min(totals):.1f}-{max(totals):.1f}); target <= {TARGET_SECONDS:.0f} s: "
          f"{'met' if max(totals) <= TARGET_SECONDS else 'NOT met'}")
    print(f"  total / forward stages ({', '.join(FORWARD_STAGES)}): median {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}); target <= {TARGET_RATIO:.2f}x: "
          f"{'met' if max(ratios) <= TARGET_RATIO else 'NOT met'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else REPEATS)
