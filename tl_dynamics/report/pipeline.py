"""The report's pipeline: its stages in order, timed, driven by one frozen settings object.

:func:`run_report` runs the paper's two conditions on the same texts, the original
token order and the token-shuffled control (section 2.1), computes every measure of
Figures 1-4 (:mod:`tl_dynamics.report.measures`), tests the paper's findings on the
numbers (:mod:`tl_dynamics.findings`), adds the "Beyond the paper" tests
(:mod:`tl_dynamics.report.beyond`) and writes a folder:

* ``report.html``: self-contained (plotly's JavaScript embedded once), opens offline
  (:mod:`tl_dynamics.report.html`, :mod:`tl_dynamics.report.figures`);
* ``metrics.json``: every number behind every figure, with a schema version
  (:mod:`tl_dynamics.report.record`);
* ``dynamics.safetensors`` / ``dynamics.json`` and ``dynamics_shuffled.*``: the
  trajectories, loadable with :meth:`tl_dynamics.DynamicsCache.load`.

The folder is written atomically: everything goes to a temporary sibling folder that is
renamed into place at the end, so an interrupted run leaves no half-written report, and
an existing folder is replaced only with ``overwrite=True`` and only when tl-dynamics
wrote it (:mod:`tl_dynamics._output`).

Example::

    import tl_dynamics as tld
    from tl_dynamics.report import ReportSettings, run_report
    model = tld.models.load_model()
    settings = ReportSettings(corpus="python-docs", seed=0)
    run_report(model, tld.data.python_docs()[:200], "smollm2-report", settings)
"""

from __future__ import annotations

import dataclasses
import html
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tl_dynamics import metrics
from tl_dynamics._output import REPORT_KIND, atomic_folder, check_output
from tl_dynamics._version import __version__
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.collect import collect
from tl_dynamics.embed import CAE_EPOCHS
from tl_dynamics.errors import DynamicsInputError, InputTypeError
from tl_dynamics.hooks import TLModel
from tl_dynamics.interventions import DEFAULT_GRID
from tl_dynamics.plot.regimes import regimes_section
from tl_dynamics.report import beyond as beyond_module
from tl_dynamics.report import findings as findings_module
from tl_dynamics.report.figures import beyond_figures, condition_figures, trajectory_figures
from tl_dynamics.report.html import (
    TRAJECTORY_TEXT,
    beyond_section_html,
    findings_table,
    provenance_note,
    write_page,
)
from tl_dynamics.report.measures import (
    MI_METHOD,
    ROTATION_SHUFFLES,
    condition_measures,
    measures_json,
    TrajectoryMeasures,
    teleport_sweeps,
    trajectory_fits,
    trajectory_json,
)
from tl_dynamics.report.record import CONTRASTS_KEY, TWIN_FILE, TWIN_TEXTS, write_record
from tl_dynamics.report.tokens import REGIMES_TEXT, token_regimes
from tl_dynamics.similarity import check_twin_model, random_weight_twin

__all__ = [
    "REPORT_FILES",
    "twin_contrasts",
    "ReportSettings",
    "StageTimer",
    "collect_twin",
    "run_report",
]

REPORT_FILES = ("report.html", "metrics.json", "dynamics.safetensors", "dynamics.json")


@dataclass(frozen=True)
class ReportSettings:
    """How a report is run: everything :func:`run_report` takes besides the model, the
    texts and the folder.

    Attributes:
        corpus: Name of the texts' source, for the record.
        batch_size: Texts per forward pass.
        seed: Seed of the shuffled control, the rotation null, the PCA, the autoencoder,
            the bootstraps and the random-weight twin.
        overwrite: Replace an existing ``out`` that tl-dynamics wrote (see
            :func:`tl_dynamics._output.check_output`).
        progress: Show progress bars.
        n_shuffles: Layer-order shuffles of the rotation null (the paper: 1000).
        cae_epochs: Training epochs of the compressing autoencoder.
        grid: Teleport grid side (``grid x grid`` points; the paper: about 10).
        jacobian: Also measure the Jacobian spectra of the "Beyond the paper" section
            (:mod:`tl_dynamics.report.beyond`; tens of seconds per teleported layer).
        random_twin: Collect the first :data:`~tl_dynamics.report.record.TWIN_TEXTS`
            texts through a random-weight twin of the model
            (:func:`tl_dynamics.random_weight_twin`, one more forward pass over those
            texts) into ``dynamics_twin.safetensors``: the training control of every
            Figure 1-2 finding (``findings.contrasts.random_twin`` in metrics.json) and of
            ``tl-dynamics compare``'s dynamical similarity. ``None`` (the default): whenever
            the model can be copied (a TransformerBridge over a Hugging Face model), else
            left out with a note; ``True``: required (an error if it cannot be copied);
            ``False``: left out.
        regimes: Also fit regimes over tokens (:mod:`tl_dynamics.report.tokens`): the
            first :data:`~tl_dynamics.report.tokens.REGIMES_TEXTS` texts read at every
            token at the middle sublayer, an autoregressive
            HMM against one linear system and the token-shuffled control, in the section
            "Regimes over tokens" and ``metrics.json["regimes"]`` (None when off). Cost:
            one more forward pass over those texts per condition with every position
            kept in memory, plus the ARHMM fits (seconds).
    """

    corpus: str | None = None
    batch_size: int = 16
    seed: int = 0
    overwrite: bool = False
    progress: bool = True
    n_shuffles: int = ROTATION_SHUFFLES
    cae_epochs: int = CAE_EPOCHS
    grid: int = DEFAULT_GRID
    jacobian: bool = False
    random_twin: bool | None = None
    regimes: bool = False


