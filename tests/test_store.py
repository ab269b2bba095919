"""DynamicsStore: equal to in-memory collection, atomic, resumable after SIGKILL, strict."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

import tl_dynamics as tld
from tl_dynamics.__main__ import main
from tl_dynamics._output import FILE_MODE, FOLDER_MODE
from tl_dynamics.collect import CollectSettings
from tl_dynamics.store import (
    MANIFEST_NAME,
    TEMP_PREFIX,
    TEXTS_NAME,
    DynamicsStore,
    append_to_store,
    collect_to_store,
    consolidate,
    prepare_store,
)
from tl_dynamics.streaming import moments

TOLERANCE = 1e-4  # max abs difference between batchings of the same text (test_collect's)
KILL_AFTER_SHARDS = 2  # the killed run has written this many shards, and not all of them
BATCH_DELAY_S = 0.3  # slows the killed run so that it is still running when killed
RUN_TIMEOUT_S = 120
QUIET = CollectSettings(progress=False)
PAIRS = CollectSettings(batch_size=2, progress=False)  # two texts per forward pass


def assert_same_cache(got, expected):
    assert got.labels == expected.labels and got.metadata == expected.metadata
    assert torch.equal(got.text_index, expected.text_index)
    assert torch.equal(got.position, expected.position)
    assert (got.resid - expected.resid).abs().max() <= TOLERANCE


@pytest.fixture(scope="module")
def llama(tiny_models):
    return tiny_models["llama"]


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"positions": "all", "shuffle": True, "seed": 3},
        {"positions": [0, -1], "include_final": True, "keep_texts": False, "corpus": "docs"},
    ],
)
def test_load_equals_in_memory_collect(llama, texts, tmp_path, settings):
    store = collect_to_store(
        llama,
        texts,
        tmp_path / "store",
        CollectSettings(batch_size=3, progress=False, **settings),
        shard_size=4,
    )
    assert len(store.shards) > 1 and store.complete
    expected = tld.collect(llama, texts, batch_size=5, progress=False, **settings)
    assert len(store) == expected.n_samples
    assert_same_cache(store.load(), expected)
    assert_same_cache(DynamicsStore.open(tmp_path / "store").load(), expected)


def test_collect_to_store_streams_to_a_store(llama, texts, tmp_path):
    store = tld.collect_to_store(llama, texts, tmp_path / "store", QUIET, shard_size=4)
    assert isinstance(store, DynamicsStore) and store.complete
    assert_same_cache(store.load(), tld.collect(llama, texts, progress=False))


def test_shards_are_in_text_order_and_hold_every_text_once(llama, texts, tmp_path):
    store = collect_to_store(
        llama, texts, tmp_path, CollectSettings(batch_size=2, positions="all", progress=False),
        shard_size=3,
    )
    seen = []
    for record, chunk in zip(store.shards, store.iter_shards(), strict=True):
        assert chunk.labels == store.labels and chunk.n_samples == record.rows
        assert torch.equal(
            torch.unique_consecutive(chunk.text_index), torch.tensor(record.text_index)
        )
        assert torch.equal(chunk.text_index, chunk.text_index.sort().values)
        seen.extend(record.text_index)
    assert sorted(seen) == list(range(len(texts))) and store.missing_texts() == []


def test_resume_runs_only_the_missing_texts(llama, texts, tmp_path):
    store = prepare_store(llama, texts, tmp_path)
    first = append_to_store(
        llama, texts, store, [7, 2, 9], CollectSettings(batch_size=2, progress=False), shard_size=2
    )
    assert len(first) == 2 and sorted(t for r in first for t in r.text_index) == [2, 7, 9]
    partial = DynamicsStore.open(tmp_path)
    assert not partial.complete and partial.missing_texts() == [
        i for i in range(12) if i not in (2, 7, 9)
    ]
    resumed = collect_to_store(llama, texts, tmp_path, QUIET, shard_size=4)
    assert resumed.shards[: len(first)] == tuple(first)  # kept, not run again
    assert all(not set(r.text_index) & {2, 7, 9} for r in resumed.shards[len(first) :])
    assert_same_cache(resumed.load(), tld.collect(llama, texts, progress=False))
    assert collect_to_store(llama, texts, tmp_path, QUIET).shards == resumed.shards


KILLABLE_RUN = f"""
import sys, time
import tl_dynamics.store as store
from tl_dynamics.__main__ import main

