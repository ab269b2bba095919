"""The metrics.json record: non-finite numbers written as null, and a record read back
checked field by field (verdicts, labels, numbers) before compare uses it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tl_dynamics.cli import EXIT_BAD_INPUT, main
from tl_dynamics.report.record import SCHEMA_VERSION, read_report, tensor_json, write_json

CURVES = ("norms_mean", "fig1e_cosine_similarity_mean", "fig1f_velocity_mean",
          "fig1h_unit_correlation_mean", "fig1h_mutual_information_mean_nats")


def test_tensor_json_writes_nan_and_both_infinities_as_null():
    values = torch.tensor([1.0, math.nan, math.inf, -math.inf])
    assert tensor_json(values) == [1.0, None, None, None]
    assert tensor_json({"x": [math.inf, (2.0, -math.inf)]}) == {"x": [None, [2.0, None]]}


def test_write_json_accepts_an_infinite_curve(tmp_path):
    write_json(tmp_path / "metrics.json", {"curve": torch.tensor([0.5, math.inf])})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"curve": [0.5, None]}


def report_record() -> dict:
    """The smallest metrics.json compare reads: one condition, one finding."""
    finding = {"key": "activation_growth", "claim": "activations grow", "holds": True,
               "verdict": "yes", "effect": 0.4, "p_value": 1e-4, "p_adjusted": 1e-3,
               "ci": [0.3, 0.5], "observed": "grows"}
    condition = {"labels": ["0_pre", "0_mid", "final_post"]}
    condition |= {key: [1.0, 2.0, 3.0] if key == "norms_mean" else [0.5, 0.6] for key in CURVES}
    return {"schema_version": SCHEMA_VERSION, "model": {"model_name": "org/tiny"},
            "conditions": {"original": condition}, "findings": {"original": [finding]}}


def write_report(folder, record):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def test_a_complete_record_is_read(tmp_path):
    record = report_record()
    assert read_report(write_report(tmp_path / "report", record)) == record


def edited(edit):
    record = report_record()
    edit(record)
    return record


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda r: r["findings"]["original"][0].update(holds="maybe"), "['holds']"),
        (lambda r: r["findings"]["original"][0].update(verdict="maybe", holds=None), "['verdict']"),
        (lambda r: r["findings"]["original"][0].update(verdict="no"), "['verdict']"),
        (lambda r: r["findings"]["original"][0].update(effect="large"), "['effect']"),
        (lambda r: r["conditions"]["original"].update(labels=[]), "['labels']"),
        (lambda r: r["conditions"]["original"].update(labels=["0_pre", "", "final_post"]), "['labels'][1]"),
        (lambda r: r["model"].update(model_name=""), "['model_name']"),
        (lambda r: r["conditions"]["original"]["fig1f_velocity_mean"].append(math.inf),
         "['fig1f_velocity_mean'][2]"),
        (lambda r: r["conditions"]["original"].update(norms_mean="tall"), "['norms_mean']"),
    ],
    ids=["holds", "verdict-unknown", "verdict-vs-holds", "effect", "no-labels", "empty-label",
         "empty-model-name", "infinite-curve", "curve-not-a-list"],
)
def test_compare_refuses_an_edited_record_in_one_line(tmp_path, capsys, edit, field):
    folder = write_report(tmp_path / "edited", edited(edit))
    assert main(["compare", str(folder), "--out", str(tmp_path / "cmp"), "--no-dsa"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert "metrics.json" in error and field in error, error
    assert not (tmp_path / "cmp").exists()
