"""Train a tiny Llama on the bundled corpus and save checkpoints at log-spaced steps.

A real, small training series for ``tl-dynamics series`` that runs offline on a CPU: a
Llama-architecture model of :data:`N_LAYERS` blocks of width :data:`D_MODEL`, with the
byte-level BPE tokenizer of :func:`tl_dynamics.models.build_tiny_model` (512 tokens,
trained on the same corpus), is trained by AdamW on next-token prediction over
:func:`tl_dynamics.data.python_docs` packed into windows of :data:`CONTEXT` tokens.
Checkpoints are written with ``save_pretrained`` (and the tokenizer) to ``OUT/stepN`` at
the steps of :data:`STEPS` (0 is the random initialisation), with ``OUT/losses.json``:
the training loss at every step (nats per token) and the held-out loss at every
checkpoint (the last :data:`HELDOUT_TEXTS` texts, never trained on).

Run from the repository root (82 s on one thread of this shared machine), then the series::

    python scripts/train_tiny_series.py runs/tiny-llama
    tl-dynamics series --checkpoints runs/tiny-llama/step0,runs/tiny-llama/step4,... --out runs/series
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from tl_dynamics.data import python_docs
from tl_dynamics.models import build_tiny_model

N_LAYERS = 4
D_MODEL = 64
CONTEXT = 64  # tokens per training window
BATCH = 16  # windows per step
LEARNING_RATE = 3e-3  # AdamW; a tiny model tolerates a large rate
STEPS = (0, 4, 16, 64, 256)  # log-spaced (factor 4), as Pythia's early checkpoints are
HELDOUT_TEXTS = 100  # the corpus' last texts: the held-out loss


def _windows(tokenizer, texts: list[str]) -> torch.Tensor:
    ids = [i for text in texts for i in tokenizer(text)["input_ids"]]
    n = len(ids) // CONTEXT
    return torch.tensor(ids[: n * CONTEXT]).reshape(n, CONTEXT)


def _loss(model, windows: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model(input_ids=windows, labels=windows).loss)


def train(out: str | Path, steps: tuple[int, ...] = STEPS, seed: int = 0) -> dict:
    """Train, writing ``out/step{N}`` for each of ``steps`` and ``out/losses.json``.

    Returns:
        The ``losses.json`` record: ``train`` (loss per step, nats per token),
        ``heldout`` (``{step: loss}`` at each checkpoint) and ``checkpoints`` (folders).
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = Path(out)
    initial = build_tiny_model("llama", out / f"step{steps[0]}", n_layers=N_LAYERS, d_model=D_MODEL, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(initial)
    model = LlamaForCausalLM.from_pretrained(initial)
    texts = python_docs()
    train_windows, heldout = _windows(tokenizer, texts[:-HELDOUT_TEXTS]), _windows(tokenizer, texts[-HELDOUT_TEXTS:])
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    record: dict = {"train": [], "heldout": {steps[0]: _loss(model, heldout)}, "checkpoints": [str(initial)]}
    for step in range(1, max(steps) + 1):
        batch = train_windows[torch.randint(len(train_windows), (BATCH,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        record["train"].append(loss.item())
        if step in steps:
            folder = out / f"step{step}"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            record["heldout"][step] = _loss(model, heldout)
            record["checkpoints"].append(str(folder))
    record["uniform_loss"] = math.log(len(tokenizer))
    (out / "losses.json").write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = train(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny-llama")
    print("held-out loss by step:", {k: round(v, 3) for k, v in result["heldout"].items()})
