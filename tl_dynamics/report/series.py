"""Checkpoint series: how the depth dynamics form over training.

One report reads one model. A *series* reads the same model at several points of its
training (Pythia's hub revisions ``step0`` ... ``step143000``, or local folders saved
with ``save_pretrained``) and lines the results up against the training step:

1. per checkpoint (in the order given), the model is loaded, the texts and their
   token-shuffled control are collected (last token, as the report does), the report's
   Figure 1-2 measures run (:func:`tl_dynamics.report.measures.condition_measures`) and the
   paper's findings are tested on both conditions
   (:func:`tl_dynamics.findings.dynamics_findings`) and paired (original minus control,
   :func:`tl_dynamics.findings.contrasts`: the bootstrap replicates that pair them live
   only in memory); the trajectories (safetensors) and ``checkpoint.json`` (measures,
   findings, contrasts, provenance) are written to
   ``OUT/checkpoints/<label>/`` atomically, so a checkpoint is either whole or absent;
2. a series that is run again with the same checkpoints and settings skips every
   checkpoint already written (a killed series resumes where it stopped);
3. the dynamical similarity (DSA, :func:`tl_dynamics.dynamical_similarity`) between
   successive checkpoints is set beside its noise floor: the DSA distance between two
   disjoint halves of one checkpoint's texts (the later of the pair);
4. ``series.json`` and ``series.html`` show every finding's effect (original and
   control) and its paired contrast (with interval and verdict) against the training step
   on a log axis, the per-depth curves of each checkpoint coloured by step, and the DSA
   curve.

A checkpoint written before contrasts were recorded (its ``checkpoint.json`` has no
``"contrasts"``) still loads and is not recomputed: its contrasts are undecided, with NaN
numbers.

Each checkpoint's step is read from the end of its label (``step1000`` -> 1000), the
label being the revision or the folder's name.

Example::

    import tl_dynamics as tld
    from tl_dynamics.report.series import run_series

    series = run_series(["runs/tiny/step0", "runs/tiny/step16", "runs/tiny/step256"],
                        out="runs/series", n_texts=64)
    series.to_frame().query("finding == 'activation_growth'")
    # Pythia on a GPU: run_series(["step0", "step1000", "step143000"],
    #     model="EleutherAI/pythia-160m", out="pythia-series", device="cuda", sites=("pre",))
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tl_dynamics import findings as findings_module
from tl_dynamics._output import (
    MARKER_NAME,
    SERIES_KIND,
    atomic_folder,
    check_output,
    check_writable,
    follow_umask,
    read_marker,
    writer_lock,
)
from tl_dynamics._checks import check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics._version import __version__
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.collect import collect
from tl_dynamics.data import python_docs
from tl_dynamics.errors import DynamicsInputError, OutputExistsError
from tl_dynamics.findings import Contrast, Finding
from tl_dynamics.hooks import SITES, model_provenance
from tl_dynamics.models import load_model
from tl_dynamics.report.html import render_html
from tl_dynamics.report.measures import ROTATION_SHUFFLES, condition_measures, measures_json
from tl_dynamics.report.record import tensor_json, write_json
from tl_dynamics.similarity import dynamical_similarity

__all__ = [
    "SERIES_JSON",
    "SERIES_HTML",
    "SETTINGS_FILE",
    "CHECKPOINT_JSON",
    "DEFAULT_TEXTS",
    "Series",
    "checkpoint_step",
    "run_series",
]

SERIES_JSON = "series.json"
SERIES_HTML = "series.html"
SETTINGS_FILE = "series-settings.json"  # what a resumed series must match
CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINTS = "checkpoints"
CONTROL = "shuffled"  # the control each checkpoint's findings are contrasted with
DEFAULT_TEXTS = 128  # per checkpoint: enough for the findings' bootstrap over texts
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a label becomes a folder name
STEP = re.compile(r"(\d+)$")
DEPTH_MEASURES = {  # per-depth curve -> key of the report's measures record
    "norm": "norms_mean",
    "velocity": "fig1f_velocity_mean",
    "cosine similarity": "fig1e_cosine_similarity_mean",
    "unit correlation": "fig1h_unit_correlation_mean",
}


def checkpoint_step(label: str) -> int:
    """The training step at the end of a checkpoint's label (``"step1000"`` -> 1000)."""
    match = STEP.search(label)
    if match is None:
        raise DynamicsInputError(
            f"checkpoint label must end in its training step (e.g. step1000); got {label!r}"
        )
    return int(match.group(1))


