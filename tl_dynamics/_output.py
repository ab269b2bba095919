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
  :data:`MARKER_NAME` (``{"kind": "tl-dynamics-report", "version": ..., "files": [...]}``):
  what wrote it and every file it wrote. ``overwrite`` replaces only a folder carrying
  one of the same kind (a report never replaces a comparison) that holds no other file,
  never an input of the same command (or a folder holding one), never the working
  directory or a folder above it. An ``out`` that is a symbolic link (even a dangling
  one: the path is checked as given, not resolved) is refused.
* **One writer at a time.** :func:`writer_lock` holds an exclusive lock (``flock``) on
  ``.<out>.lock`` beside ``out`` for a whole run; a second run fails at once, naming
  the process that holds it. The kernel releases the lock of a killed process, so a
  stale lock file never blocks. Without ``overwrite``, the final rename never replaces
  a folder that appeared meanwhile.
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

import fcntl
import json
import os
import re
import sys
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor

from tl_dynamics._version import __version__
from tl_dynamics.errors import DynamicsInputError, OutputExistsError

__all__ = [
    "MARKER_NAME",
    "REPORT_KIND",
    "COMPARE_KIND",
    "SERIES_KIND",
    "STORE_KIND",
    "LOCK_SUFFIX",
    "KINDS",
    "PARTIAL_TAG",
    "RETIRED_TAG",
    "UMASK",
    "FILE_MODE",
    "FOLDER_MODE",
    "follow_umask",
    "read_json_record",
    "read_marker",
    "read_json_marker",
    "lock_path",
    "check_output",
    "check_writable",
    "refuse_symlink",
    "writer_lock",
    "temporary_name",
    "remove_stale_partials",
    "atomic_folder",
]

MARKER_NAME = "tl-dynamics-output.json"
"""File in every folder written by :func:`atomic_folder`: what wrote it, and its version."""

REPORT_KIND = "tl-dynamics-report"
COMPARE_KIND = "tl-dynamics-compare"
SERIES_KIND = "tl-dynamics-series"  # a checkpoint series and each of its checkpoint folders
KINDS = (REPORT_KIND, COMPARE_KIND, SERIES_KIND)
STORE_KIND = "tl-dynamics-store"
"""What wrote a store folder: its manifest's ``format`` (a store carries no output marker)."""

LOCK_SUFFIX = ".lock"  # .<out>.lock: the writer's lock, beside the folder it guards

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


