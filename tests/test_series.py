"""Checkpoint series on a real, small training run: a tiny Llama trained here on the corpus."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import tl_dynamics as tld
from tl_dynamics.report import series as series_module
from tl_dynamics.cli import main
from tl_dynamics.findings import CONTRAST_VERDICTS, DYNAMICS_KEYS, contrasts, dynamics_findings
from tl_dynamics.errors import DynamicsInputError, OutputExistsError
from tl_dynamics.hooks import model_provenance
from tl_dynamics.report.measures import condition_measures
from tl_dynamics.report.series import CHECKPOINT_JSON, SERIES_HTML, SERIES_JSON, checkpoint_step, run_series

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parents[1] / "scripts" / "train_tiny_series.py"
TRAIN_STEPS = (0, 16, 96)  # a cheaper run than the script's default, same model and data
N_TEXTS = 30  # the findings' minimum for a bootstrap interval
N_SHUFFLES = 50  # of the rotation null: enough to run the finding, cheap


def _script():
    spec = importlib.util.spec_from_file_location("train_tiny_series", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    try:
        return _script().train(tmp_path_factory.mktemp("tiny-llama"), steps=TRAIN_STEPS)
    finally:
        torch.set_num_threads(2)


@pytest.fixture(scope="module")
def series(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "out"
    first, _, last = trained["checkpoints"]
    return run_series([first, last], out, n_texts=N_TEXTS, n_shuffles=N_SHUFFLES, progress=False)


def test_training_loss_falls(trained):
    heldout = [trained["heldout"][step] for step in TRAIN_STEPS]
    assert heldout[0] == pytest.approx(trained["uniform_loss"], abs=0.2)  # random init: uniform
    assert heldout[1] < heldout[0] and heldout[2] < heldout[1] - 0.5
    assert sum(trained["train"][-10:]) < sum(trained["train"][:10]) - 10 * 1.0


def test_series_lines_findings_up_by_step(series):
    assert series.steps == (0, TRAIN_STEPS[-1])
    frame = series.to_frame()
    assert set(frame.condition) == {"original", "shuffled"}
    assert set(frame.finding) == set(DYNAMICS_KEYS)
    assert len(frame) == 2 * 2 * len(DYNAMICS_KEYS)
    assert series.depth["norm"].shape == (2, len(series.sublayers))
    assert series.depth["velocity"].shape == (2, len(series.sublayers) - 1)
    assert not torch.equal(series.depth["norm"][0], series.depth["norm"][1])  # training moved it


def test_dsa_against_its_split_half_floor(series):
    assert series.dsa_successive.shape == (1,) and series.dsa_floor.shape == (1,)
    assert torch.isfinite(series.dsa_successive).all() and (series.dsa_floor >= 0).all()


def test_series_files(series):
    record = json.loads((series.out / SERIES_JSON).read_text())
    assert [c["step"] for c in record["checkpoints"]] == list(series.steps)
    assert len(record["dsa"]) == 1 and set(record["dsa"][0]) == {"from", "to", "distance", "noise_floor"}
    for checkpoint, paired in zip(record["checkpoints"], series.contrasts):
        written = checkpoint["contrasts"]["shuffled"]
        assert [c["key"] for c in written] == [f["key"] for f in checkpoint["findings"]]
        for entry, contrast in zip(written, paired):
            assert set(entry) == {"key", "control", "effect", "ci", "p_value", "p_adjusted", "verdict", "margin"}
            assert entry["control"] == "shuffled" and entry["verdict"] in CONTRAST_VERDICTS
            assert entry == contrast.to_json()
    page = (series.out / SERIES_HTML).read_text()
    assert "Findings over training" in page and "training step + 1 (log)" in page
    assert "Contrasts with the shuffled control over training" in page
    for label in series.labels:
        folder = series.out / "checkpoints" / label
        saved = tld.DynamicsCache.load(folder / "dynamics_original.safetensors")
        assert saved.n_samples == N_TEXTS and (folder / CHECKPOINT_JSON).is_file()


def test_contrasts_are_the_paired_test_on_the_saved_trajectories(series):
    folder = series.out / "checkpoints" / series.labels[-1]
    found = []
    for name in ("original", "shuffled"):
        dyn = tld.DynamicsCache.load(folder / f"dynamics_{name}.safetensors")
        measures = condition_measures(dyn, 0, progress=False, n_shuffles=N_SHUFFLES)
        found.append(dynamics_findings(dyn, measures.mutual_information, measures.rotation_null,
                                       unit_correlation=measures.unit_correlation, seed=0))
    expected = contrasts(*found, "shuffled")
    got = series.contrasts[-1]
    assert [c.key for c in got] == [c.key for c in expected] == list(DYNAMICS_KEYS)
    assert [c.verdict for c in got] == [c.verdict for c in expected]
    for mine, theirs, original, control in zip(got, expected, series.findings[-1], series.control[-1]):
        assert mine.control == "shuffled"
        assert mine.effect == pytest.approx(theirs.effect, nan_ok=True)
        assert mine.effect == pytest.approx(original.effect - control.effect, nan_ok=True)
        assert mine.ci == pytest.approx(theirs.ci, nan_ok=True)
        assert mine.p_adjusted == pytest.approx(theirs.p_adjusted, nan_ok=True)
        if math.isfinite(mine.p_value):
            assert mine.ci[0] <= mine.effect <= mine.ci[1]
    assert any(math.isfinite(c.p_value) for c in got)  # not every contrast undecided for lack of data


def test_checkpoint_of_the_older_format_loads_with_undecided_contrasts(series, trained, tmp_path, monkeypatch):
    out = tmp_path / "older"
    shutil.copytree(series.out, out)
    path = out / "checkpoints" / series.labels[0] / CHECKPOINT_JSON
    record = json.loads(path.read_text())
    del record["contrasts"]
    path.write_text(json.dumps(record))
    monkeypatch.setattr(series_module, "_run_checkpoint", lambda *a: pytest.fail("a written checkpoint ran again"))
    checkpoints = [trained["checkpoints"][0], trained["checkpoints"][-1]]
    resumed = run_series(checkpoints, out, n_texts=N_TEXTS, n_shuffles=N_SHUFFLES, dsa=False, progress=False)
    assert [c.key for c in resumed.contrasts[0]] == [f.key for f in resumed.findings[0]]
    assert all(c.verdict == "undecided" and math.isnan(c.effect) and math.isnan(c.ci[0]) for c in resumed.contrasts[0])
    assert [c.to_json() for c in resumed.contrasts[1]] == [c.to_json() for c in series.contrasts[1]]
    written = json.loads((out / SERIES_JSON).read_text())["checkpoints"][0]["contrasts"]["shuffled"]
    assert {c["effect"] for c in written} == {None} and "Contrasts with" in (out / SERIES_HTML).read_text()


def test_killed_series_resumes_where_it_stopped(trained, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    checkpoints = [trained["checkpoints"][0], trained["checkpoints"][-1]]
    real = series_module._run_checkpoint
    calls = []

    def killed_after_one(folder, *args):
        if calls:
            raise KeyboardInterrupt
        calls.append(folder.name)
        real(folder, *args)

    monkeypatch.setattr(series_module, "_run_checkpoint", killed_after_one)
    kwargs = {"n_texts": N_TEXTS, "n_shuffles": N_SHUFFLES, "dsa": False, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        run_series(checkpoints, out, **kwargs)
    assert calls == ["step0"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step0"]  # no partial
    written = (out / "checkpoints" / "step0" / CHECKPOINT_JSON).stat().st_mtime_ns

    resumed = []
    monkeypatch.setattr(series_module, "_run_checkpoint", lambda folder, *a: (resumed.append(folder.name), real(folder, *a)))
    result = run_series(checkpoints, out, **kwargs)
    assert resumed == ["step96"]
    assert (out / "checkpoints" / "step0" / CHECKPOINT_JSON).stat().st_mtime_ns == written
    assert result.steps == (0, TRAIN_STEPS[-1]) and torch.isnan(result.dsa_successive).all()
    with pytest.raises(OutputExistsError, match="another series"):
        run_series(checkpoints[:1], out, **kwargs)


def test_bad_series_input_is_refused(trained, tmp_path):
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    checkpoints = trained["checkpoints"]
    with pytest.raises(OutputExistsError):
        run_series(checkpoints, tmp_path / "theirs", progress=False)
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"
    with pytest.raises(DynamicsInputError, match="must exist"):
        run_series([str(tmp_path / "step5")], tmp_path / "out")
    with pytest.raises(DynamicsInputError, match="end in its training step"):
        checkpoint_step("final")
    with pytest.raises(DynamicsInputError, match="distinct labels"):
        run_series(["step1", "step1"], tmp_path / "out", model="EleutherAI/pythia-160m")
    assert not (tmp_path / "out").exists()


def test_cli_series_needs_a_model_for_revisions(capsys, tmp_path):
    assert main(["series", "--revisions", "step0,step1000", "--out", str(tmp_path / "s")]) == 2
    assert "--model must name" in capsys.readouterr().err


def test_revision_refused_for_a_preset_and_checkpoint_index_recorded():
    with pytest.raises(DynamicsInputError, match="revision must be None for a preset"):
        tld.models.load_model("minilm", revision="step1000")

    class Config:
        checkpoint_index, checkpoint_value = 3, 4000

    class Model:
        cfg = Config()
        tl_dynamics_provenance = {"model": "EleutherAI/pythia-160m", "revision": "step4000"}

    assert model_provenance(Model()) == {
        "model": "EleutherAI/pythia-160m", "revision": "step4000", "checkpoint_index": 3, "checkpoint_value": 4000
    }
