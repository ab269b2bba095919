"""Calibration: every finding's verdicts on structured nulls and planted effects.

Runs the paper's Figure 1-2 findings and the two PCA findings of Figure 4 (the teleport
finding needs a model) on every process of :mod:`tl_dynamics.synthetic`, at several
shapes and seeds, as the report computes them (binned MI, a layer-shuffle rotation null),
and prints one table: per process and finding, how many runs said "yes" / "no" /
"undecided". A "yes" on a null is a false positive unless the process really has the
property (a random walk's |activation| does grow); docs/calibration.md explains each.

Run from the repository root (about 25 minutes on a busy 2-core machine)::

    python benchmarks/calibrate.py            # markdown table on stdout
"""

from __future__ import annotations

import sys

import pandas as pd

import tl_dynamics as tld
from tl_dynamics import findings, metrics, synthetic

SHAPES = ((300, 24, 64), (100, 24, 64))  # (texts, sublayers, units)
SEEDS = range(3)
PCA_COMPONENTS = 16  # Figure 4's PCA, fewer components than d_model


def verdicts(dyn: tld.DynamicsCache) -> dict[str, str]:
    """``{key: verdict}`` of the Figure 1-2 findings and the two PCA findings on ``dyn``."""
    mi = metrics.mutual_information(dyn.resid, method="binned")
    found = findings.dynamics_findings(dyn, mutual_information=mi)
    pca = tld.pca_trajectories(dyn, n_components=min(PCA_COMPONENTS, dyn.resid.shape[-1]))
    found += findings.trajectory_findings(pca, None, dyn)[:2]
    return {f.key: f.verdict for f in findings.decide(found)}


def table(counts: pd.DataFrame) -> str:
    """Markdown: one row per process and shape, one column per finding, cells ``y/n/u``."""
    wide = counts.pivot_table(
        index=["kind", "n_texts", "n_sublayers", "d_model"], columns=["key", "verdict"],
        values="count", fill_value=0, sort=False,
    )
    keys = list(dict.fromkeys(counts["key"]))
    lines = ["| process | shape | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for index, row in wide.iterrows():
        cells = [
            "/".join(str(int(row.get((key, v), 0))) for v in ("yes", "no", "undecided"))
            for key in keys
        ]
        lines.append(f"| {index[0]} | {index[1]}x{index[2]}x{index[3]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    counts = synthetic.calibrate(verdicts, shapes=SHAPES, seeds=SEEDS)
    print("cells: yes/no/undecided out of", len(SEEDS), "seeds", file=sys.stderr)
    print(table(counts))


if __name__ == "__main__":
    main()