def save_safetensors(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to the safetensors file ``path``; a failed write raises ``OSError``.

    safetensors reports the system's refusal (disk full, read-only, a file on the way) as a
    ``SafetensorError`` carrying the text ``(os error N)``; it is raised again as the
    ``OSError`` with that ``errno`` and ``filename=path``, which the command line reports in
    one line. The file is created private (0600), as safetensors makes it: see
    :func:`follow_umask`.
    """
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as error:
        code = re.search(r"os error (\d+)", str(error))
        if code is None:
            raise OSError(f"could not write {path}: {error}") from error
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(path)) from error


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
    return read_json_marker(Path(folder) / MARKER_NAME, KINDS)


def read_json_marker(path: Path, kinds: Iterable[str]) -> dict[str, Any] | None:
    """The JSON object in ``path`` when its ``"kind"`` is one of ``kinds``, else ``None``
    (no file, not JSON, not an object, another kind)."""
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("kind") in tuple(kinds) else None


def refuse_symlink(out: str | Path) -> None:
    """Raise ``DynamicsInputError`` when ``out`` itself is a symbolic link (even a dangling
    one), checked on the path as given, before anything resolves it."""
    if os.path.islink(out):
        raise DynamicsInputError(
            f"out {str(out)!r} is a symbolic link (to {os.readlink(out)!r}); pass the folder "
            "itself"
        )


def check_output(
    out: str | Path,
    overwrite: bool,
    inputs: Iterable[str | Path] = (),
    *,
    kind: str | None = None,
) -> None:
    """Refuse an output folder that cannot or must not be written, before any work.

    Args:
        out: The folder to write.
        overwrite: Whether an existing ``out`` may be replaced.
        inputs: Files and folders the command reads (``out`` must not be or hold one).
        kind: What will be written (:data:`REPORT_KIND` or :data:`COMPARE_KIND`): an
            existing ``out`` must be of this kind; ``None`` accepts either (checked again,
            with the kind, by :func:`atomic_folder`).

    Raises:
        FileExistsError: ``out`` exists (a dangling symbolic link included) and
            ``overwrite`` is false.
        ValueError: ``overwrite`` is true but ``out`` is a symbolic link, was not written
            by tl-dynamics, is of another kind, holds a file tl-dynamics did not write,
            is an input of the command, or is the working directory or above it; or
            ``out`` cannot be created (a read-only or missing place, a file on the way).
    """
    if os.path.lexists(out):
        if not overwrite:
            raise OutputExistsError(
                f"output folder {str(out)!r} exists; pass --overwrite to replace it"
            )
        refuse_symlink(out)
        _check_replaceable(out, Path(out).resolve(), inputs, kind)
    check_writable(Path(out).resolve().parent)


def _check_replaceable(
    out: str | Path, target: Path, inputs: Iterable[str | Path], kind: str | None
) -> None:
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
    marker = read_marker(target) if target.is_dir() else None
    if marker is None:
        raise DynamicsInputError(
            f"--overwrite refuses out {str(out)!r}: it was not written by tl-dynamics (no "
            f"{MARKER_NAME} in it); remove it yourself or pass another --out"
        )
    if kind is not None and marker["kind"] != kind:
        raise DynamicsInputError(
            f"--overwrite refuses out {str(out)!r}: it holds a {_kind_name(marker['kind'])}, "
            f"not a {_kind_name(kind)}; pass another --out"
        )
    foreign = sorted(set(_files_under(target)) - set(_listed_files(marker)))
    if foreign:
        raise DynamicsInputError(
            f"--overwrite refuses out {str(out)!r}: it holds {foreign[0]!r}"
            f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}, which "
            "tl-dynamics did not write; move it away or pass another --out"
        )


def _kind_name(kind: str) -> str:
    """``"tl-dynamics-report"`` -> ``"report"``."""
    return kind.removeprefix("tl-dynamics-")


def _files_under(folder: Path) -> list[str]:
    """Paths (relative, ``/``-separated) of everything but folders under ``folder``."""
    return [
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_symlink() or not path.is_dir()
    ]


def _listed_files(marker: dict[str, Any]) -> list[str]:
    """The files a marker says its folder was written with (the marker itself included);
    an older marker that lists none vouches for no file but itself."""
    files = marker.get("files")
    listed = [f for f in files if isinstance(f, str)] if isinstance(files, list) else []
    return [*listed, MARKER_NAME]


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


_HELD_LOCKS: dict[str, tuple[int, int]] = {}  # lock path -> (descriptor, depth), this process's


def lock_path(out: str | Path) -> Path:
    """The lock file of the folder ``out``: ``.<out>.lock`` beside it (``out`` made absolute,
    not resolved, so that ``.`` and ``..`` have names)."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


@contextmanager
def writer_lock(out: str | Path):
    """Hold the exclusive writer's lock of the folder ``out`` for the block.

    An ``flock`` on :func:`lock_path`, which records the holder's process id and command
    line; the file is removed on release. The same process may take it again (nested
    blocks); the kernel releases the lock of a process that dies, so a file left by a
    killed run never blocks the next.

    Raises:
        ValueError: another process holds the lock (the message names it), or the
            folder that would hold ``out`` cannot be written.
    """
    path = lock_path(out)
    key = str(path)
    if key in _HELD_LOCKS:
        descriptor, depth = _HELD_LOCKS[key]
        _HELD_LOCKS[key] = (descriptor, depth + 1)
        try:
            yield path
        finally:
            _HELD_LOCKS[key] = (descriptor, depth)
        return
    check_writable(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = _acquire(path, out)
    _HELD_LOCKS[key] = (descriptor, 1)
    try:
        yield path
    finally:
        del _HELD_LOCKS[key]
        path.unlink(missing_ok=True)  # while still held: no one else holds this file
        os.close(descriptor)


def _acquire(path: Path, out: str | Path) -> int:
    """The descriptor of ``path``, locked exclusively by this process, holder recorded."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(descriptor)
            os.close(descriptor)
            raise DynamicsInputError(
                f"another tl-dynamics run ({holder}) is writing {str(out)!r}; wait for it to "
                f"finish, or pass another folder (its lock: {str(path)!r})"
            ) from None
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:  # released and removed between our open and our lock
            same = False
        if same:
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()} {' '.join(sys.argv)}\n".encode())
            return descriptor
        os.close(descriptor)


def _lock_holder(descriptor: int) -> str:
    """``"process <pid>: <command>"`` as the holder of a lock file recorded itself."""
    text = os.pread(descriptor, 4096, 0).decode("utf-8", "replace").strip()
    pid, _, command = text.partition(" ")
    return f"process {pid}: {command}" if pid.isdigit() else "a process that is starting"


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

    Holds :func:`writer_lock` on ``out`` throughout. The folder gets the marker
    :data:`MARKER_NAME` of ``kind``, listing every file in it, and the umask's modes
    (:func:`follow_umask`); stale temporary folders of killed writes of ``out`` are
    removed first (:func:`remove_stale_partials`).

    Raises:
        FileExistsError, ValueError: as :func:`check_output` (with ``kind``), checked
            again here; and again at the final rename, so that a folder that appeared
            meanwhile is never replaced without ``overwrite``, nor one of another kind.
    """
    if kind not in KINDS:
        raise DynamicsInputError(f"kind must be one of {KINDS}; got {kind!r}")
    out = Path(out)
    with writer_lock(out):
        check_output(out, overwrite, inputs, kind=kind)
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out)
        staging = Path(tempfile.mkdtemp(prefix=temporary_name(out, PARTIAL_TAG), dir=out.parent))
        try:
            yield staging
            files = sorted(_files_under(staging))
            marker = {"kind": kind, "version": __version__, "files": files}
            (staging / MARKER_NAME).write_text(json.dumps(marker))
            follow_umask(staging)
            _replace(staging, out, overwrite, inputs, kind)
        finally:
            if staging.exists():
                shutil.rmtree(staging)


def _replace(
    staging: Path, out: Path, overwrite: bool, inputs: Iterable[str | Path], kind: str
) -> None:
    """Rename ``staging`` onto ``out``, checking ``out`` once more just before."""
    if os.path.lexists(out) and not overwrite:
        raise OutputExistsError(
            f"output folder {str(out)!r} appeared while this run wrote it (another program "
            "made it); nothing was replaced: pass --overwrite or another --out"
        )
    if not os.path.lexists(out):
        os.replace(staging, out)
        return
    check_output(out, overwrite, inputs, kind=kind)
    retired = Path(tempfile.mkdtemp(prefix=temporary_name(out, RETIRED_TAG), dir=out.parent))
    os.replace(out, retired / out.name)
    os.replace(staging, out)
    shutil.rmtree(retired)

