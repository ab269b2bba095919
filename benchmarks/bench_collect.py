"""What recording trajectories costs: ``collect`` against plain forward passes.

``tl_dynamics.collect`` tokenizes the texts, pads them into batches (longest first) and
runs the model with a hook on every ``hook_resid_pre``/``hook_resid_mid`` that copies the
kept rows, stopping the pass at the last hook it needs. Its contenders run the *same*
padded batches (built once, outside the timing) with no hook at all:

* **bridge forward**: ``model(tokens, attention_mask=mask, return_type=None)``, the
  whole TransformerLens model, output head included;
* **backbone forward**: the Hugging Face base model under the bridge (``model.bert``,
  ``model.model``): every block, no output head: the least work that can produce the
  trajectories.

Target: ``collect <= 1.10 x`` a plain forward pass. Contenders run interleaved, best of
:data:`REPEATS` rounds each (see ``_common.py``).

Run from the repository root::

    python benchmarks/bench_collect.py
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from _common import interleaved, machine

import tl_dynamics as tld
from tl_dynamics.collect import pad_token_id, pad_tokens, tokenize
from tl_dynamics.models import build_tiny_model, load_model

N_TEXTS = 128  # texts of the offline corpus per run
BATCH_SIZE = 16  # collect's default
REPEATS = 3  # interleaved rounds; the best of each is kept
TARGET = 1.10  # collect / forward, from the issue


def padded_batches(model, texts):
    """The batches collect builds: tokenized alone, sorted longest first, right-padded."""
    tokens = tokenize(model, texts)
    order = sorted(range(len(texts)), key=lambda i: -len(tokens[i]))
    groups = [order[start : start + BATCH_SIZE] for start in range(0, len(order), BATCH_SIZE)]
    return [pad_tokens([tokens[i] for i in group], pad_token_id(model)) for group in groups]


def bench(name, model, texts):
    batches = padded_batches(model, texts)
    backbone = getattr(model.original_model, model.original_model.base_model_prefix)

    @torch.inference_mode()
    def bridge_forward():
        for tokens, mask in batches:
            model(tokens, attention_mask=mask, return_type=None)

    @torch.inference_mode()
    def backbone_forward():
        for tokens, mask in batches:
            backbone(input_ids=tokens, attention_mask=mask)

    best = interleaved(
        {
            "collect": lambda: tld.collect(model, texts, batch_size=BATCH_SIZE, progress=False),
            "tokenize": lambda: tokenize(model, texts),
            "bridge forward": bridge_forward,
            "backbone forward": backbone_forward,
        },
        REPEATS,
    )
    print(f"\n{name}: {len(texts)} texts, batch {BATCH_SIZE}, best of {REPEATS} rounds")
    for contender, seconds in best.items():
        print(f"  {contender:<18} {seconds * 1e3:9.1f} ms")
    for baseline in ("bridge forward", "backbone forward"):
        ratio = best["collect"] / best[baseline]
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"  collect / {baseline:<17} {ratio:5.2f}x  (target <= {TARGET:.2f}x: {verdict})")


def main():
    print(machine())
    texts = tld.data.python_docs()[:N_TEXTS]
    bench("MiniLM (BERT, 6 layers, d_model 384)", load_model(), texts)
    with tempfile.TemporaryDirectory() as folder:
        llama = load_model(build_tiny_model("llama", folder))
        bench("tiny Llama (4 layers, d_model 64)", llama, texts)


if __name__ == "__main__":
    main()
