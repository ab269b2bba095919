"""The main job's wall time: the default ``tl-dynamics report``, stage by stage.

Runs the README's main command (packaged MiniLM, the offline Python-docs corpus: all
823 of its texts, since it holds fewer than the default 1000) and prints the seconds of
each stage as the report records them, and for the collection stage the ratio to plain
forward passes over the same texts (both conditions: 2 x 823 texts).

Run from the repository root::

    python benchmarks/bench_report.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from _common import machine
from bench_collect import padded_batches

import tl_dynamics as tld
from tl_dynamics.cli import main as cli


def plain_forward_seconds(model, texts):
    """Seconds of hook-free forward passes over the batches collect builds, both conditions."""
    batches = padded_batches(model, texts)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(2):  # the original and the shuffled condition
            for tokens, mask in batches:
                model(tokens, attention_mask=mask, return_type=None)
    return time.perf_counter() - start


def main():
    print(machine())
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report"
        start = time.perf_counter()
        assert cli(["report", "--out", str(out), "--quiet"]) == 0
        total = time.perf_counter() - start
        record = json.loads((out / "metrics.json").read_text())
    stages = record["stage_seconds"]
    print(f"\ntl-dynamics report (defaults): {record['n_texts']} texts, {total:.1f} s in all")
    for stage, seconds in stages.items():
        print(f"  {stage:<28} {seconds:7.1f} s  ({100 * seconds / total:4.1f}%)")
    model = tld.models.load_model()
    texts = tld.data.sample_texts(tld.data.python_docs(), record["n_texts"], seed=0)
    forward = plain_forward_seconds(model, texts)
    print(f"  plain forward passes, same batches: {forward:.1f} s; "
          f"collect stage / forward = {stages['collect'] / forward:.2f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
