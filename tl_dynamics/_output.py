"""Writing output folders safely: atomic folders, the overwrite rules, versioned JSON files.

What :mod:`tl_dynamics.report` and :mod:`tl_dynamics.report.compare` share when they write a
folder: the folder is written to a temporary sibling that is renamed into place only
when everything succeeded (what goes in it: :mod:`tl_dynamics.report.record`,
:mod:`tl_dynamics.report.html`).

The rules that keep the user's data safe:

* **Check first.** :func:`check_output` runs before any long work: an existing ``out``
  needs ``overwrite``; the folder that will hold ``out`` must be creatable and writable
  (a probe folder is created there and removed).
* **Replace only our own.** Every folder written here carries a marker file,
  :data:`MARKER_NAME` (``{"kind": "tl-dynamics-report", "version": ...}``).
  ``overwrite`` replaces only a folder carrying one, never an input of the same command
  (or a folder holding one), never the working directory or a folder above it.
* **Follow the umask.** Temporary files and folders are created private (0600/0700, as
  ``tempfile`` and safetensors make them); :func:`follow_umask` gives them the modes any
  other tool would (0644 files, 0755 folders under umask 022) before they are renamed
  into place.
* **No leftovers.** An interrupted write removes its temporary folder; one killed
  outright leaves ``.<out>.partial-<pid>-*``, removed by the next write next to it once
  process ``<pid>`` is gone.

Example::

    from tl_dynamics._output import atomic_folder
    with atomic_folder("numbers", overwrite=False, kind="tl-dynamics-report") as staging:
        (staging / "numbers.txt").write_text("1.0")
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any


from tl_dynamics._version import __version__
from tl_dynamics.errors import DynamicsInputError, OutputExistsError

__all__ = [
    "MARKER_NAME",
    "REPORT_KIND",
    "COMPARE_KIND",
    "KINDS",
    "PARTIAL_TAG",
    "RETIRED_TAG",
    "UMASK",
    "FILE_MODE",
    "FOLDER_MODE",
    "follow_umask",
    "read_json_record",
    "read_marker",
    "check_output",
    "check_writable",
    "temporary_name",
    "remove_stale_partials",
    "atomic_folder",
]

MARKER_NAME = "tl-dynamics-output.json"
"""File in every folder written by :func:`atomic_folder`: what wrote it, and its version."""

REPORT_KIND = "tl-dynamics-report"
COMPARE_KIND = "tl-dynamics-compare"
KINDS = (REPORT_KIND, COMPARE_KIND)

PARTIAL_TAG = "partial"  # .<out>.partial-<pid>-<random>: a folder being written
RETIRED_TAG = "old"  # .<out>.old-<pid>-<random>: the replaced folder, until it is removed


def _read_umask() -> int:
    """The process umask, read without changing it (``/proc``), else by a round trip."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS): the only portable way; once, at import
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK  # what open() gives a new file
FOLDER_MODE = 0o777 & ~UMASK  # what mkdir() gives a new folder


def follow_umask(path: str | Path) -> None:
    """Give ``path`` (and everything inside a folder) the modes the umask gives new files.

    Files get :data:`FILE_MODE`, folders :data:`FOLDER_MODE`: what ``open``/``mkdir``
    would have made, where ``tempfile`` and safetensors make private 0600/0700 ones. The
    umask is read once, when this module is imported. Symbolic links are left alone.
    """
    path = Path(path)
    if path.is_symlink():
        return
    if path.is_dir():
        for child in path.iterdir():
            follow_umask(child)
        path.chmod(FOLDER_MODE)
    elif path.is_file():
        path.chmod(FILE_MODE)


def read_json_record(path: Path, version_key: str, newest: int, what: str) -> dict[str, Any]:
    """The JSON object in the file ``path``, whose integer ``version_key`` is at most ``newest``.

    Args:
        path: The file.
        version_key: The field holding the layout version, e.g. ``"schema_version"``.
        newest: The newest version this tl-dynamics reads.
        what: What the file should be, for messages, e.g. ``"a tl-dynamics report"``.

    Raises:
        ValueError: not UTF-8 JSON, not an object, a version that is no integer, or a
            newer one; the message names ``path``.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DynamicsInputError(f"{str(path)!r} is not {what} (not JSON: {error})") from error
    if not isinstance(record, dict):
        raise DynamicsInputError(f"{str(path)!r} is not {what} (not a JSON object)")
    version = record.get(version_key)
    if isinstance(version, bool) or not isinstance(version, int):
        raise DynamicsInputError(
            f"{str(path)!r} has {version_key} {version!r}, not an integer; is it {what}?"
        )
    if version > newest:
        raise DynamicsInputError(
            f"{str(path)!r} has {version_key} {version}, newer than this tl-dynamics "
            f"({__version__}) reads; upgrade tl-dynamics"
        )
    return record


def _is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or inside it (both resolved)."""
    return path == folder or folder in path.parents


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of a folder written by tl-dynamics, or ``None`` when it has none."""
    try:
        marker = json.loads((Path(folder) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("kind") in KINDS else None


def check_output(out: str | Path, overwrite: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse an output folder that cannot or must not be written, before any work.

    Args:
        out: The folder to write.
        overwrite: Whether an existing ``out`` may be replaced.
        inputs: Files and folders the command reads (``out`` must not be or hold one).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is false.
        ValueError: ``overwrite`` is true but ``out`` was not written by tl-dynamics, is
            an input of the command, or is the working directory or above it; or ``out``
            cannot be created (a read-only or missing place, a file on the way).
    """
    target = Path(out).resolve()
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputExistsError(
                f"output folder {str(out)!r} exists; pass --overwrite to replace it"
            )
        _check_replaceable(out, target, inputs)
    check_writable(target.parent)


