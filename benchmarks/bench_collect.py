"""What recording trajectories costs: ``collect`` against the same forward pass without reads.

``tl_dynamics.collect`` tokenizes the texts, sorts them longest first, pads them into
batches and runs the model with a hook on every ``hook_resid_pre``/``hook_resid_mid``
that copies the kept rows, stopping the pass at the last hook it reads (the last layer's
MLP and the output head never run). Its baseline does exactly the same work but reads
nothing: it tokenizes, sorts and pads the same texts the same way (``collect``'s own
helpers) and runs the same ``run_with_hooks`` pass with a single hook, at the same last
hook point, that only stops the pass. The ratio is therefore the price of reading the
trajectories, nothing else.

Target: ``collect <= 1.10 x`` that baseline. The two run interleaved for
:data:`REPEATS` rounds; the script prints the median and the range of the per-round
ratios (``_common.py``).

Run from the repository root::

    python benchmarks/bench_collect.py
"""

from __future__ import annotations

import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from _common import interleaved_runs, machine, ratio_summary

import tl_dynamics as tld
from tl_dynamics._batching import pad_token_id, pad_tokens, tokenize
from tl_dynamics.hooks import trajectory_hooks
from tl_dynamics.models import build_tiny_model, load_model

N_TEXTS = 128  # texts of the offline corpus per run
BATCH_SIZE = 16  # collect's default
REPEATS = 5  # interleaved rounds of each contender
TARGET = 1.10  # collect / the same pass without reads, from the issue


class _Stop(Exception):
    """Raised by the baseline's only hook: the pass ends where collect's ends."""


def _stop(activation, hook):
    raise _Stop


def forward_to_same_depth(model, texts):
    """Tokenize, sort longest first, pad and run each batch up to collect's last hook."""
    last_hook = trajectory_hooks(model)[-1].name
    tokens = tokenize(model, texts)
    order = sorted(range(len(texts)), key=lambda i: -len(tokens[i]))
    with torch.inference_mode():
        for start in range(0, len(order), BATCH_SIZE):
            batch = [tokens[i] for i in order[start : start + BATCH_SIZE]]
            padded, mask = pad_tokens(batch, pad_token_id(model))
            try:
                model.run_with_hooks(
                    padded, fwd_hooks=[(last_hook, _stop)], attention_mask=mask, return_type=None
                )
            except _Stop:
                pass


def bench(name, model, texts):
    runs = interleaved_runs(
        {
            "collect": lambda: tld.collect(model, texts, batch_size=BATCH_SIZE, progress=False),
            "same pass, no reads": lambda: forward_to_same_depth(model, texts),
        },
        REPEATS,
    )
    print(f"\n{name}: {len(texts)} texts, batch {BATCH_SIZE}, {REPEATS} interleaved rounds")
    for contender, seconds in runs.items():
        print(
            f"  {contender:<20} median {statistics.median(seconds) * 1e3:8.1f} ms "
            f"(range {min(seconds) * 1e3:.1f}-{max(seconds) * 1e3:.1f})"
        )
    ratios = [a / b for a, b in zip(runs["collect"], runs["same pass, no reads"], strict=True)]
    verdict = "met" if statistics.median(ratios) <= TARGET else "NOT met"
    print(
        f"  collect / same pass without reads: "
        f"{ratio_summary(runs['collect'], runs['same pass, no reads'])} "
        f"(target <= {TARGET:.2f}x: {verdict})"
    )


def main():
    print(machine())
    texts = tld.data.python_docs()[:N_TEXTS]
    bench("default model", load_model(), texts)
    with tempfile.TemporaryDirectory() as folder:
        llama = load_model(build_tiny_model("llama", folder))
        bench("tiny Llama (4 layers, d_model 64)", llama, texts)


if __name__ == "__main__":
    main()
