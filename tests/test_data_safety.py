"""Data safety of the `tl-dynamics` command: what it replaces, where it writes, what it leaves.

Each test is a case of issue 12 tried as a careless user would; most call the CLI's
``main`` in-process (exit status and stderr as the shell sees them), the ones about
signals and the umask run it as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

import tl_dynamics.models
import tl_dynamics.store
from tl_dynamics import _output
from tl_dynamics.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, main
from tl_dynamics.data import python_docs

RUN_TIMEOUT_S = 180
SUBPROCESS_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def one_line_error(capsys, *fragments: str) -> str:
    """The stderr of the last command ends in one ``tl-dynamics: error:`` line with ``fragments``.

    (Progress bars of model loading may come before it; no traceback may.)
    """
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr, stderr
    ours = [line for line in stderr.splitlines() if line.startswith("tl-dynamics")]
    assert len(ours) == 1 and stderr.strip().endswith(ours[0]), stderr
    error = ours[0]
    assert error.startswith("tl-dynamics: error:"), error
    for fragment in fragments:
        assert fragment in error, error
    return error


def snapshot(folder):
    """Every file under ``folder`` with its bytes: equal snapshots mean nothing changed."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad --out was refused")

    monkeypatch.setattr(tl_dynamics.models, "load_model", refuse)


@pytest.fixture
def comparison(llama_report, tmp_path):
    """A folder written by `tl-dynamics compare` (cheap: no model runs)."""
    out = tmp_path / "comparison"
    assert main(["compare", str(llama_report), "--out", str(out)]) == 0
    return out


# 1. --overwrite replaces only what tl-dynamics wrote


def test_written_folders_carry_a_marker(minilm_report, comparison):
    for folder, kind in ((minilm_report, _output.REPORT_KIND), (comparison, _output.COMPARE_KIND)):
        marker = json.loads((folder / _output.MARKER_NAME).read_text())
        assert marker["kind"] == kind and marker["version"] == tl_dynamics.__version__


