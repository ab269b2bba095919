"""Peak memory of collecting 1,000 vs 10,000 texts: streamed to a store, or held in memory.

``tl_dynamics.store.collect_to_store`` writes a shard to disk every ``shard_size``
samples, so its memory should not grow with the number of texts; ``tl_dynamics.collect``
holds every trajectory (and briefly a second copy while it sorts them). Each run starts
in a fresh process, collects short synthetic texts through a small random Llama
(8 layers, d_model 128: 16 sublayers x 128 float32 = 8 KiB per sample) and reports the
peak resident set size of the collection: the kernel's high-water mark (``VmHWM``) is
reset once the model is loaded (``/proc/self/clear_refs``), so loading, whose own peak
can exceed the collection's, does not hide it. The peak includes Python, torch, the
model and the texts (built after the reset: the input counts against the bound too).

Each size runs :data:`REPEATS` times, interleaved, and the growth is the difference of
the medians of each size's peaks (one process's peak is bimodal: the memory freed after
loading the model is sometimes reused, sometimes not). Target: with streaming, peak RSS
grows from N = 1,000 to N = 10,000 by less than 10 % of the bytes the 10,000
trajectories would take in memory (80 MiB here, so 8 MiB). The bound is relative to the
trajectories, not to the process (~560 MiB of Python, torch and the model), so a store
that kept even a tenth of what it wrote would fail it.

Run from the repository root::

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from _common import machine

SIZES = (1_000, 10_000)  # texts per run
SHARD_SIZE = 500  # samples per shard: 4 MiB here; memory is bounded by this, not by N
BATCH_SIZE = 64  # texts per forward pass
TINY = {"n_layers": 8, "d_model": 128}  # 8 KiB per sample: 10,000 samples are 80 MiB
# Allowed growth of peak RSS from N = 1,000 to N = 10,000 (streaming), as a fraction of
# the in-memory bytes of the 10,000 trajectories (the bound).
TARGET = 0.10
SUBLAYERS_PER_LAYER = 2  # hook_resid_pre and hook_resid_mid
FLOAT32_BYTES = 4
# Fresh-process rounds per size: glibc's moving mmap threshold makes one process's peak
# RSS vary by several MiB from run to run, so a single pair of runs cannot decide.
REPEATS = 5


def trajectory_mib(n_texts: int) -> float:
    """MiB of ``n_texts`` last-token trajectories of the tiny model in float32."""
    per_sample = SUBLAYERS_PER_LAYER * TINY["n_layers"] * TINY["d_model"] * FLOAT32_BYTES
    return n_texts * per_sample / 2**20
WORDS = ["the", "a", "residual", "stream", "layer", "token", "model", "unit", "depth", "flows"]
WORDS_PER_TEXT = (4, 12)  # short texts keep the run fast


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` short distinct-enough texts of random words, reproducible from ``seed``."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(*WORDS_PER_TEXT))) for _ in range(n)]


def child(mode: str, n_texts: int, model_folder: str, out: str) -> None:
    """One measured run (in its own process): print peak RSS in MiB and seconds as JSON."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import tl_dynamics as tld
    from tl_dynamics.store import collect_to_store

    model = tld.models.load_model(model_folder)
    reset_peak_rss()
    texts = synthetic_texts(n_texts)
    start = time.perf_counter()
    if mode == "store":
        settings = tld.CollectSettings(batch_size=BATCH_SIZE, progress=False)
        collect_to_store(model, texts, out, settings, shard_size=SHARD_SIZE)
    else:
        tld.collect(model, texts, batch_size=BATCH_SIZE, progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mib": peak_rss_mib(), "seconds": seconds}))


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_mib() -> float:
    """Peak resident set size since :func:`reset_peak_rss`, in MiB (``VmHWM``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark needs Linux")


def measure(mode: str, n_texts: int, model_folder: str, scratch: str) -> dict[str, float]:
    out = os.path.join(scratch, f"{mode}-{n_texts}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, __file__, "--child", mode, str(n_texts), model_folder, out]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main():
    from tl_dynamics.models import build_tiny_model

    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        folder = str(build_tiny_model("llama", os.path.join(scratch, "llama"), **TINY))
        print(f"\ntiny Llama {TINY}, batch {BATCH_SIZE}, shard_size {SHARD_SIZE}")
        print("one fresh process per run; peak RSS (wall time of the collection)")
        print(f"{REPEATS} rounds, each a fresh process per size, interleaved")
        for mode, label in (("store", "streamed to a store"), ("memory", "tld.collect in memory")):
            rounds = [{n: measure(mode, n, folder, scratch) for n in SIZES} for _ in range(REPEATS)]
            peaks = {n: [r[n]["peak_mib"] for r in rounds] for n in SIZES}
            cells = "   ".join(
                f"N={n:>6,}: median {statistics.median(p):6.1f} MiB (range {min(p):.1f}-{max(p):.1f})"
                for n, p in peaks.items()
            )
            growths = sorted(r[SIZES[-1]]["peak_mib"] - r[SIZES[0]]["peak_mib"] for r in rounds)
            growth = statistics.median(peaks[SIZES[-1]]) - statistics.median(peaks[SIZES[0]])
            share = growth / trajectory_mib(SIZES[-1])
            verdict = (
                ("met" if share < TARGET else "NOT met") if mode == "store" else "for contrast"
            )
            print(
                f"  {label:<22} {cells}\n  {'':<22} growth of the medians {growth:+.1f} MiB "
                f"(within a round: {growths[0]:+.1f} to {growths[-1]:+.1f}) = {share:+.1%} of the "
                f"{trajectory_mib(SIZES[-1]):.0f} MiB of trajectories (target < {TARGET:.0%}: "
                f"{verdict})"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