@dataclass(frozen=True, eq=False)
class Series:
    """The findings and per-depth measures of a model at successive training steps.

    Attributes:
        labels: Each checkpoint's label (revision or folder name), in training order.
        steps: Each checkpoint's training step.
        findings: Per checkpoint, the paper's findings on the original texts.
        control: Per checkpoint, the same findings on the token-shuffled texts.
        contrasts: Per checkpoint, each finding's paired contrast original minus
            token-shuffled (:class:`~tl_dynamics.findings.Contrast`; undecided with NaN
            numbers for a checkpoint written before contrasts were recorded).
        sublayers: The sublayer labels of the per-depth curves.
        depth: ``{measure: [checkpoint, sublayer or transition]}`` mean over texts:
            ``norm`` (per sublayer), ``velocity``, ``cosine similarity``,
            ``unit correlation`` (per transition).
        dsa_successive: ``[checkpoint - 1]`` DSA distance of each checkpoint to the next
            (NaN when DSA was skipped).
        dsa_floor: ``[checkpoint - 1]`` DSA distance between two disjoint halves of the
            later checkpoint's texts: the distance that sampling alone gives.
        out: The series folder.
    """

    __repr__ = compact_repr

    labels: tuple[str, ...]
    steps: tuple[int, ...]
    findings: tuple[tuple[Finding, ...], ...]
    control: tuple[tuple[Finding, ...], ...]
    contrasts: tuple[tuple[Contrast, ...], ...]
    sublayers: tuple[str, ...]
    depth: dict[str, Float[Tensor, "checkpoint position"]]
    dsa_successive: Float[Tensor, " pair"]
    dsa_floor: Float[Tensor, " pair"]
    out: Path

    def to_frame(self) -> pd.DataFrame:
        """One row per checkpoint, finding and condition (``"original"``, ``"shuffled"``):
        ``label``, ``step``, ``finding``, ``condition``, ``effect``, ``ci_low``,
        ``ci_high``, ``p_adjusted``, ``verdict``."""
        rows = []
        for label, step, original, shuffled in zip(self.labels, self.steps, self.findings, self.control):
            for condition, found in (("original", original), ("shuffled", shuffled)):
                rows += [
                    {
                        "label": label,
                        "step": step,
                        "finding": f.key,
                        "condition": condition,
                        "effect": f.effect,
                        "ci_low": f.ci[0],
                        "ci_high": f.ci[1],
                        "p_adjusted": f.p_adjusted,
                        "verdict": f.verdict,
                    }
                    for f in found
                ]
        return pd.DataFrame(rows)

    def to_json(self) -> dict[str, Any]:
        """``series.json``: per checkpoint its findings (both conditions), their paired
        contrasts (``{"shuffled": [...]}``), per-depth curves, and DSA."""
        checkpoints = []
        for i, (label, step) in enumerate(zip(self.labels, self.steps)):
            checkpoints.append(
                {
                    "label": label,
                    "step": step,
                    "findings": [f.to_json() for f in self.findings[i]],
                    "control_findings": [f.to_json() for f in self.control[i]],
                    "contrasts": {CONTROL: [c.to_json() for c in self.contrasts[i]]},
                    "depth": {name: values[i].tolist() for name, values in self.depth.items()},
                }
            )
        return {
            "kind": "tl-dynamics-series",
            "version": __version__,
            "sublayers": list(self.sublayers),
            "checkpoints": checkpoints,
            "dsa": [
                {"from": a, "to": b, "distance": d, "noise_floor": f}
                for a, b, d, f in zip(self.labels, self.labels[1:], self.dsa_successive.tolist(), self.dsa_floor.tolist())
            ],
        }


def _labels(checkpoints: Sequence[str], model: str | None) -> list[str]:
    if isinstance(checkpoints, str) or not checkpoints:
        raise DynamicsInputError(f"checkpoints must be a non-empty list of revisions or folders; got {checkpoints!r}")
    labels = [str(c) if model is not None else Path(c).resolve().name for c in checkpoints]
    for label in labels:
        if not LABEL.match(label):
            raise DynamicsInputError(f"checkpoint label must be letters, digits, '.', '_' or '-'; got {label!r}")
        checkpoint_step(label)
    if len(set(labels)) != len(labels):
        raise DynamicsInputError(f"checkpoints must have distinct labels; got {labels}")
    return labels


