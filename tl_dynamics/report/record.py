"""The ``metrics.json`` record: its schema, how tensors become JSON, writing it, reading it back.

A report folder holds every number behind its figures in ``metrics.json``
(:func:`tl_dynamics.report.run_report`), and ``tl-dynamics compare`` reads those records
back (:func:`read_report`). JSON has no NaN or infinity, so :func:`tensor_json` writes
every non-finite float as ``null``; a record read back is checked before any number of it
is used: the schema version, the keys compare reads, verdicts from the known set,
non-empty labels, and numbers that are finite or ``null``. A hand-edited or damaged
record is refused with one line naming the file and the field.

Example::

    import torch
    from tl_dynamics.report.record import tensor_json
    tensor_json({"curve": torch.tensor([1.0, float("nan"), float("inf")])})
    # {'curve': [1.0, None, None]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from tl_dynamics._output import read_json_record
from tl_dynamics._version import __version__
from tl_dynamics.errors import DynamicsInputError, InputNotFoundError

__all__ = [
    "SCHEMA_VERSION",
    "TWIN_FILE",
    "TWIN_TEXTS",
    "VERDICTS",
    "tensor_json",
    "write_json",
    "write_record",
    "read_report",
]

SCHEMA_VERSION = 2
"""Version of the layout of ``metrics.json``; bumped when a key changes meaning.

