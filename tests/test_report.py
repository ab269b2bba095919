"""The main job end to end: `tl-dynamics report` / `compare`, their files and their errors."""

from __future__ import annotations

import html
import json
import re

import plotly.offline
import pytest
import torch

import tl_dynamics as tld
from tl_dynamics.report import pipeline, run_report
from tl_dynamics.cli import EXIT_BAD_INPUT, main
from tl_dynamics.report.compare import CURVES
from tl_dynamics.report.record import SCHEMA_VERSION
from tl_dynamics.data import python_docs, sample_texts
from tl_dynamics.findings import MIN_PROMPTS
from tl_dynamics.interventions import DEFAULT_PROMPTS

from conftest import REPORT_TEXTS as N_TEXTS

def test_report_writes_every_file(minilm_report):
    names = {p.name for p in minilm_report.iterdir()}
    assert set(pipeline.REPORT_FILES) <= names
    assert {"dynamics_shuffled.safetensors", "dynamics_shuffled.json"} <= names
    assert not [p for p in minilm_report.parent.iterdir() if ".partial-" in p.name]


def test_metrics_json_holds_the_numbers_of_every_figure(minilm_report, minilm):
    record = json.loads((minilm_report / "metrics.json").read_text())
    assert record["schema_version"] == SCHEMA_VERSION
    assert set(record["conditions"]) == {"original", "shuffled"}
    n_sublayers = 2 * minilm.cfg.n_layers
    for numbers in record["conditions"].values():
        assert len(numbers["labels"]) == n_sublayers
        assert len(numbers["fig1c_unit_correlation"]) == n_sublayers - 1
        assert len(numbers["fig1c_unit_correlation"][0]) == minilm.cfg.d_model
        assert len(numbers["fig1g_mutual_information_nats"]) == n_sublayers - 1
        assert len(numbers["fig2c_rotation_null"]["observed"]) == minilm.cfg.d_model
        for key in ("fig1b_mean_activation", "fig1d_correlation_distribution",
                    "fig1e_cosine_similarity_mean", "fig1f_velocity_mean", "fig2b_rotations_per_unit"):
            assert key in numbers
    verdicts = {f["verdict"] for f in record["findings"]["original"]}
    assert verdicts <= {"yes", "no", "undecided"} and len(record["findings"]["original"]) >= 10


def test_the_attractor_finding_teleports_into_every_default_prompt(minilm_report):
    record = json.loads((minilm_report / "metrics.json").read_text())
    for condition in ("original", "shuffled"):
        finding = next(f for f in record["findings"][condition] if f["key"] == "mid_layers_attract")
        assert finding["numbers"]["n_prompts"] == len(DEFAULT_PROMPTS) >= MIN_PROMPTS
        assert finding["ci"][0] is not None and finding["ci"][0] <= finding["ci"][1]


def test_metrics_json_matches_the_library_on_the_saved_trajectories(minilm_report):
    record = json.loads((minilm_report / "metrics.json").read_text())
    dyn = tld.DynamicsCache.load(minilm_report / "dynamics.safetensors")
    assert dyn.n_samples == N_TEXTS and not dyn.metadata.shuffle
    expected = tld.metrics.velocity(dyn.resid).mean(0)
    torch.testing.assert_close(
        torch.tensor(record["conditions"]["original"]["fig1f_velocity_mean"], dtype=torch.float64),
        expected.double(),
    )
    shuffled = tld.DynamicsCache.load(minilm_report / "dynamics_shuffled.safetensors")
    assert shuffled.metadata.shuffle and shuffled.metadata.texts == dyn.metadata.texts


def test_report_trajectories_equal_a_direct_collect(minilm_report, minilm):
    texts = sample_texts(python_docs(), N_TEXTS, seed=0)
    direct = tld.collect(minilm, texts, progress=False)
    saved = tld.DynamicsCache.load(minilm_report / "dynamics.safetensors")
    assert (saved.resid - direct.resid).abs().max() <= 1e-4