def _prepare(out: Path, settings: dict[str, Any], overwrite: bool, inputs: list[Path]) -> None:
    """Start ``out`` (marker and settings) or check that it is this series to resume."""
    marker = read_marker(out) if out.is_dir() else None
    if marker is not None and marker["kind"] == SERIES_KIND and not overwrite:
        try:
            recorded = json.loads((out / SETTINGS_FILE).read_text())
        except (OSError, ValueError):  # killed before its settings were written
            recorded = None
        if recorded != settings:
            raise OutputExistsError(
                f"output folder {str(out)!r} holds another series (other checkpoints or settings); "
                "pass --overwrite to replace it or another --out"
            )
        return
    check_output(out, overwrite, inputs, kind=SERIES_KIND)
    if out.exists():  # check_output let it be replaced: a series holding only our files
        shutil.rmtree(out)
    check_writable(out.parent)
    out.mkdir(parents=True)
    write_json(out / SETTINGS_FILE, settings)
    _mark(out)
    follow_umask(out)


def _mark(out: Path) -> None:
    """(Re)write the series folder's marker: its kind and every file the series has written
    so far (its own files and each whole checkpoint's), so that ``--overwrite`` may replace
    it and never a file someone else put there."""
    files = [name for name in (SETTINGS_FILE, SERIES_JSON, SERIES_HTML) if (out / name).is_file()]
    for folder in sorted((out / CHECKPOINTS).glob("*")):
        marker = read_marker(folder)
        if marker is not None and marker["kind"] == SERIES_KIND:
            listed = [f for f in marker.get("files", []) if isinstance(f, str)]
            files += [f"{CHECKPOINTS}/{folder.name}/{name}" for name in [*listed, MARKER_NAME]]
    partial = out / f".{MARKER_NAME}.partial-{os.getpid()}"
    partial.write_text(json.dumps({"kind": SERIES_KIND, "version": __version__, "files": files}))
    follow_umask(partial)
    os.replace(partial, out / MARKER_NAME)


def _run_checkpoint(
    folder: Path, source: str, revision: str | None, texts: list[str], settings: dict[str, Any], inputs: list[Path]
) -> None:
    model = load_model(source, revision=revision, device=settings["device"], progress=False)
    seed, sites = settings["seed"], tuple(settings["sites"])
    conditions = {
        name: collect(model, texts, batch_size=16, shuffle=shuffle, seed=seed, sites=sites, progress=False)
        for name, shuffle in (("original", False), ("shuffled", True))
    }
    record: dict[str, Any] = {"label": folder.name, "step": checkpoint_step(folder.name), "source": source,
                              "revision": revision, "provenance": model_provenance(model)}
    found = {}
    for name, dyn in conditions.items():
        measures = condition_measures(dyn, seed, progress=False, n_shuffles=settings["n_shuffles"])
        found[name] = findings_module.dynamics_findings(
            dyn, measures.mutual_information, measures.rotation_null,
            unit_correlation=measures.unit_correlation, seed=seed,
        )
        record[name] = {"measures": measures_json(dyn, measures), "findings": [f.to_json() for f in found[name]]}
    paired = findings_module.contrasts(found["original"], found[CONTROL], CONTROL)
    record["contrasts"] = {CONTROL: [c.to_json() for c in paired]}
    with atomic_folder(folder, overwrite=False, kind=SERIES_KIND, inputs=inputs) as staging:
        for name, dyn in conditions.items():
            dyn.save(staging / f"dynamics_{name}.safetensors")
        write_json(staging / CHECKPOINT_JSON, record)


def _dsa(folders: list[Path], seed: int) -> tuple[Tensor, Tensor]:
    """DSA of successive checkpoints' trajectories, and the split-half floor of the later."""
    distances, floors = [], []
    for before, after in zip(folders, folders[1:]):
        a = DynamicsCache.load(before / "dynamics_original.safetensors")
        b = DynamicsCache.load(after / "dynamics_original.safetensors")
        distances.append(float(dynamical_similarity(a, b, seed=seed).distance[0, 1]))
        half = b.text_index % 2 == 0
        floors.append(float(dynamical_similarity(b.select(half), b.select(~half), seed=seed).distance[0, 1]))
    return torch.tensor(distances, dtype=torch.float64), torch.tensor(floors, dtype=torch.float64)


def _contrasts(record: dict[str, Any], findings: tuple[Finding, ...]) -> tuple[Contrast, ...]:
    """A checkpoint's contrasts with the shuffled control; undecided with NaN numbers, one
    per finding, for a checkpoint written before contrasts were recorded."""
    if "contrasts" in record:
        return tuple(Contrast.from_json(c) for c in record["contrasts"][CONTROL])
    nan = math.nan
    return tuple(Contrast(f.key, CONTROL, nan, (nan, nan), nan, nan, nan, "undecided") for f in findings)