def _check_replaceable(out: str | Path, target: Path, inputs: Iterable[str | Path]) -> None:
    cwd = Path.cwd().resolve()
    if _is_within(cwd, target):
        raise DynamicsInputError(
            f"--overwrite refuses out {str(out)!r}: it is the working directory or holds it"
        )
    for source in inputs:
        if _is_within(Path(source).resolve(), target):
            raise DynamicsInputError(
                f"--overwrite refuses out {str(out)!r}: it is (or holds) {str(source)!r}, an "
                "input of this command; pass another --out"
            )
    if not target.is_dir() or read_marker(target) is None:
        raise DynamicsInputError(
            f"--overwrite refuses out {str(out)!r}: it was not written by tl-dynamics (no "
            f"{MARKER_NAME} in it); remove it yourself or pass another --out"
        )


def check_writable(folder: str | Path) -> None:
    """Raise ``ValueError`` unless a folder can be created at or inside ``folder``.

    Creates and removes a probe folder in ``folder``, or in its nearest existing
    ancestor when it does not exist yet.
    """
    anchor = Path(folder).resolve()
    while not anchor.exists():
        anchor = anchor.parent
    if not anchor.is_dir():
        raise DynamicsInputError(
            f"cannot write {str(folder)!r}: {str(anchor)!r} is a file, not a folder"
        )
    try:
        probe = tempfile.mkdtemp(prefix=".tl-dynamics-probe-", dir=anchor)
        os.rmdir(probe)
    except OSError as error:
        raise DynamicsInputError(
            f"cannot write {str(folder)!r}: {str(anchor)!r} is not writable "
            f"({error.strerror or error})"
        ) from error


def temporary_name(out: Path, tag: str) -> str:
    """Prefix of a temporary sibling of ``out``: ``.<out>.<tag>-<pid>-`` (see
    :func:`remove_stale_partials`)."""
    return f".{out.name}.{tag}-{os.getpid()}-"


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_partials(out: str | Path) -> list[Path]:
    """Remove the temporary folders that killed writes of ``out`` left next to it.

    Only folders named as :func:`atomic_folder` names them (``.<out>.partial-<pid>-*``
    and ``.<out>.old-<pid>-*``) whose process ``<pid>`` no longer runs on this machine.

    Returns:
        The folders removed.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    pattern = re.compile(
        rf"^\.{re.escape(out.name)}\.(?:{PARTIAL_TAG}|{RETIRED_TAG})-(\d+)-[^/]+$"
    )
    removed = []
    for candidate in out.parent.iterdir():
        match = pattern.match(candidate.name)
        if match and candidate.is_dir() and not candidate.is_symlink():
            if _process_is_gone(int(match.group(1))):
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(candidate)
    return removed


@contextmanager
def atomic_folder(
    out: str | Path, overwrite: bool, *, kind: str = REPORT_KIND, inputs: Iterable[str | Path] = ()
):
    """Yield a temporary folder that replaces ``out`` only when the block succeeds.

    The folder gets the marker :data:`MARKER_NAME` of ``kind`` and the umask's modes
    (:func:`follow_umask`); stale temporary folders of killed writes of ``out`` are
    removed first (:func:`remove_stale_partials`).

    Raises:
        FileExistsError, ValueError: as :func:`check_output`, checked again here.
    """
    if kind not in KINDS:
        raise DynamicsInputError(f"kind must be one of {KINDS}; got {kind!r}")
    out = Path(out)
    check_output(out, overwrite, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    staging = Path(tempfile.mkdtemp(prefix=temporary_name(out, PARTIAL_TAG), dir=out.parent))
    try:
        yield staging
        (staging / MARKER_NAME).write_text(json.dumps({"kind": kind, "version": __version__}))
        follow_umask(staging)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=temporary_name(out, RETIRED_TAG), dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)

