"""Data-parallel collection: 2 CPU processes on gloo under torchrun fill one store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import tl_dynamics as tld
from tl_dynamics.__main__ import main
from tl_dynamics._output import writer_lock
from tl_dynamics.collect import CollectSettings
from tl_dynamics.distributed import collect_distributed, init_distributed
from tl_dynamics.store import (
    MANIFEST_NAME,
    TEXTS_NAME,
    DynamicsStore,
    append_to_store,
    collect_to_store,
    prepare_store,
)

N_PROCESSES = 2
RUN_TIMEOUT_S = 180
TOLERANCE = 1e-4  # max abs difference between batchings of the same text (test_collect's)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*arguments: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m tl_dynamics collect ...`` on 127.0.0.1."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
    launcher += ["--nproc_per_node", str(N_PROCESSES), "--master_addr", "127.0.0.1"]
    launcher += ["--master_port", str(free_port()), "-m", "tl_dynamics", "collect", *arguments]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run(launcher, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


@pytest.fixture
def corpus(texts, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n\n".join(texts))
    return str(path)


@pytest.fixture
def run_arguments(tiny_model_folders, corpus):
    arguments = ["--model", str(tiny_model_folders["llama"]), "--texts", corpus, "--quiet"]
    return [
        *arguments,
        "--batch-size",
        "2",
        "--shard-size",
        "3",
        "--shuffle",
        "--positions",
        "0,-1",
    ]


def test_two_ranks_resume_a_store_to_equal_a_single_process_run(
    tiny_models, texts, tmp_path, corpus, run_arguments
):
    llama = tiny_models["llama"]
    settings = {"positions": [0, -1], "shuffle": True, "corpus": corpus, "progress": False}
    single = collect_to_store(
        llama, texts, tmp_path / "single", CollectSettings(batch_size=4, **settings)
    )
    # a run interrupted after texts 1 and 4, resumed by two ranks
    out = tmp_path / "parallel"
    started = prepare_store(
        llama, texts, out, CollectSettings(positions=[0, -1], shuffle=True, corpus=corpus)
    )
    before = append_to_store(llama, texts, started, [1, 4], CollectSettings(**settings))

    finished = torchrun(*run_arguments, "--out", str(out))

    assert finished.returncode == 0, finished.stderr[-3000:]
    store = DynamicsStore.open(out)
    assert store.shards[: len(before)] == tuple(before)
    assert {record.rank for record in store.shards[len(before) :]} == {0, 1}
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(
        [MANIFEST_NAME, TEXTS_NAME, *(record.file for record in store.shards)]
    )  # no partials
    by_rank = {
        rank: {t for r in store.shards[len(before) :] if r.rank == rank for t in r.text_index}
        for rank in (0, 1)
    }
    missing = [t for t in range(len(texts)) if t not in (1, 4)]
    assert by_rank == {0: set(missing[0::2]), 1: set(missing[1::2])}  # rank r takes r::K
    merged, expected = store.load(), single.load()
    assert merged.metadata == expected.metadata and merged.labels == expected.labels
    assert torch.equal(merged.text_index, expected.text_index)
    assert torch.equal(merged.position, expected.position)
    assert (merged.resid - expected.resid).abs().max() <= TOLERANCE


def test_a_refused_store_stops_every_rank_without_hanging(
    tiny_models, texts, tmp_path, run_arguments
):
    out = tmp_path / "store"
    collect_to_store(tiny_models["llama"], texts, out, CollectSettings(seed=5, progress=False))
    finished = torchrun(*run_arguments, "--out", str(out))
    assert finished.returncode != 0
    assert "holds a store of another run" in finished.stderr


def test_a_locked_store_stops_every_rank_naming_the_holder(tmp_path, run_arguments):
    out = tmp_path / "store"
    with writer_lock(out):  # this test's process holds it: another run is writing
        finished = torchrun(*run_arguments, "--out", str(out))
    assert finished.returncode != 0
    assert f"another tl-dynamics run (process {os.getpid()}" in finished.stderr
    assert not out.exists()


def add_one(activation, hook):
    """An intervention: add 1 to every unit."""
    return activation + 1.0


def test_collect_distributed_takes_fwd_hooks(tiny_models, texts, tmp_path):
    llama = tiny_models["llama"]
    hooks = [(tld.sublayer_hook_name(llama, 2), add_one)]
    settings = CollectSettings(batch_size=2, progress=False)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    try:
        store = collect_distributed(llama, texts[:4], tmp_path / "store", settings, fwd_hooks=hooks)
    finally:
        dist.destroy_process_group()
    expected = tld.collect(llama, texts[:4], batch_size=2, progress=False, fwd_hooks=hooks)
    loaded = store.load()
    assert loaded.metadata == expected.metadata and loaded.metadata.interventions
    assert (loaded.resid - expected.resid).abs().max() <= TOLERANCE


def test_collect_distributed_needs_a_process_group(tiny_models, texts, tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="init_distributed"):
        collect_distributed(tiny_models["llama"], texts, tmp_path)
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed()


def test_bad_input_prints_one_line_and_exits_2(tmp_path, capsys):
    status = main(["collect", "--texts", str(tmp_path / "missing.txt"), "--out", str(tmp_path)])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("tl-dynamics: error: texts") and "neither a corpus" in error
    assert len(error.strip().splitlines()) == 1