def test_overwrite_refuses_a_folder_of_the_users_own(llama_report, tmp_path, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    before = snapshot(thesis)
    command = ["compare", str(llama_report), "--out", str(thesis), "--overwrite"]
    assert main(command) == EXIT_BAD_INPUT
    one_line_error(capsys, "not written by tl-dynamics", _output.MARKER_NAME)
    assert snapshot(thesis) == before


def test_overwrite_refuses_an_input_of_the_same_command(
    minilm_report, llama_report, tmp_path, capsys
):
    copy = tmp_path / "llama"
    shutil.copytree(llama_report, copy)
    before = snapshot(copy)
    command = ["compare", str(minilm_report), str(copy), "--out", str(copy), "--overwrite"]
    assert main(command) == EXIT_BAD_INPUT
    one_line_error(capsys, "an input of this command")
    assert snapshot(copy) == before


def test_overwrite_refuses_a_folder_holding_the_texts_file(
    comparison, capsys, no_model_loading
):
    texts = comparison / "texts.txt"
    texts.write_text("\n\n".join(python_docs()[:4]))
    command = ["report", "--texts", str(texts), "--out", str(comparison), "--overwrite"]
    assert main([*command, "--quiet"]) == EXIT_BAD_INPUT
    one_line_error(capsys, "an input of this command")
    assert texts.is_file()


@pytest.mark.parametrize("out", [".", ".."])
def test_overwrite_refuses_the_working_directory_and_above(
    llama_report, comparison, monkeypatch, capsys, out
):
    inner = comparison / "inner"
    inner.mkdir()
    monkeypatch.chdir(comparison if out == "." else inner)
    before = snapshot(comparison.parent)
    assert main(["compare", str(llama_report), "--out", out, "--overwrite"]) == EXIT_BAD_INPUT
    one_line_error(capsys, "working directory")
    assert snapshot(comparison.parent) == before
    assert not [p for p in comparison.parent.iterdir() if ".old-" in p.name]


def test_overwrite_replaces_a_folder_tl_dynamics_wrote(minilm_report, comparison, tmp_path):
    command = ["compare", str(minilm_report), "--out", str(comparison), "--overwrite"]
    assert main(command) == 0
    record = json.loads((comparison / "compare.json").read_text())
    assert list(record["reports"]) == ["all-MiniLM-L6-v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison"]


# 2. an impossible --out fails before the model is loaded


@pytest.mark.parametrize("command", ["report", "collect"])
def test_an_unwritable_out_fails_before_the_model_loads(
    command, tmp_path, capsys, no_model_loading
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out, message in (("/proc/no-such-process/rep", "not writable"), (blocker / "rep", "is a file")):
        assert main([command, "--out", str(out), "--quiet"]) == EXIT_BAD_INPUT
        one_line_error(capsys, "cannot write", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_parent_fails_before_the_model_loads(tmp_path, capsys, no_model_loading):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["report", "--out", str(locked / "rep"), "--quiet"]) == EXIT_BAD_INPUT
        one_line_error(capsys, "not writable")
    finally:
        locked.chmod(0o755)


# 4. files follow the umask


def modes(folder):
    """``{relative path: permission bits}`` of ``folder`` and everything inside it."""
    paths = [folder, *folder.rglob("*")]
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in paths}


def test_report_files_follow_the_umask(minilm_report):
    expected = {
        name: _output.FOLDER_MODE if name == "." else _output.FILE_MODE
        for name in modes(minilm_report)
    }
    assert modes(minilm_report) == expected


@pytest.mark.slow
def test_compare_follows_another_umask_even_when_overwriting(llama_report, tmp_path):
    out = tmp_path / "shared"
    command = [sys.executable, "-m", "tl_dynamics", "compare", str(llama_report), "--out", str(out)]
    for extra in ([], ["--overwrite"]):
        subprocess.run(
            [*command, *extra], env=SUBPROCESS_ENV, check=True, timeout=RUN_TIMEOUT_S,
            preexec_fn=lambda: os.umask(0o027),
        )
        found = modes(out)
        assert found.pop(".") == 0o750
        assert set(found.values()) == {0o640}


# 5. compare labels every report, distinctly


def test_compare_keeps_two_reports_of_one_model_apart(llama_report, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(llama_report, tmp_path / name / "rep")
    out = tmp_path / "both"
    command = ["compare", str(tmp_path / "a" / "rep"), str(tmp_path / "b" / "rep")]
    assert main([*command, "--out", str(out)]) == 0
    labels = list(json.loads((out / "compare.json").read_text())["reports"])
    assert len(labels) == 2 and labels[0] != labels[1]
    assert "a/rep" in labels[0] and "b/rep" in labels[1]


def test_compare_labels_reports_of_different_models_by_model(minilm_report, llama_report, tmp_path):
    out = tmp_path / "two"
    assert main(["compare", str(minilm_report), str(llama_report), "--out", str(out)]) == 0
    labels = list(json.loads((out / "compare.json").read_text())["reports"])
    assert labels[0] == "all-MiniLM-L6-v2" and "(" not in labels[1]


def test_compare_refuses_the_same_report_twice(llama_report, tmp_path, capsys):
    twice = [str(llama_report), f"{llama_report}/"]
    assert main(["compare", *twice, "--out", str(tmp_path / "c")]) == EXIT_BAD_INPUT
    one_line_error(capsys, "given twice")
    assert list(tmp_path.iterdir()) == []


# 6. leftovers


def dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_write_removes_stale_partials_of_killed_runs(llama_report, tmp_path):
    out = tmp_path / "comparison"
    stale = tmp_path / f".comparison.partial-{dead_pid()}-x1y2"
    retired = tmp_path / f".comparison.old-{dead_pid()}-z3"
    running = tmp_path / f".comparison.partial-{os.getpid()}-w4"  # a live writer's
    unrelated = tmp_path / ".comparison.partial-mine"  # not a name this tool gives
    for folder in (stale, retired, running, unrelated):
        folder.mkdir()
        (folder / "metrics.json").write_text("{}")
    assert main(["compare", str(llama_report), "--out", str(out)]) == 0
    assert not stale.exists() and not retired.exists()
    assert running.exists() and unrelated.exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--limit", "-1"], "--limit: must be a positive integer"),
        (["--limit", "0"], "--limit: must be a positive integer"),
        (["--batch-size", "0"], "--batch-size: must be a positive integer"),
        (["--shard-size", "0"], "--shard-size: must be a positive integer"),
    ],
)
def test_collect_refuses_bad_arguments_before_creating_anything(
    tmp_path, capsys, arguments, message
):
    out = tmp_path / "store"
    with pytest.raises(SystemExit) as exit_:
        main(["collect", "--out", str(out), "--quiet", *arguments])
    assert exit_.value.code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_collect_refused_for_its_positions_leaves_no_store(
    tiny_model_folders, tmp_path, capsys
):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n\n".join(python_docs()[:3]))
    out = tmp_path / "store"
    command = ["collect", "--model", str(tiny_model_folders["llama"]), "--texts", str(texts)]
    command += ["--out", str(out), "--quiet"]
    assert main([*command, "--positions", "500"]) == EXIT_BAD_INPUT
    one_line_error(capsys, "positions [500] fall outside")
    assert not out.exists()
    assert main([*command, "--positions", "-1"]) == 0  # the corrected run is not blocked
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) == 1