@dataclass
class StageTimer:
    """Wall time of each stage of a report, in seconds (in the order the stages ran)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, progress: bool) -> Iterator[None]:
        """Time the block; print the stage name when progress is shown."""
        if progress:
            tqdm.write(f"[tl-dynamics] {name} ...")
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _finding(found: list[findings_module.Finding], key: str) -> findings_module.Finding:
    """The finding with ``key``."""
    return next(f for f in found if f.key == key)


def twin_contrasts(original: DynamicsCache, twin: DynamicsCache, seed: int) -> list[findings_module.Contrast]:
    """The Figure 1-2 findings on the twin's texts, original minus random-weight twin,
    paired over those texts (the twin runs the first texts of the report)."""
    texts = torch.unique(twin.text_index)
    subset = original.select(torch.isin(original.text_index, texts))
    found = [
        findings_module.dynamics_findings(
            dyn, metrics.mutual_information(dyn.resid, method=MI_METHOD), seed=seed
        )
        for dyn in (subset, twin)
    ]
    return findings_module.contrasts(*found, "random_twin")


def collect_twin(model: TLModel, texts: Sequence[str], settings: ReportSettings) -> DynamicsCache:
    """Trajectories of the first :data:`~tl_dynamics.report.record.TWIN_TEXTS` texts
    through a random-weight twin of ``model`` (same architecture, freshly initialised
    with ``settings.seed``)."""
    twin = random_weight_twin(model, seed=settings.seed)
    return collect(
        twin, texts[:TWIN_TEXTS], batch_size=settings.batch_size, corpus=settings.corpus,
        progress=settings.progress,
    )


def _with_twin(model: TLModel, random_twin: bool | None, progress: bool) -> bool:
    """Whether the report runs the random-weight twin (:attr:`ReportSettings.random_twin`):
    ``True`` checks that ``model`` can be copied (raising before any work), ``None`` runs
    it when it can."""
    if random_twin is False:
        return False
    try:
        check_twin_model(model)
    except InputTypeError as error:
        if random_twin:
            raise
        if progress:
            tqdm.write(f"[tl-dynamics] no random-weight twin: {error}")
        return False
    return True


def _settings(settings: ReportSettings | None, options: dict[str, Any]) -> ReportSettings:
    """``settings``, or one built from the keywords of :class:`ReportSettings`."""
    if settings is None:
        names = {f.name for f in dataclasses.fields(ReportSettings)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise DynamicsInputError(
                f"run_report's keywords must be fields of ReportSettings; got {unknown}"
            )
        return ReportSettings(**options)
    if not isinstance(settings, ReportSettings) or options:
        raise DynamicsInputError(
            "settings must be a ReportSettings (and no other keywords with it); "
            f"got {type(settings).__name__} and {sorted(options)}"
        )
    return settings


def run_report(
    model: TLModel,
    texts: Sequence[str],
    out: str | Path,
    settings: ReportSettings | None = None,
    **options: Any,
) -> dict[str, float]:
    """Run every measure on ``texts`` in both conditions and write the report folder.

    Args:
        model: A TransformerLens model in eval mode.
        texts: The texts (the same ones in both conditions).
        out: The report folder to write.
        settings: How to run it (:class:`ReportSettings`); instead, its fields may be
            given as keywords (``run_report(model, texts, out, seed=1)``).

    Returns:
        Wall time of each stage in seconds.
    """
    settings = _settings(settings, options)
    seed, progress = settings.seed, settings.progress
    out = Path(out)
    check_output(out, settings.overwrite, kind=REPORT_KIND)
    with_twin = _with_twin(model, settings.random_twin, progress)
    timer = StageTimer()
    with timer.stage("collect", progress):
        original = collect(
            model, texts, batch_size=settings.batch_size, corpus=settings.corpus, progress=progress
        )
        shuffled = collect(
            model, texts, batch_size=settings.batch_size, corpus=settings.corpus, shuffle=True,
            seed=seed, progress=progress,
        )
    conditions = (("original", original), ("shuffled", shuffled))
    with timer.stage("measures", progress):
        measures = {
            name: condition_measures(dyn, seed, progress, settings.n_shuffles)
            for name, dyn in conditions
        }
    with timer.stage("trajectories", progress):
        fits = {name: trajectory_fits(dyn, seed, progress, settings.cae_epochs) for name, dyn in conditions}
    with timer.stage("teleports", progress):
        trajectories = {
            name: TrajectoryMeasures(pca, autoencoder, *teleport_sweeps(model, pca, progress, settings.grid))
            for name, (pca, autoencoder) in fits.items()
        }
    with timer.stage("findings", progress):
        found = {
            name: findings_module.decide(
                findings_module.dynamics_findings(
                    dyn, measures[name].mutual_information, measures[name].rotation_null,
                    unit_correlation=measures[name].unit_correlation, seed=seed,
                )
                + findings_module.trajectory_findings(
                    trajectories[name].pca, trajectories[name].prompt_sweeps, dyn, seed=seed
                )
            )
            for name, dyn in conditions
        }
    twin = None
    if with_twin:
        with timer.stage("random-weight twin", progress):
            twin = collect_twin(model, texts, settings)
    with timer.stage("beyond the paper", progress):
        beyond = beyond_module.beyond_measures(
            model, original, _finding(found["original"], "rotations_exceed_null"),
            trajectories["original"].sweep, seed=seed, jacobian=settings.jacobian,
            progress=progress,
            controls={"shuffled": shuffled} | ({} if twin is None else {"random_twin": twin}),
        )
    regime_fit = None
    if settings.regimes:
        with timer.stage("regimes", progress):
            regime_fit = token_regimes(model, texts, seed, batch_size=settings.batch_size,
                                       corpus=settings.corpus, progress=progress)
    with timer.stage("contrasts", progress):
        contrasts = {
            "shuffled": findings_module.contrasts(found["original"], found["shuffled"], "shuffled"),
            "random_twin": None if twin is None else twin_contrasts(original, twin, seed),
        }
    with timer.stage("figures", progress):
        sections = [
            ("Findings", findings_table(found["original"], found["shuffled"], contrasts), []),
            ("Figures 1-2: original texts", "", condition_figures(original, measures["original"])),
            ("Figures 1-2: shuffled control", "", condition_figures(shuffled, measures["shuffled"])),
            ("Figures 3-4: original texts", TRAJECTORY_TEXT, trajectory_figures(trajectories["original"])),
            ("Figures 3-4: shuffled control", "", trajectory_figures(trajectories["shuffled"])),
            ("Beyond the paper", beyond_section_html(beyond),
             beyond_figures(beyond, measures["original"].rotation_null)),
        ]
        if regime_fit is not None:
            _, regimes_text, regimes_figures = regimes_section(regime_fit)
            sections.append(("Regimes over tokens", REGIMES_TEXT + regimes_text, regimes_figures))
    with timer.stage("write", progress), atomic_folder(out, settings.overwrite) as staging:
        meta = original.metadata
        intro = (
            f"<p class='sub'>{html.escape(meta.model_name)} · {meta.n_layers} layers · "
            f"d_model {meta.d_model} · {len(texts)} texts from {html.escape(str(settings.corpus))} · "
            f"last token · seed {seed} · tl-dynamics {__version__}</p>"
            + provenance_note(meta.provenance)
        )
        write_page(staging / "report.html", "Transformer dynamics report", intro, sections)
        write_record(
            staging / "metrics.json",
            {
                "model": meta.to_json() | {"texts": None},
                "n_texts": len(texts),
                "corpus": settings.corpus,
                "seed": seed,
                "conditions": {
                    name: measures_json(dyn, measures[name]) | trajectory_json(trajectories[name])
                    for name, dyn in conditions
                },
                "findings": {name: [f.to_json() for f in fs] for name, fs in found.items()}
                | {CONTRASTS_KEY: {
                    name: None if cs is None else [c.to_json() for c in cs]
                    for name, cs in contrasts.items()
                }},
                "beyond": beyond_module.beyond_json(beyond),
                "regimes": None if regime_fit is None else regime_fit.to_json(),
                "stage_seconds": timer.seconds,
            },
        )
        original.save(staging / "dynamics.safetensors")
        shuffled.save(staging / "dynamics_shuffled.safetensors")
        if twin is not None:
            twin.save(staging / TWIN_FILE)
    return timer.seconds