2: every entry of ``findings`` is a statistical test: ``effect``, ``effect_unit``, ``ci``
(95 % bootstrap interval over texts), ``p_value``, ``p_adjusted`` (Holm across all
findings of the condition), ``null``, ``null_value``, ``min_effect``, ``direction`` and
``alpha`` join ``observed`` and ``numbers``; ``holds`` / ``verdict`` follow the rule of
:mod:`tl_dynamics.findings`; ``high_correlation`` is split into ``high_correlation``
and ``correlation_rises``. Non-finite numbers are ``null``.
"""

TWIN_FILE = "dynamics_twin.safetensors"
"""The random-weight twin's trajectories in a report folder (``report --random-twin``),
beside ``dynamics.safetensors``; ``tl-dynamics compare`` reads it for its DSA control."""

TWIN_TEXTS = 256
"""Texts the random-weight twin is collected on, and the samples per condition that
``tl-dynamics compare``'s dynamical similarity reads from every saved trajectory file
(far fewer than the findings' bootstrap needs)."""

VERDICTS = {"yes": True, "no": False, "undecided": None}
"""A finding's ``verdict`` in ``metrics.json`` and the ``holds`` it stands for."""

# Per condition, the curves compare reads (besides "labels"); each a list of numbers.
CURVE_KEYS = (
    "norms_mean",
    "fig1e_cosine_similarity_mean",
    "fig1f_velocity_mean",
    "fig1h_unit_correlation_mean",
    "fig1h_mutual_information_mean_nats",
)
# Per finding, the numbers compare shows (finite or null).
FINDING_NUMBERS = ("effect", "p_value", "p_adjusted")


def tensor_json(value: Any) -> Any:
    """Tensors as nested lists of Python floats; NaN and +-inf as ``None`` (JSON has
    neither), in tensors and plain floats, inside dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return tensor_json(value.detach().cpu().tolist())
    if isinstance(value, dict):
        return {k: tensor_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tensor_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as strict JSON (tensors as lists, non-finite numbers as ``null``)."""
    path.write_text(json.dumps(tensor_json(record), allow_nan=False))


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` (``metrics.json``, ``compare.json``) as :func:`write_json` does,
    headed by ``schema_version`` (:data:`SCHEMA_VERSION`) and ``tl_dynamics_version``."""
    write_json(path, {"schema_version": SCHEMA_VERSION, "tl_dynamics_version": __version__} | record)


def read_report(folder: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` of a report folder, checked for everything compare reads.

    Raises:
        InputNotFoundError: no ``metrics.json`` in ``folder``.
        DynamicsInputError: not JSON, a schema version that is no integer or newer than
            this version of tl-dynamics reads, a key missing, a verdict outside
            :data:`VERDICTS`, an empty or non-string label, or a number that is not
            finite (the message names the file and the field).
    """
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise InputNotFoundError(
            f"{str(folder)!r} is not a tl-dynamics report: it has no metrics.json "
            "(write one with 'tl-dynamics report')"
        )
    record = read_json_record(path, "schema_version", SCHEMA_VERSION, "a tl-dynamics report")
    model_name = _require(path, record, "model", "model_name")
    _check_label(path, model_name, "['model']['model_name']")
    conditions = _require(path, record, "conditions")
    if not isinstance(conditions, dict) or not conditions:
        raise DynamicsInputError(f"{str(path)!r} has no conditions; expected e.g. 'original'")
    for condition in conditions:
        _check_condition(path, record, condition)
    findings = record.get("findings", {})
    if not isinstance(findings, dict):
        raise DynamicsInputError(f"{str(path)!r}['findings'] must be an object; got {findings!r}")
    for condition, entries in findings.items():
        if condition != CONTRASTS_KEY:
            _check_findings(path, f"['findings'][{condition!r}]", entries)
    _check_regimes(path, record.get("regimes"))
    return record


REGIMES_NUMBERS = ("n_regimes", "rank", "r2_heldout", "r2_single", "log_likelihood_heldout")  # regimes' scalars
CONTRASTS_KEY = "contrasts"  # findings[...]: the paired contrasts with the controls, not a condition


def _require(path: Path, record: dict[str, Any], *keys: str) -> Any:
    """``record[k1][k2]...``, or one line naming ``path`` and the key that is absent."""
    value: Any = record
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            where = "".join(f"[{k!r}]" for k in keys[: depth + 1])
            raise DynamicsInputError(
                f"{str(path)!r} has no {where}; is it a complete tl-dynamics report?"
            )
        value = value[key]
    return value


def _field_error(path: Path, where: str, expected: str, value: Any) -> DynamicsInputError:
    return DynamicsInputError(f"{str(path)!r}{where} must be {expected}; got {value!r}")


def _check_label(path: Path, value: Any, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _field_error(path, where, "a non-empty string", value)


def _check_numbers(path: Path, where: str, values: Any) -> None:
    """Every number in ``values`` (a number or a list of them) finite or ``null``."""
    items = values if isinstance(values, list) else [values]
    for i, value in enumerate(items):
        ok = value is None or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
        if not ok:
            inside = f"[{i}]" if isinstance(values, list) else ""
            raise _field_error(path, where + inside, "a finite number or null", value)


def _check_condition(path: Path, record: dict[str, Any], condition: str) -> None:
    """The labels and curves of one condition: non-empty strings, lists of finite numbers."""
    base = f"['conditions'][{condition!r}]"
    labels = _require(path, record, "conditions", condition, "labels")
    if not isinstance(labels, list) or not labels:
        raise _field_error(path, base + "['labels']", "a non-empty list of labels", labels)
    for i, label in enumerate(labels):
        _check_label(path, label, f"{base}['labels'][{i}]")
    for key in CURVE_KEYS:
        curve = _require(path, record, "conditions", condition, key)
        if not isinstance(curve, list):
            raise _field_error(path, f"{base}[{key!r}]", "a list of numbers", curve)
        _check_numbers(path, f"{base}[{key!r}]", curve)


def _check_findings(path: Path, where: str, entries: Iterable[Any]) -> None:
    """Each finding: an object with a key, a claim, a known verdict and finite-or-null numbers."""
    if not isinstance(entries, list):
        raise _field_error(path, where, "a list of findings", entries)
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise _field_error(path, at, "a finding object", entry)
        for key in ("key", "claim"):
            _check_label(path, entry.get(key), f"{at}[{key!r}]")
        verdict = entry.get("verdict")
        if verdict is not None and verdict not in VERDICTS:
            raise _field_error(path, f"{at}['verdict']", f"one of {sorted(VERDICTS)}", verdict)
        holds = entry.get("holds")
        if not any(holds is value for value in VERDICTS.values()):
            raise _field_error(path, f"{at}['holds']", "true, false or null", holds)
        if verdict is not None and VERDICTS[verdict] is not holds:
            raise _field_error(path, f"{at}['verdict']", f"{_verdict_of(holds)!r} (its 'holds')", verdict)
        for key in FINDING_NUMBERS:
            _check_numbers(path, f"{at}[{key!r}]", entry.get(key))
        _check_numbers(path, f"{at}['ci']", list(entry.get("ci") or []))


def _check_regimes(path: Path, regimes: Any) -> None:
    """``metrics.json["regimes"]``: absent or null (not run), or an object whose numbers,
    and its control's, are finite or null."""
    if regimes is None:
        return
    if not isinstance(regimes, dict):
        raise _field_error(path, "['regimes']", "an object or null", regimes)
    for key in REGIMES_NUMBERS:
        _check_numbers(path, f"['regimes'][{key!r}]", regimes.get(key))
    _check_regimes(path, regimes.get("control"))


def _verdict_of(holds: bool | None) -> str:
    return next(word for word, value in VERDICTS.items() if value is holds)