run_batches = store.iter_batches

def slow_batches(*args, **kwargs):
    for batch in run_batches(*args, **kwargs):
        time.sleep({BATCH_DELAY_S})
        yield batch

store.iter_batches = slow_batches
main(sys.argv[1:])
"""


def listed_shards(out):
    try:
        return json.loads((out / MANIFEST_NAME).read_text())["shards"]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_sigkill_then_rerun_gives_every_text_exactly_once(
    llama, tiny_model_folders, texts, tmp_path
):
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n\n".join(texts))
    out = tmp_path / "store"
    command = ["collect", "--model", str(tiny_model_folders["llama"]), "--texts", str(corpus)]
    command += ["--out", str(out), "--batch-size", "2", "--shard-size", "2", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    process = subprocess.Popen([sys.executable, "-c", KILLABLE_RUN, *command], env=env)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(listed_shards(out)) < KILL_AFTER_SHARDS and process.poll() is None:
        assert time.monotonic() < deadline, "the run wrote no shards in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed = DynamicsStore.open(out)
    assert 0 < len(killed.text_indices()) < len(texts)
    # what a kill can leave: a temporary file, and a shard renamed but never listed
    (out / f"{TEMP_PREFIX}shard-r0000-000099.safetensors.123").write_bytes(b"half written")
    shutil.copy(out / killed.shards[0].file, out / "shard-r0000-000099.safetensors")

    assert main(command) == 0  # the same command again

    store = DynamicsStore.open(out)
    listed = sorted(record.file for record in store.shards)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, TEXTS_NAME, *listed])
    assert set(killed.shards) <= set(store.shards)
    assert store.text_indices() == list(range(len(texts)))  # each once: open() checks overlaps
    expected = tld.collect(llama, texts, corpus=str(corpus), progress=False)
    assert_same_cache(store.load(), expected)


def test_partial_manifests_are_read_then_consolidated(llama, texts, tmp_path):
    store = prepare_store(llama, texts, tmp_path)
    one = CollectSettings(batch_size=1, progress=False)
    append_to_store(llama, texts, store, [0, 3], one, rank=1, shard_size=1)
    assert (tmp_path / "manifest-r0001.json").is_file()
    assert DynamicsStore.open(tmp_path).text_indices() == [0, 3]
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["shards"] == []
    merged = consolidate(tmp_path)
    assert not (tmp_path / "manifest-r0001.json").exists()
    assert [r.file for r in merged.shards] == [
        "shard-r0001-000000.safetensors",
        "shard-r0001-000001.safetensors",
    ]
    assert DynamicsStore.open(tmp_path).shards == merged.shards


@pytest.mark.parametrize(
    "change, named",
    [
        ({"seed": 1}, "seed"),
        ({"positions": "all"}, "positions"),
        ({"include_final": True}, "labels"),
    ],
)
def test_resuming_with_other_settings_is_refused(llama, texts, tmp_path, change, named):
    collect_to_store(llama, texts[:3], tmp_path, QUIET)
    with pytest.raises(ValueError, match=f"another run .*{named}"):
        collect_to_store(llama, texts[:3], tmp_path, CollectSettings(progress=False, **change))


def test_resuming_with_other_texts_or_model_is_refused(llama, tiny_models, texts, tmp_path):
    collect_to_store(llama, texts[:3], tmp_path, QUIET)
    with pytest.raises(ValueError, match=r"another run .*texts_sha256"):
        collect_to_store(llama, texts[1:4], tmp_path, QUIET)
    with pytest.raises(ValueError, match=r"another run .*model_name"):
        collect_to_store(tiny_models["gpt2"], texts[:3], tmp_path, QUIET)
    store = DynamicsStore.open(tmp_path)
    with pytest.raises(ValueError, match="another run"):
        append_to_store(llama, texts[1:4], store, [0], QUIET)
    renamed = CollectSettings(corpus="renamed", progress=False)
    corpus_renamed = collect_to_store(llama, texts[:3], tmp_path, renamed)
    assert corpus_renamed.complete  # corpus, texts kept or not, version: not checked


def test_a_folder_that_is_no_store_is_refused(llama, texts, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="neither a tl-dynamics store"):
        collect_to_store(llama, texts[:2], tmp_path, QUIET)
    with pytest.raises(FileNotFoundError, match="no tl-dynamics store"):
        DynamicsStore.open(tmp_path)


def test_an_inconsistent_store_is_refused(llama, texts, tmp_path):
    store = collect_to_store(llama, texts[:4], tmp_path, PAIRS, shard_size=2)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    copy = {**manifest["shards"][0], "file": "shard-r0000-000042.safetensors"}
    shutil.copy(tmp_path / store.shards[0].file, tmp_path / copy["file"])
    (tmp_path / MANIFEST_NAME).write_text(
        json.dumps({**manifest, "shards": [*manifest["shards"], copy]})
    )
    with pytest.raises(ValueError, match="inconsistent: text"):
        DynamicsStore.open(tmp_path)
    (tmp_path / copy["file"]).unlink()
    with pytest.raises(FileNotFoundError, match="is missing"):
        DynamicsStore.open(tmp_path)


@pytest.mark.parametrize("shard_size", [0, -3, 1.5, True])
def test_bad_shard_size_is_refused(llama, texts, tmp_path, shard_size):
    expected = r"shard_size must be an int >= 1 or None; got .*" + re.escape(repr(shard_size))
    with pytest.raises(ValueError, match=expected):
        collect_to_store(llama, texts[:2], tmp_path, QUIET, shard_size=shard_size)


def damage(path, how):
    """Truncate the file at ``path`` or flip one byte of its data (same size)."""
    content = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(content[: len(content) // 2]))
    else:
        content[-1] ^= 0xFF
        path.write_bytes(bytes(content))


def test_manifest_lists_each_shards_size_and_sha256(llama, texts, tmp_path):
    store = collect_to_store(llama, texts[:4], tmp_path, PAIRS, shard_size=2)
    for record in store.shards:
        content = (tmp_path / record.file).read_bytes()
        assert record.size == len(content)
        assert record.sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_shard_is_named_with_the_repair_command(llama, texts, tmp_path, how):
    store = collect_to_store(llama, texts[:4], tmp_path, PAIRS, shard_size=2)
    bad = store.shards[1].file
    damage(tmp_path / bad, how)
    readers = [lambda: DynamicsStore.open(tmp_path).load()]
    readers.append(lambda: list(DynamicsStore.open(tmp_path).iter_shards()))
    readers.append(lambda: moments(DynamicsStore.open(tmp_path)))
    for read in readers:
        with pytest.raises(ValueError, match=rf"shard '{bad}' .*damaged.*'tl-dynamics collect"):
            read()


def test_resume_collects_the_texts_of_a_damaged_or_missing_shard_again(
    llama, texts, tmp_path
):
    expected = tld.collect(llama, texts, positions="all", progress=False)
    store = collect_to_store(
        llama, texts, tmp_path, CollectSettings(positions="all", batch_size=2, progress=False),
        shard_size=5,
    )
    damaged, missing = store.shards[0], store.shards[2]
    damage(tmp_path / damaged.file, "flip")
    (tmp_path / missing.file).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{missing.file}.*to repair the store"):
        DynamicsStore.open(tmp_path)
    with pytest.warns(UserWarning, match="collected again") as warned:
        repaired = collect_to_store(
            llama, texts, tmp_path, CollectSettings(positions="all", progress=False)
        )
    named = sorted(str(w.message).split("'")[1] for w in warned)
    assert named == sorted([damaged.file, missing.file])
    assert repaired.text_indices() == list(range(len(texts)))  # each once
    assert damaged not in repaired.shards and missing not in repaired.shards
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [MANIFEST_NAME, TEXTS_NAME, *(r.file for r in repaired.shards)]
    )
    assert_same_cache(repaired.load(), expected)


def test_rerunning_collect_on_a_truncated_shard_repairs_the_store(
    llama, tiny_model_folders, texts, tmp_path
):
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n\n".join(texts[:6]))
    out = tmp_path / "store"
    command = ["collect", "--model", str(tiny_model_folders["llama"]), "--texts", str(corpus)]
    command += ["--out", str(out), "--shard-size", "2", "--batch-size", "2", "--quiet"]
    assert main(command) == 0
    damage(out / DynamicsStore.open(out).shards[0].file, "truncate")
    with pytest.warns(UserWarning, match="collected again"):
        assert main(command) == 0
    expected = tld.collect(llama, texts[:6], corpus=str(corpus), progress=False)
    assert_same_cache(DynamicsStore.open(out).load(), expected)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"format": "tl-dynamics-store", "form', "is not a tl-dynamics store manifest (not JSON"),
        ('{"format": "tl-dynamics-store", "format_version": "1"}', "format_version '1'"),
        ('{"format": "tl-dynamics-store", "format_version": 1, "shards": [{}]}', "is damaged"),
        ('{"format": "tl-dynamics-store", "format_version": 1, "shards": []}', "is damaged"),
        ("[1, 2]", "is not a tl-dynamics store manifest"),
    ],
)
def test_a_bad_manifest_is_named(llama, texts, tmp_path, content, message):
    (tmp_path / MANIFEST_NAME).write_text(content)
    manifest = str(tmp_path / MANIFEST_NAME)
    with pytest.raises(ValueError, match=f"{re.escape(manifest)}.*{re.escape(message)}"):
        DynamicsStore.open(tmp_path)
    with pytest.raises(ValueError, match=re.escape(manifest)):
        collect_to_store(llama, texts[:2], tmp_path, QUIET)


def test_shards_and_manifest_follow_the_umask(llama, texts, tmp_path):
    store = collect_to_store(llama, texts[:4], tmp_path / "store", PAIRS, shard_size=2)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in store.path.iterdir()}
    assert modes == dict.fromkeys(modes, FILE_MODE) and len(modes) == 4  # manifest, texts, 2 shards
    assert stat.S_IMODE(store.path.stat().st_mode) == FOLDER_MODE


def test_texts_are_written_once_beside_a_small_manifest(llama, texts, tmp_path):
    store = collect_to_store(llama, texts, tmp_path, PAIRS, shard_size=2)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["metadata"]["texts"] is None and manifest["texts_file"] == TEXTS_NAME
    assert not any(text in (tmp_path / MANIFEST_NAME).read_text() for text in texts)
    assert json.loads((tmp_path / TEXTS_NAME).read_text()) == list(texts)
    assert store.texts() == tuple(texts) and store.metadata.texts is None
    assert store.load().metadata.texts == tuple(texts)
    kept = collect_to_store(
        llama, texts, tmp_path / "without", CollectSettings(keep_texts=False, progress=False)
    )
    assert kept.texts() is None and not (tmp_path / "without" / TEXTS_NAME).exists()


def test_a_damaged_texts_file_is_named_and_a_rerun_repairs_it(llama, texts, tmp_path):
    collect_to_store(llama, texts, tmp_path, PAIRS, shard_size=2)
    (tmp_path / TEXTS_NAME).write_text(json.dumps(["another text"] * len(texts)))
    with pytest.raises(ValueError, match=f"{TEXTS_NAME}.*damaged.*SHA-256.*repair"):
        DynamicsStore.open(tmp_path).load()
    (tmp_path / TEXTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=f"{TEXTS_NAME}.*missing.*repair"):
        DynamicsStore.open(tmp_path).texts()
    repaired = collect_to_store(llama, texts, tmp_path, PAIRS, shard_size=2)
    assert repaired.texts() == tuple(texts)


def test_a_format_1_store_with_texts_in_its_manifest_is_read_and_resumed(llama, texts, tmp_path):
    """Stores written before texts.json kept the texts in the manifest's metadata."""
    expected = tld.collect(llama, texts, progress=False)
    collect_to_store(llama, texts, tmp_path, PAIRS, shard_size=2)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    first = manifest["shards"][:2]
    old = {**manifest, "format_version": 1, "shards": first}
    old["metadata"] = {**manifest["metadata"], "texts": list(texts)}
    del old["texts_file"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(old))
    (tmp_path / TEXTS_NAME).unlink()
    store = DynamicsStore.open(tmp_path)
    assert store.texts_file is None and store.texts() == tuple(texts)
    resumed = collect_to_store(llama, texts, tmp_path, PAIRS, shard_size=2)
    assert resumed.text_indices() == list(range(len(texts)))
    assert_same_cache(resumed.load(), expected)