# 7. text inputs (see also test_data.py)


def test_collect_reads_an_upper_case_json_array_of_texts(tmp_path, tiny_model_folders):
    texts = tmp_path / "MINE.JSON"
    texts.write_text(json.dumps(python_docs()[:5]))
    out = tmp_path / "store"
    command = ["collect", "--model", str(tiny_model_folders["gpt2"]), "--texts", str(texts)]
    assert main([*command, "--out", str(out), "--quiet"]) == 0
    assert tl_dynamics.store.DynamicsStore.open(out).texts() == tuple(python_docs()[:5])


# 8. one line instead of a traceback


def test_offline_wikitext_fails_at_once_and_names_python_docs(monkeypatch, tmp_path, capsys):
    import tl_dynamics.data

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(tl_dynamics.data, "hub_reachable", lambda: False)
    fake = type(sys)("datasets")

    def load_dataset(*args, **kwargs):
        raise AssertionError("datasets was asked (and would retry for ~30 s)")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    out = tmp_path / "never"
    assert main(["report", "--texts", "wikitext", "--out", str(out), "--quiet"]) == EXIT_BAD_INPUT
    one_line_error(capsys, "cannot reach the Hugging Face hub", "--texts python-docs")
    assert not out.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda record: record.pop("conditions"), "has no ['conditions']"),
        (lambda record: record["conditions"]["original"].pop("labels"), "['labels']"),
        (lambda record: record.update(schema_version="1"), "schema_version '1'"),
        (lambda record: record["model"].pop("model_name"), "['model_name']"),
    ],
)
def test_compare_names_the_file_of_a_damaged_metrics_json(
    llama_report, tmp_path, capsys, change, message
):
    damaged = tmp_path / "damaged"
    shutil.copytree(llama_report, damaged)
    record = json.loads((damaged / "metrics.json").read_text())
    change(record)
    (damaged / "metrics.json").write_text(json.dumps(record))
    assert main(["compare", str(damaged), "--out", str(tmp_path / "c")]) == EXIT_BAD_INPUT
    one_line_error(capsys, str(damaged / "metrics.json"), message)


def test_compare_names_a_metrics_json_that_is_no_json(llama_report, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(llama_report, damaged)
    (damaged / "metrics.json").write_text('{"schema_version": 1, "mod')
    assert main(["compare", str(damaged), "--out", str(tmp_path / "c")]) == EXIT_BAD_INPUT
    one_line_error(capsys, str(damaged / "metrics.json"), "not a tl-dynamics report (not JSON")


WRITE_STAGE_FLAG = "in-write-stage"

INTERRUPTIBLE_COMPARE = f"""
import pathlib, sys, time
import tl_dynamics.report.compare as compare
from tl_dynamics.cli import main

write_record = compare.write_record

def slow_write_record(path, record):
    write_record(path, record)
    pathlib.Path(sys.argv[1], {WRITE_STAGE_FLAG!r}).touch()
    time.sleep({RUN_TIMEOUT_S})

compare.write_record = slow_write_record
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_ctrl_c_prints_one_line_exits_130_and_leaves_nothing(llama_report, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    command = ["compare", str(llama_report), "--out", str(work / "comparison")]
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE_COMPARE, str(tmp_path), *command],
        env=SUBPROCESS_ENV, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (tmp_path / WRITE_STAGE_FLAG).exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "compare never reached its write stage"
        time.sleep(0.05)
    assert [p.name for p in work.iterdir() if ".partial-" in p.name]  # mid-write
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=RUN_TIMEOUT_S)
    assert process.returncode == EXIT_INTERRUPTED
    assert error.strip().splitlines() == ["tl-dynamics: interrupted; nothing half-written was left"]
    assert list(work.iterdir()) == []


def test_an_interrupted_collect_keeps_whole_shards_only(
    tiny_model_folders, tmp_path, monkeypatch, capsys
):
    import tl_dynamics.store

    batches = tl_dynamics.store.iter_batches

    def interrupted_after_one_batch(*args, **kwargs):
        yield next(batches(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(tl_dynamics.store, "iter_batches", interrupted_after_one_batch)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n\n".join(python_docs()[:6]))
    out = tmp_path / "store"
    command = ["collect", "--model", str(tiny_model_folders["llama"]), "--texts", str(texts)]
    command += ["--out", str(out), "--quiet", "--batch-size", "2", "--shard-size", "2"]
    assert main(command) == EXIT_INTERRUPTED
    assert "run the same command again to resume" in capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "shard-r0000-000000.safetensors", "texts.json"]
    monkeypatch.setattr(tl_dynamics.store, "iter_batches", batches)
    assert main(command) == 0
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) == 3
