"""`tl-dynamics compare`: the dynamical-similarity (DSA) matrix of the reports and controls."""

from __future__ import annotations

import json

import pytest
import torch

import tl_dynamics as tld
from tl_dynamics.report import pipeline, run_report
from tl_dynamics.cli import main
from tl_dynamics.errors import InputTypeError
from tl_dynamics.findings import DYNAMICS_KEYS
from tl_dynamics.report.compare import DSA_RESAMPLES, DSA_SAMPLES, DSA_SPLITS, dsa_conditions
from tl_dynamics.report.record import TWIN_FILE


def _tiny_llama_report(tmp_path_factory, tiny_model_folders, name: str, twin_flag: str):
    """A 30-text report of the tiny Llama, written with ``twin_flag``."""
    out = tmp_path_factory.mktemp("reports") / name
    args = ["report", "--model", str(tiny_model_folders["llama"]), "--n", "30", "--quiet"]
    assert main([*args, twin_flag, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def twin_report(tmp_path_factory, tiny_model_folders):
    """A tiny-Llama report with its random-weight twin's trajectories."""
    return _tiny_llama_report(tmp_path_factory, tiny_model_folders, "llama-twin", "--random-twin")


@pytest.fixture(scope="module")
def plain_report(tmp_path_factory, tiny_model_folders):
    """A tiny-Llama report written without its random-weight twin."""
    return _tiny_llama_report(tmp_path_factory, tiny_model_folders, "llama-plain", "--no-random-twin")


@pytest.mark.slow
def test_random_twin_is_saved_from_a_twin_of_the_same_architecture(twin_report, tiny_models):
    twin = tld.DynamicsCache.load(twin_report / TWIN_FILE)
    original = tld.DynamicsCache.load(twin_report / "dynamics.safetensors")
    assert twin.resid.shape == original.resid.shape  # 30 texts < TWIN_TEXTS: all of them
    assert twin.metadata.texts == original.metadata.texts
    assert not torch.allclose(twin.resid, original.resid)  # other weights
    expected = tld.collect(tld.random_weight_twin(tiny_models["llama"], seed=0), list(original.metadata.texts), progress=False)
    torch.testing.assert_close(twin.resid, expected.resid, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_compare_adds_the_dsa_matrix_with_its_controls_floors_and_intervals(minilm_report, plain_report, tmp_path):
    out = tmp_path / "dsa"
    assert main(["compare", str(minilm_report), str(plain_report), "--out", str(out)]) == 0
    record = json.loads((out / "compare.json").read_text())["dynamical_similarity"]
    names = record["names"]
    labels = sorted({name.split(" · ")[0] for name in names})
    assert len(labels) == 2
    conditions = {name.split(" · ")[1] for name in names}
    assert conditions == {"original", "shuffled text", "random twin"}
    assert sum(name.endswith("random twin") for name in names) == 1  # only the report with a twin
    distance = torch.tensor(record["distance"])
    assert distance.shape == (len(names), len(names))
    torch.testing.assert_close(distance, distance.T)
    assert bool((distance.diagonal() == 0).all()) and bool((distance[~torch.eye(len(names), dtype=bool)] > 0).all())
    assert record["samples_per_condition"] == DSA_SAMPLES
    floors = torch.tensor(record["noise_floor"])
    assert floors.shape == (len(names),) and bool((floors > 0).all())
    assert record["n_splits"] == DSA_SPLITS and record["n_resamples"] == DSA_RESAMPLES
    ci = torch.tensor(record["distance_ci"])
    assert ci.shape == (len(names), len(names), 2) and bool((ci[..., 0] <= ci[..., 1]).all())
    assert bool((ci[~torch.eye(len(names), dtype=bool)][:, 1] > 0).all())
    page = (out / "compare.html").read_text()
    assert "Dynamical similarity" in page and page.count("Plotly.newPlot") >= 7
    assert "Noise floors" in page and f"{floors[0].item():.3f}" in page


def test_dsa_conditions_read_the_saved_trajectories(minilm_report):
    conditions = dsa_conditions([minilm_report], ["minilm"])
    assert list(conditions) == ["minilm · original", "minilm · shuffled text", "minilm · random twin"]
    saved = tld.DynamicsCache.load(minilm_report / "dynamics_shuffled.safetensors")
    torch.testing.assert_close(conditions["minilm · shuffled text"].resid, saved.resid[:DSA_SAMPLES])


def test_no_dsa_skips_the_matrix(minilm_report, tmp_path):
    out = tmp_path / "plain"
    assert main(["compare", str(minilm_report), "--out", str(out), "--no-dsa"]) == 0
    assert json.loads((out / "compare.json").read_text())["dynamical_similarity"] is None
    assert "Dynamical similarity" not in (out / "compare.html").read_text()


def test_a_random_twin_of_a_model_without_hf_weights_is_refused_before_any_work(tmp_path, monkeypatch):
    class NotABridge(torch.nn.Module):
        cfg = None

    monkeypatch.setattr(pipeline, "collect", lambda *a, **k: pytest.fail("collected"))
    with pytest.raises(TypeError, match="model"):
        run_report(NotABridge(), ["a text"], out=tmp_path / "never", random_twin=True, progress=False)
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_the_twin_runs_by_default_and_no_random_twin_leaves_it_out(minilm_report, plain_report):
    with_twin = json.loads((minilm_report / "metrics.json").read_text())
    assert (minilm_report / TWIN_FILE).is_file()
    contrasts = with_twin["findings"]["contrasts"]["random_twin"]
    assert [c["key"] for c in contrasts] == list(DYNAMICS_KEYS)
    assert set(with_twin["beyond"]["jpca_controls"]) == {"shuffled", "random_twin"}
    without = json.loads((plain_report / "metrics.json").read_text())
    assert not (plain_report / TWIN_FILE).exists()
    assert without["findings"]["contrasts"]["random_twin"] is None
    assert list(without["beyond"]["jpca_controls"]) == ["shuffled"]


def test_a_model_that_cannot_be_copied_gets_its_report_without_a_twin(tmp_path, monkeypatch, tiny_models):
    def refuse(model):
        raise InputTypeError("model must be a TransformerBridge over a Hugging Face model")

    monkeypatch.setattr(pipeline, "check_twin_model", refuse)
    texts = tld.data.python_docs()[:6]
    run_report(tiny_models["llama"], texts, tmp_path / "auto", progress=False, n_shuffles=20, cae_epochs=2, grid=3)
    assert not (tmp_path / "auto" / TWIN_FILE).exists()
    with pytest.raises(InputTypeError, match="TransformerBridge"):
        run_report(tiny_models["llama"], texts, tmp_path / "forced", progress=False, random_twin=True)
    assert not (tmp_path / "forced").exists()
