"""Print the README's tables of findings, controls and "beyond the paper" numbers from reports.

Every number the README's "Comparing model families" and "Beyond the paper" sections state
comes from report folders written by ``tl-dynamics report`` (and a ``tl-dynamics compare``
folder for the DSA floors), so a regenerated report regenerates the tables::

    python scripts/readme_tables.py smollm2 gemma3 minilm --compare comparison

Columns are the reports in the order given, labelled with their model's name.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from tl_dynamics.report.record import read_report

SHORT = {"higher": "higher", "lower": "lower", "same": "same", "undecided": "?"}


def _number(value: Any, fmt: str = "{:.3g}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else fmt.format(value)


def _contrast(contrasts: dict[str, Any] | None, key: str) -> str:
    """``higher``/``lower``/``same``/``?`` of one finding's contrast, or ``-`` when not run."""
    if not contrasts:
        return "-"
    row = next((c for c in contrasts if c["key"] == key), None)
    return "-" if row is None else SHORT[row["verdict"]]


def findings_table(records: list[dict[str, Any]], labels: list[str]) -> str:
    """Markdown: per finding and model, the verdict, effect [95 % CI], and the two contrasts."""
    lines = [
        "| the paper's finding | " + " | ".join(labels) + " |",
        "| --- |" + " --- |" * len(labels),
    ]
    keys = [f["key"] for f in records[0]["findings"]["original"]]
    for key in keys:
        cells = []
        for record in records:
            finding = next(f for f in record["findings"]["original"] if f["key"] == key)
            contrasts = record["findings"].get("contrasts", {})
            ci = finding["ci"]
            cells.append(
                f"**{finding['verdict']}** {_number(finding['effect'])} "
                f"[{_number(ci[0])}, {_number(ci[1])}]; "
                f"L {_contrast(contrasts.get('shuffled'), key)}, "
                f"T {_contrast(contrasts.get('random_twin'), key)}"
            )
        claim = records[0]["findings"]["original"][keys.index(key)]["claim"]
        name = claim.split(" (")[0].split(":")[0].rstrip(".").replace("|", "\\|")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def contrast_table(records: list[dict[str, Any]], labels: list[str], control: str) -> str:
    """Markdown: every contrast against ``control`` with effect [CI] and Holm p."""
    lines = ["| finding | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(labels)]
    keys = [f["key"] for f in records[0]["findings"]["original"]]
    for key in keys:
        cells = []
        for record in records:
            rows = (record["findings"].get("contrasts") or {}).get(control) or []
            row = next((c for c in rows if c["key"] == key), None)
            if row is None:
                cells.append("-")
                continue
            cells.append(
                f"{row['verdict']}: {_number(row['effect'])} [{_number(row['ci'][0])}, "
                f"{_number(row['ci'][1])}], p {_number(row['p_adjusted'], '{:.2g}')}"
            )
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def beyond_table(records: list[dict[str, Any]], labels: list[str]) -> str:
    """Markdown: the section's tests, jPCA beside its controls, teleports and Jacobians."""
    rows: dict[str, list[str]] = {}
    for record in records:
        beyond = record["beyond"]
        units, (basis, rotation) = beyond["units_finding"], beyond["findings"]
        for name, f in (("Fig 2 test, model's axes", units), ("the same, random basis", basis),
                        ("jPCA r2_skew minus surrogates", rotation)):
            rows.setdefault(name, []).append(
                f"{_number(f['effect'])} [{_number(f['ci'][0])}, {_number(f['ci'][1])}]: {f['verdict']}"
            )
        for name, f in [("original", rotation)] + list(beyond.get("jpca_controls", {}).items()):
            n = f["numbers"]
            rows.setdefault(f"jPCA {name}: r2_skew / surrogates (p) / held-out", []).append(
                f"{_number(n.get('r2_skew'))} / {_number(n.get('surrogate_mean'))} "
                f"({_number(n.get('surrogate_p'), '{:.2g}')}) / {_number(n.get('r2_skew_cv'))}"
            )
        table = beyond["contraction"]
        span = lambda key, fmt="{:.3g}": "–".join(  # noqa: E731
            _number(v, fmt) for v in (min(r[key] for r in table), max(r[key] for r in table))
        ) if all(key in r for r in table) else "-"
        rows.setdefault("teleports: final distance / displacement", []).append(
            f"{span('teleport_contraction')} (relative {span('teleport_relative_contraction')})"
        )
        for key, name in (("jacobian_top_singular_value", "Jacobian top σ"),
                          ("jacobian_top_robust_singular_value", "the same × median\\|x_start\\| / median\\|x_stop\\|"),
                          ("jacobian_n_expanding", "expanding directions"),
                          ("jacobian_log_volume", "log-volume change (nats)"),
                          ("jacobian_n_prompts", "prompts")):
            rows.setdefault(name, []).append(span(key))
    lines = ["| | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(labels)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    return "\n".join(lines)


def dsa_lines(compare: Path) -> str:
    """Each condition's DSA noise floor and every pair's distance [CI] above or below the floors."""
    similarity = json.loads((compare / "compare.json").read_text())["dynamical_similarity"]
    names, distance, ci = similarity["names"], similarity["distance"], similarity["distance_ci"]
    floors = similarity["noise_floor"]
    lines = [f"- floor of {name}: {floor:.3f}" for name, floor in zip(names, floors)]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            above = ci[i][j][0] > max(floors[i], floors[j])
            lines.append(
                f"- {names[i]} vs {names[j]}: {distance[i][j]:.3f} [{ci[i][j][0]:.3f}, "
                f"{ci[i][j][1]:.3f}]{' above both floors' if above else ''}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report folders")
    parser.add_argument("--compare", type=Path, help="a compare folder over the same reports")
    args = parser.parse_args()
    records = [read_report(folder) for folder in args.reports]
    labels = [r["model"]["model_name"].split("/")[-1] for r in records]
    print(findings_table(records, labels), end="\n\n")
    for control in ("shuffled", "random_twin"):
        print(f"contrasts against {control}:\n" + contrast_table(records, labels, control), end="\n\n")
    print(beyond_table(records, labels), end="\n\n")
    if args.compare:
        print(dsa_lines(args.compare))


if __name__ == "__main__":
    main()
