"""The report's "Beyond the paper" section: its tests on noise and known answers, its files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tl_dynamics as tld
from tl_dynamics import findings
from tl_dynamics.report import beyond
from tl_dynamics.cli import _parser
from tl_dynamics.data import python_docs
from tl_dynamics.stability import DEFAULT_POSITIONS, DEFAULT_PROMPTS

from test_jpca import rotating_population

pytestmark = pytest.mark.usefixtures("one_thread")


def as_cache(resid: torch.Tensor) -> tld.DynamicsCache:
    n, s, _ = resid.shape
    return tld.DynamicsCache(resid.float(), tuple(str(i) for i in range(s)), torch.arange(n), torch.zeros(n, dtype=torch.long))


@pytest.fixture(scope="module")
def noise():
    return as_cache(torch.randn(60, 12, 16, generator=torch.Generator().manual_seed(0)))


def test_random_basis_test_counts_the_randomly_rotated_states(noise):
    finding, null = beyond.random_basis_finding(noise, seed=3, n_shuffles=50)
    direct = tld.metrics.rotation_null(noise.resid, 50, seed=3, basis="random")
    torch.testing.assert_close(null.observed, direct.observed, atol=1e-5, rtol=0)
    assert null.basis == "random" and finding.key == "rotations_random_basis"
    # the effect: the rotated states' turning against sublayer shuffles shared by all units
    assert finding.effect == pytest.approx(finding.numbers["observed"] - finding.numbers["null_mean"], abs=1e-9)
    assert finding.ci[0] <= finding.ci[1] and 0 <= finding.p_value <= 1


@pytest.mark.parametrize("seed", [0, 1])
def test_no_test_of_the_section_says_yes_on_noise(seed):
    dyn = as_cache(torch.randn(60, 12, 16, generator=torch.Generator().manual_seed(seed)))
    basis, _ = beyond.random_basis_finding(dyn, seed=seed, n_shuffles=100)
    rotational, _ = beyond.jpca_finding(dyn, seed=seed, n_shuffles=200)
    assert basis.verdict != "yes" and rotational.verdict != "yes"


def test_jpca_test_says_yes_on_a_rotating_population():
    resid = rotating_population([0.3, 0.1], batch=60, seed=1)
    resid = resid + 0.05 * torch.randn(resid.shape, generator=torch.Generator().manual_seed(0), dtype=resid.dtype)
    finding, fit = beyond.jpca_finding(as_cache(resid), seed=0, n_shuffles=200)
    assert finding.verdict == "yes"
    assert finding.effect == pytest.approx(fit.r2_skew - float(fit.surrogate_r2_skew.mean()))
    assert finding.ci[0] <= finding.effect <= finding.ci[1]
    assert finding.numbers["surrogate_p"] == fit.surrogate_p_value and finding.numbers["r2_skew_cv"] > 0.5


def test_jacobian_columns_are_the_spectra_at_the_teleported_layers(tiny_models):
    model = tiny_models["llama"]
    dyn = tld.collect(model, python_docs()[:40], progress=False)
    pca = tld.pca_trajectories(dyn, n_components=2, seed=0)
    sweep = tld.teleport_sweep(model, pca, n=2, progress=False)
    units = findings.dynamics_findings(dyn)[-1]
    section = beyond.beyond_measures(model, dyn, units, sweep, seed=0, jacobian=True)
    table = beyond.contraction_table(section)
    assert [row["layer"] for row in table] == [r.layer for r in sweep.results]
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    for row in table:
        direct = [
            tld.jacobian_spectrum(model, prompt, 2 * row["layer"], 2 * n_layers - 1, k=d_model, position=position)
            for prompt in DEFAULT_PROMPTS for position in DEFAULT_POSITIONS
        ]
        mean_top = np.mean([float(s.singular_values[0]) for s in direct])
        assert row["jacobian_top_singular_value"] == pytest.approx(mean_top, rel=1e-6)
        assert row["jacobian_log_volume"] == pytest.approx(np.mean([s.log_volume for s in direct]), rel=1e-6)
        assert row["jacobian_n_prompts"] == len(DEFAULT_PROMPTS)
        assert row["jacobian_steps"] == row["steps"]  # the same span as the teleport
    without = beyond.beyond_measures(model, dyn, units, sweep, seed=0)
    assert without.jacobian is None and "jacobian_top_singular_value" not in beyond.contraction_table(without)[0]


def test_report_has_the_section_in_json_and_html(minilm_report):
    record = json.loads((minilm_report / "metrics.json").read_text())["beyond"]
    keys = [f["key"] for f in record["findings"]]
    assert keys == ["rotations_random_basis", "jpca_rotation"]
    for finding in record["findings"]:
        assert {"effect", "ci", "p_value", "p_adjusted", "verdict", "null"} <= set(finding)
    units = record["units_finding"]
    assert units["key"] == "rotations_exceed_null"
    assert record["basis_survives"] == (units["verdict"] == record["findings"][0]["verdict"])
    assert record["jacobian"] is None and "jacobian_top_singular_value" not in record["contraction"][0]
    page = (minilm_report / "report.html").read_text()
    assert "Beyond the paper" in page and "--jacobian" in page  # says how to turn it on


def test_jacobian_is_an_opt_in_cli_flag():
    parser = _parser()
    assert parser.parse_args(["report"]).jacobian is False
    assert parser.parse_args(["report", "--jacobian"]).jacobian is True
    help_text = parser._subparsers._group_actions[0].choices["report"].format_help()
    assert "--jacobian" in help_text