def test_report_html_is_self_contained_with_plotly_embedded_once(minilm_report):
    page = (minilm_report / "report.html").read_text()
    signature = plotly.offline.get_plotlyjs()[:300]
    assert page.count(signature) == 1
    assert not re.search(r"<script[^>]+src=['\"]https?:", page)  # nothing from the network
    assert page.count("Plotly.newPlot") == len(re.findall(r'class="plotly-graph-div"', page))
    assert page.count("Plotly.newPlot") >= 20  # ten panels per condition
    assert "the paper's finding" in page


def test_existing_output_is_refused_without_overwrite(minilm_report, capsys):
    before = (minilm_report / "metrics.json").stat().st_mtime_ns
    assert main(["report", "--n", "5", "--out", str(minilm_report), "--quiet"]) == EXIT_BAD_INPUT
    assert "--overwrite" in capsys.readouterr().err
    assert (minilm_report / "metrics.json").stat().st_mtime_ns == before


def test_overwrite_replaces_the_report(tmp_path):
    out = tmp_path / "twice"
    args = ["report", "--model", "minilm", "--quiet", "--out", str(out)]
    assert main([*args, "--n", "6"]) == 0
    assert main([*args, "--n", "7", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["n_texts"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["twice"]


def test_interrupted_report_leaves_nothing_behind(tmp_path, minilm, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.DynamicsCache, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_report(minilm, python_docs()[:6], tmp_path / "cut", pipeline.ReportSettings(progress=False))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-org/no-such-model"], "hub"),
        (["--texts", "missing-file.txt"], "neither a corpus"),
        (["--n", "100000"], "only 823 texts were found"),
        (["--n", "0"], "n must be an int >= 1"),
        (["--dtype", "float16"], "not supported on CPU"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["report", *args, "--out", str(out), "--quiet"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.startswith("tl-dynamics: error:") and message in error
    assert len(error.strip().splitlines()) == 1
    assert not out.exists()


def test_empty_or_undecodable_texts_file_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00broken")
    for path, message in ((empty, "holds no text"), (binary, "not UTF-8")):
        assert main(["report", "--texts", str(path), "--out", str(tmp_path / "x"), "--quiet"]) == 2
        assert message in capsys.readouterr().err


def test_report_reads_a_users_jsonl_file(tmp_path, tiny_model_folders):
    texts = tmp_path / "mine.jsonl"
    texts.write_text("\n".join(json.dumps({"text": t}) for t in python_docs()[:8]))
    out = tmp_path / "mine"
    args = ["report", "--model", str(tiny_model_folders["gpt2"]), "--texts", str(texts)]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["n_texts"] == 8


def test_compare_overlays_reports_on_normalised_depth(minilm_report, llama_report, tmp_path):
    out = tmp_path / "comparison"
    assert main(["compare", str(minilm_report), str(llama_report), "--out", str(out)]) == 0
    record = json.loads((out / "compare.json").read_text())
    assert len(record["reports"]) == 2
    for curves in record["reports"].values():
        cosine = [c for c in curves if c["quantity"] == "fig1e_cosine_similarity_mean"]
        assert {c["condition"] for c in cosine} == {"original", "shuffled"}
        for curve in curves:
            n_sublayers = len(curve["depth"]) + (curve["quantity"] != "norms_mean")
            expected = [s / n_sublayers for s in range(n_sublayers)]
            if curve["quantity"] != "norms_mean":  # transitions sit at their target's depth
                expected = expected[1:]
            assert curve["depth"] == pytest.approx(expected)
            assert len(curve["depth"]) == len(curve["values"])
    page = (out / "compare.html").read_text()
    assert page.count("Plotly.newPlot") == len(CURVES) + 1  # the curves and the DSA matrix


def test_compare_puts_each_reports_findings_side_by_side(minilm_report, llama_report, tmp_path):
    out = tmp_path / "findings"
    assert main(["compare", str(minilm_report), str(llama_report), "--out", str(out)]) == 0
    record = json.loads((out / "compare.json").read_text())
    for folder, label in zip((minilm_report, llama_report), record["findings"]):
        own = json.loads((folder / "metrics.json").read_text())["findings"]
        assert record["findings"][label] == own
    page = (out / "compare.html").read_text()
    table = page[page.index("<table class='findings'>") : page.index("</table>")]
    rows = table.split("<tr>")[2:]  # after the header row
    first = json.loads((minilm_report / "metrics.json").read_text())["findings"]
    assert len(rows) == len(first["original"])
    for row, finding in zip(rows, first["original"]):
        assert html.escape(finding["claim"]) in row
        assert row.count("<td class=") == 4  # two reports x two conditions
        assert f"<td class='{finding['verdict']}'>" in row


def test_finding_round_trips_through_json(minilm_report):
    from tl_dynamics.findings import Finding

    for record in json.loads((minilm_report / "metrics.json").read_text())["findings"]["original"]:
        assert Finding.from_json(record).to_json() == record


def test_compare_refuses_a_folder_that_is_not_a_report(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "c")]) == EXIT_BAD_INPUT
    assert "not a tl-dynamics report" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("settings", "keywords", "match"),
    [
        (pipeline.ReportSettings(), {"seed": 1}, "settings must be a ReportSettings"),
        ({"seed": 1}, {}, "settings must be a ReportSettings"),
        (None, {"n_texts": 5}, "fields of ReportSettings"),
    ],
)
def test_run_report_takes_one_settings_object_or_its_keywords(tmp_path, settings, keywords, match):
    with pytest.raises(ValueError, match=match):
        run_report(object(), ["a text"], tmp_path / "never", settings, **keywords)
    assert not (tmp_path / "never").exists()


def test_report_without_regimes_records_none(llama_report):
    record = json.loads((llama_report / "metrics.json").read_text())
    assert "regimes" in record and record["regimes"] is None
    assert "regimes" not in record["stage_seconds"]
    assert "Regimes over tokens" not in (llama_report / "report.html").read_text()


def test_regimes_add_a_section_and_the_fit_over_tokens(tmp_path, tiny_model_folders, tiny_models):
    from tl_dynamics.regimes import MAX_REGIMES
    from tl_dynamics.report.record import read_report
    from tl_dynamics.report.tokens import REGIMES_RANK, token_regimes

    out = tmp_path / "regimes"
    args = ["report", "--model", str(tiny_model_folders["llama"]), "--n", "30", "--quiet", "--regimes"]
    assert main([*args, "--out", str(out)]) == 0
    record = read_report(out)
    fit = record["regimes"]
    assert 1 <= fit["n_regimes"] <= MAX_REGIMES and fit["rank"] == REGIMES_RANK
    assert len(fit["transition"]) == fit["n_regimes"] == len(fit["regimes"])
    assert all(sum(row) == pytest.approx(1.0) for row in fit["transition"])
    assert fit["r2_heldout"] <= 1 and fit["r2_single"] <= 1
    control = fit["control"]
    assert control["n_regimes"] == fit["n_regimes"] and control["rank"] == fit["rank"]
    assert control["control"] is None and record["stage_seconds"]["regimes"] > 0
    direct = token_regimes(tiny_models["llama"], sample_texts(python_docs(), 30, seed=0), seed=0)
    assert fit["r2_heldout"] == pytest.approx(direct.r2_heldout, rel=1e-6)
    assert control["r2_heldout"] == pytest.approx(direct.control.r2_heldout, rel=1e-6)
    page = (out / "report.html").read_text()
    section = page[page.rindex("Regimes over tokens"):]  # the last section, after the contents
    assert "R2 one system" in section and section.count("Plotly.newPlot") == 2

    fit["r2_heldout"] = "high"
    (out / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"\['regimes'\]\['r2_heldout'\]"):
        read_report(out)