def _load(out: Path, labels: list[str], dsa: tuple[Tensor, Tensor]) -> Series:
    records = [json.loads((out / CHECKPOINTS / label / CHECKPOINT_JSON).read_text()) for label in labels]
    measures = [r["original"]["measures"] for r in records]
    findings = tuple(tuple(Finding.from_json(f) for f in r["original"]["findings"]) for r in records)
    return Series(
        labels=tuple(labels),
        steps=tuple(r["step"] for r in records),
        findings=findings,
        control=tuple(tuple(Finding.from_json(f) for f in r["shuffled"]["findings"]) for r in records),
        contrasts=tuple(_contrasts(r, found) for r, found in zip(records, findings)),
        sublayers=tuple(measures[0]["labels"]),
        depth={
            name: torch.tensor([[float("nan") if v is None else v for v in m[key]] for m in measures])
            for name, key in DEPTH_MEASURES.items()
        },
        dsa_successive=dsa[0],
        dsa_floor=dsa[1],
        out=out,
    )


def _write_summary(series: Series) -> None:
    from tl_dynamics.plot.series import series_sections

    for name, text in (
        (SERIES_JSON, json.dumps(tensor_json(series.to_json()), allow_nan=False)),
        (SERIES_HTML, render_html(
            "tl-dynamics series",
            f"<p class='sub'>{len(series.labels)} checkpoints: {', '.join(series.labels)}</p>",
            series_sections(series),
        )),
    ):
        partial = series.out / f".{name}.partial-{os.getpid()}"
        partial.write_text(text)
        follow_umask(partial)
        os.replace(partial, series.out / name)
    _mark(series.out)


def run_series(
    checkpoints: Sequence[str],
    out: str | Path,
    *,
    model: str | None = None,
    texts: Sequence[str] | None = None,
    n_texts: int = DEFAULT_TEXTS,
    seed: int = 0,
    device: str = "cpu",
    sites: Sequence[str] = SITES,
    n_shuffles: int = ROTATION_SHUFFLES,
    dsa: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Series:
    """Run the report's measures and findings at every checkpoint; write the series.

    Args:
        checkpoints: Hub revisions of ``model`` (e.g. ``["step0", "step1000"]``), or,
            with ``model=None``, folders saved with ``save_pretrained``; in training
            order, each label (revision or folder name) ending in its step.
        out: The series folder (resumed if it holds this series, see module docstring).
        model: Hub name whose revisions ``checkpoints`` are; None for local folders.
        texts: Texts to read (default the first ``n_texts`` of the bundled corpus).
        n_texts: Texts when ``texts`` is None.
        seed: Seed of the shuffled control, the bootstrap and DSA.
        device: Torch device of the models.
        sites: ``("pre", "mid")``, or ``("pre",)`` for parallel-attention models (Pythia).
        n_shuffles: Layer-order shuffles of the rotation null (the report's 1000).
        dsa: Compute the DSA distances (needs dsa-metric); NaN when False.
        overwrite: Replace an ``out`` that tl-dynamics wrote (another series, a report).
        progress: A progress bar over checkpoints.

    Returns:
        The :class:`Series`, also written as ``out/series.json`` and ``out/series.html``.

    Raises:
        DynamicsInputError: labels without a step or not safe as folder names, a model
            folder that does not exist, an ``out`` that must not be written.
    """
    labels = _labels(checkpoints, model)
    sources = [(model, str(c)) if model is not None else (str(c), None) for c in checkpoints]
    inputs = [Path(c) for c in checkpoints if model is None]
    for folder in inputs:
        if not folder.is_dir():
            raise DynamicsInputError(f"checkpoint folder must exist; got {str(folder)!r}")
    texts = list(python_docs()[:n_texts] if texts is None else texts)
    settings = {"checkpoints": [str(c) for c in checkpoints], "model": model, "texts": texts,
                "seed": check_int(seed, "seed", 0), "device": device, "sites": list(sites),
                "n_shuffles": check_int(n_shuffles, "n_shuffles")}
    out = Path(out)
    with writer_lock(out):  # one series writes ``out`` at a time
        _prepare(out, settings, overwrite, inputs)
        folders = [out / CHECKPOINTS / label for label in labels]
        (out / CHECKPOINTS).mkdir(exist_ok=True)
        for folder, (source, revision) in tqdm(
            list(zip(folders, sources)), desc="series", unit="checkpoint", disable=not progress
        ):
            if read_marker(folder) is None or not (folder / CHECKPOINT_JSON).is_file():
                _run_checkpoint(folder, source, revision, texts, settings, inputs)
                _mark(out)
        pairs = max(len(folders) - 1, 0)
        distances = _dsa(folders, seed) if dsa else (torch.full((pairs,), float("nan")),) * 2
        series = _load(out, labels, distances)
        _write_summary(series)
    return series
