"""``DynamicsStore``: residual-stream trajectories on disk, in shards, resumable.

One trajectory of Llama-3.1-8B is 64 sublayers x 4096 units of float32: 1 MiB per
sample, so a few thousand texts no longer fit in memory, and a run of hours should
survive being killed. A store streams the trajectories to a folder as they are
collected:

* **Shards.** Every few hundred samples (:data:`SHARD_BYTES`, about 256 MiB) the
  collected rows are written as one safetensors file (``resid``, ``text_index``,
  ``position``; rows in text order, then position order), named after the writing
  process: ``shard-r0000-000000.safetensors``.
* **Manifest.** ``manifest.json`` holds the sublayer labels, the
  :class:`~tl_dynamics.cache.DynamicsMetadata`, the list of shards with the texts each
  one holds and each file's size and SHA-256, and a fingerprint of the run: model, dtype,
  positions, sites, shuffle, seed, labels and a SHA-256 of the texts. A later run into
  the same folder with other settings or other texts is refused instead of mixing two
  experiments.
* **Texts.** The texts themselves (unless ``keep_texts=False``) are written once, to
  ``texts.json``, whose SHA-256 is the fingerprint's: the manifest, rewritten after every
  shard, stays small, and a run holds them once. (Stores of format 1 kept them in the
  manifest; they are read as before.)
* **Atomic writes.** A shard is written under a temporary name (``.tmp-...``) and
  renamed into place; then the manifest is rewritten the same way (temporary file,
  ``fsync``, ``os.replace``). A process killed at any instant leaves the manifest
  listing only complete shards; what it left half-done (temporary files, a shard
  renamed but not yet listed) is removed when the next run starts.
* **Resume.** :func:`collect_to_store` runs only the texts the manifest does not list
  yet, keeping their indices into the original list: run the same command again after
  a crash and every text ends up in the store exactly once.
* **Checksums.** A resume first checks every listed shard against its SHA-256; a
  damaged or missing shard is dropped from the manifest (with a warning) and its texts
  are collected again. :meth:`DynamicsStore.open` checks that each shard is there with
  its size, and reading a shard checks its SHA-256: a damaged store fails naming the
  shard and the command that repairs it (the same collection again).
* **Names.** Every file name a manifest lists is checked when it is read: a shard is
  a bare ``shard-r<rank>-<number>.safetensors``, the texts file ``texts.json``. Any
  other name (``../victim.txt``, an absolute path) makes the store damaged, refused in
  one line before anything is written. Only this module's own names are ever removed:
  a temporary ``.tmp-<name>.<pid>`` of one of them, never a user's ``.tmp-notes.txt``.
* **One writer.** :func:`collect_to_store` (and rank 0 of a data-parallel job) holds
  the store's lock (:func:`tl_dynamics._output.writer_lock`) for the whole run: a
  second run on the same store fails at once, naming the first.
* **Permissions.** Shards and manifests follow the umask like any file a tool writes
  (0644 under umask 022), not safetensors' private 0600.
* **Data parallel.** Several processes can fill one store (see
  :mod:`tl_dynamics.distributed`): each writes its own shards and its own partial
  manifest ``manifest-r0001.json``; :func:`consolidate` folds them into the manifest.

Only one run (or one ``torchrun`` job) writes a store at a time. Reading is
independent of how the store was written: :meth:`DynamicsStore.load` returns exactly
the :class:`~tl_dynamics.cache.DynamicsCache` that :func:`tl_dynamics.collect` gives in
memory, and :meth:`DynamicsStore.iter_shards` visits it a shard at a time (metrics that
never need it whole are in :mod:`tl_dynamics.streaming`). Nothing is pickled.

Example::

    import tl_dynamics as tld
    from tl_dynamics.store import DynamicsStore, collect_to_store

    model = tld.models.load_model()                      # SmolLM2-135M, offline
    texts = tld.data.python_docs()[:200]
    settings = tld.CollectSettings(batch_size=32)        # tld.collect's keywords
    store = collect_to_store(model, texts, "smollm2-store", settings, shard_size=64)
    # killed half-way? the same line again runs only the missing texts
    len(store), store.labels[:3]                         # 200 ('0_pre', '0_mid', '1_pre')
    [chunk.velocity().mean(0) for chunk in store.iter_shards()]
    dyn = DynamicsStore.open("smollm2-store").load()      # == tld.collect(model, texts)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics._digest import file_digest
from tl_dynamics._output import follow_umask, read_json_record, refuse_symlink, save_safetensors, writer_lock
from tl_dynamics._version import __version__
from tl_dynamics.cache import DynamicsCache, DynamicsMetadata
from tl_dynamics.collect import (
    CollectedBatch,
    CollectSettings,
    collect_metadata,
    iter_batches,
)
from tl_dynamics.data import validate_texts
from tl_dynamics.errors import DynamicsInputError, InputNotFoundError
from tl_dynamics.hooks import TLModel, check_model, trajectory_hooks

__all__ = [
    "STORE_FORMAT",
    "STORE_FORMAT_VERSION",
    "MANIFEST_NAME",
    "TEXTS_NAME",
    "SHARD_BYTES",
    "ShardRecord",
    "DynamicsStore",
    "texts_digest",
    "consolidate",
    "prepare_store",
    "append_to_store",
    "collect_to_store",
]

STORE_FORMAT = "tl-dynamics-store"
"""Value of the ``format`` field of a manifest."""

STORE_FORMAT_VERSION = 2
"""Version of the on-disk layout; a newer one is refused with a request to upgrade.
Version 2 keeps the texts in ``texts.json`` instead of in the manifest's metadata."""

MANIFEST_NAME = "manifest.json"
TEXTS_NAME = "texts.json"
PARTIAL_MANIFEST_NAME = "manifest-r{rank:04d}.json"  # one per data-parallel rank while it writes
PARTIAL_MANIFEST_GLOB = "manifest-r*.json"
SHARD_NAME = "shard-r{rank:04d}-{number:06d}.safetensors"
SHARD_GLOB = "shard-r*.safetensors"
SHARD_PATTERN = re.compile(r"shard-r\d{4}-\d{6}\.safetensors")
PARTIAL_MANIFEST_PATTERN = re.compile(r"manifest-r\d{4}\.json")
TEMP_PREFIX = ".tmp-"  # files being written; renamed into place once complete
TEMP_PATTERN = re.compile(
    rf"{re.escape(TEMP_PREFIX)}(?:{re.escape(MANIFEST_NAME)}|{re.escape(TEXTS_NAME)}|"
    rf"{SHARD_PATTERN.pattern}|{PARTIAL_MANIFEST_PATTERN.pattern})\.\d+"
)
"""A temporary file of this module (``.tmp-<one of its names>.<pid>``): only these are
ever removed as leftovers, never another file that merely starts with ``.tmp-``."""

SHARD_BYTES = 256 * 2**20
"""Default shard size: 256 MiB of float32, i.e. 256 samples of Llama-3.1-8B (64 x 4096)."""

UNCHECKED_METADATA = ("texts", "corpus", "version")
"""Metadata that may differ when a run resumes: they do not change the numbers."""

RESID_BYTES = 4  # float32, the dtype of every collected trajectory
SHA_MISMATCH = "its SHA-256 differs from the one the manifest lists"

REPAIR = (
    "run the collection that wrote the store again (the same 'tl-dynamics collect ... --out "
    "{path}' command, or collect_to_store with the same model, texts and settings): it "
    "checks every shard and collects the texts of a damaged or missing one again"
)
"""How to repair a store with a damaged or missing shard; ``{path}`` is the store folder."""


@dataclass(frozen=True)
class ShardRecord:
    """One shard file as the manifest lists it.

    Attributes:
        file: File name inside the store folder.
        rank: Data-parallel rank of the process that wrote it (0 for a single process).
        number: Sequence number among that rank's shards.
        text_index: Indices of the texts it holds, ascending.
        text_rows: Samples (rows) of each of those texts.
        size: Size of the file in bytes (``None`` in stores written before checksums).
        sha256: SHA-256 (hex) of the file (``None`` likewise).
    """

    file: str
    rank: int
    number: int
    text_index: tuple[int, ...]
    text_rows: tuple[int, ...]
    size: int | None = None
    sha256: str | None = None

    @property
    def rows(self) -> int:
        """Number of samples in the shard."""
        return sum(self.text_rows)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of the fields."""
        return {
            **dataclasses.asdict(self),
            "text_index": list(self.text_index),
            "text_rows": list(self.text_rows),
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> ShardRecord:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: ``file`` is not a bare shard name (``shard-r0000-000000.safetensors``):
                a manifest may not point outside its folder.
        """
        file = record["file"]
        if not isinstance(file, str) or not SHARD_PATTERN.fullmatch(file):
            raise ValueError(f"shard file {file!r} is not a shard name like {SHARD_NAME!r}")
        return cls(
            file=file,
            rank=int(record["rank"]),
            number=int(record["number"]),
            text_index=tuple(int(i) for i in record["text_index"]),
            text_rows=tuple(int(n) for n in record["text_rows"]),
            size=None if record.get("size") is None else int(record["size"]),
            sha256=None if record.get("sha256") is None else str(record["sha256"]),
        )

    def problem(self, folder: Path, *, checksum: bool) -> str | None:
        """What is wrong with this shard's file in ``folder``, or ``None`` when it is sound.

        Checks that the file exists with the listed size, and with ``checksum`` also its
        SHA-256 (which reads the whole file, a block at a time).
        """
        path = folder / self.file
        if not path.is_file():
            return "the file is missing"
        if self.size is not None and path.stat().st_size != self.size:
            return f"the file has {path.stat().st_size} bytes, the manifest lists {self.size}"
        if checksum and self.sha256 is not None:
            return None if file_digest([path])[1] == self.sha256 else SHA_MISMATCH
        if checksum:
            return self.check_bytes(path.read_bytes())
        return None

    def check_bytes(self, content: bytes) -> str | None:
        """What is wrong with ``content`` as this shard's file, or ``None`` when it is sound."""
        if self.sha256 is not None and hashlib.sha256(content).hexdigest() != self.sha256:
            return SHA_MISMATCH
        if self.sha256 is None:  # a store written before checksums: can it be read at all?
            try:
                load_bytes(content)
            except SafetensorError as error:
                return f"it is no readable safetensors file ({error})"
        return None


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 (hex) of the texts in order: equal digests mean the same list of texts.

    It is the SHA-256 of ``texts.json``, which holds exactly :func:`_texts_json`'s string.
    """
    return hashlib.sha256(_texts_json(texts).encode("utf-8")).hexdigest()


def _texts_json(texts: Sequence[str]) -> str:
    """The texts as a JSON array (ASCII, non-ASCII characters escaped), as hashed and stored."""
    return json.dumps(list(texts))


def _settings(
    labels: Sequence[str], metadata: DynamicsMetadata, texts: Sequence[str]
) -> dict[str, Any]:
    """Everything that decides the numbers in a store: metadata, labels and the texts."""
    record = metadata.to_json()
    for key in UNCHECKED_METADATA:
        record.pop(key)
    if not record["interventions"]:  # as stores written before interventions were recorded
        record.pop("interventions")
    return {
        **record,
        "labels": list(labels),
        "n_texts": len(texts),
        "texts_sha256": texts_digest(texts),
    }


def _fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary path)``, flush it to disk, then rename it onto ``target``.

    The file gets the umask's mode; a failed or interrupted write removes its temporary file.
    """
    temporary = target.with_name(f"{TEMP_PREFIX}{target.name}.{os.getpid()}")
    try:
        write(temporary)
        follow_umask(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _write_json(target: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as compact JSON, atomically.

    Compact on purpose: only then does ``json.dumps`` use its C encoder, which writes one
    string; with ``indent`` the Python encoder builds a list of one small string per
    value first (about 3 MiB for a manifest of 10,000 texts, at every shard).
    """
    _atomic_write(target, lambda path: path.write_text(json.dumps(record)))


def _read_json(path: Path) -> dict[str, Any]:
    what = "a tl-dynamics store manifest"
    record = read_json_record(path, "format_version", STORE_FORMAT_VERSION, what)
    if record.get("format") != STORE_FORMAT:
        raise DynamicsInputError(f"{str(path)!r} is not {what}")
    return record


def _read_partials(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The partial manifests of data-parallel ranks in ``folder``, in rank order."""
    partials = []
    for path in sorted(_ours(folder, PARTIAL_MANIFEST_PATTERN, PARTIAL_MANIFEST_GLOB)):
        try:
            partials.append((path, _read_json(path)))
        except FileNotFoundError:  # consolidated (merged, then deleted) while we listed
            continue
    return partials


def _partial_shards(
    partials: list[tuple[Path, dict[str, Any]]], fingerprint: str
) -> list[ShardRecord]:
    """The shards the partial manifests list, refusing any of another run."""
    shards = []
    for path, record in partials:
        if record["fingerprint"] != fingerprint:
            raise DynamicsInputError(
                f"partial manifest {str(path)!r} belongs to another run than its folder's "
                "manifest; remove it if that run is abandoned"
            )
        shards.extend(_shard_records(path, record))
    return shards


def _shard_records(path: Path, record: dict[str, Any]) -> list[ShardRecord]:
    """The shards a manifest at ``path`` lists, or a ``ValueError`` naming the file."""
    try:
        return [ShardRecord.from_json(shard) for shard in record["shards"]]
    except (KeyError, TypeError, ValueError) as error:
        raise DynamicsInputError(
            f"{str(path)!r} is damaged: its shard list cannot be read ({type(error).__name__}: "
            f"{error})"
        ) from error


def _texts_file(name: Any) -> str | None:
    """The manifest's ``texts_file``: ``None`` or exactly :data:`TEXTS_NAME`, else ``ValueError``."""
    if name is not None and name != TEXTS_NAME:
        raise ValueError(f"texts_file {name!r} is not {TEXTS_NAME!r}")
    return name


def _ours(folder: Path, pattern: re.Pattern[str], glob: str) -> list[Path]:
    """The files in ``folder`` whose whole name matches ``pattern`` (``glob`` narrows the scan)."""
    return [p for p in folder.glob(glob) if pattern.fullmatch(p.name) and not p.is_dir()]


@dataclass(frozen=True, eq=False)
class DynamicsStore:
    """A snapshot of a store folder: what its manifests listed when it was opened.

    Open one with :meth:`open`; fill one with :func:`collect_to_store`.

    Attributes:
        path: The store folder.
        labels: ``accumulated_resid`` label of each sublayer, e.g. ``("0_pre", "0_mid", ...)``.
        metadata: Provenance, as :func:`tl_dynamics.collect` records it.
        settings: What the fingerprint covers (metadata without texts, corpus and
            version; labels; number and SHA-256 of the texts).
        fingerprint: SHA-256 (hex) of ``settings``.
        shards: The shards written so far, in the order they were listed.
        texts_file: Name of the file in ``path`` that holds the texts (``texts.json``), or
            ``None`` when the texts were not kept or sit in ``metadata`` (format 1). The
            metadata then has ``texts=None``; :meth:`load` and :meth:`texts` read them.
    """

    path: Path
    labels: tuple[str, ...]
    metadata: DynamicsMetadata
    settings: dict[str, Any]
    fingerprint: str
    shards: tuple[ShardRecord, ...]
    texts_file: str | None = None

    @classmethod
    def open(cls, path: str | Path) -> DynamicsStore:
        """Read the manifest (and any partial manifests of a data-parallel run) at ``path``.

        Checks that every listed shard is there with its listed size (its SHA-256 is
        checked when it is read).

        Raises:
            FileNotFoundError: no store at ``path``, or a listed shard file is missing
                (the message says how to repair the store).
            ValueError: a damaged manifest, a newer format, a shard of another size than
                listed, or a text listed in two shards.
        """
        store = cls._read(path)
        for shard in store.shards:
            problem = shard.problem(store.path, checksum=False)
            if problem is not None:
                error = InputNotFoundError if "missing" in problem else DynamicsInputError
                raise error(store._damaged(shard, problem))
        store._check_overlaps()
        return store

    @classmethod
    def _read(cls, path: str | Path) -> DynamicsStore:
        """The store the manifests at ``path`` describe, its shards unchecked."""
        path = Path(path)
        manifest = path / MANIFEST_NAME
        if not manifest.is_file():
            raise InputNotFoundError(
                f"no tl-dynamics store at {str(path)!r} ({MANIFEST_NAME} not found); "
                "write one with tl_dynamics.store.collect_to_store"
            )
        partials = _read_partials(path)  # first: one consolidated meanwhile is in the manifest
        record = _read_json(manifest)
        listed = {s.file: s for s in _shard_records(manifest, record)}
        try:
            for shard in _partial_shards(partials, record["fingerprint"]):
                listed.setdefault(shard.file, shard)
            store = cls(
                path=path,
                labels=tuple(record["labels"]),
                metadata=DynamicsMetadata.from_json(record["metadata"]),
                settings=dict(record["settings"]),
                fingerprint=str(record["fingerprint"]),
                shards=tuple(listed.values()),
                texts_file=_texts_file(record.get("texts_file")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DynamicsInputError(
                f"{str(manifest)!r} is damaged: {type(error).__name__}: {error}"
            ) from error
        return store

    def _damaged(self, shard: ShardRecord, problem: str) -> str:
        """The message for a damaged or missing ``shard``: what is wrong, how to repair it."""
        return (
            f"shard {shard.file!r} of the store {str(self.path)!r} is damaged or missing "
            f"({problem}); to repair the store, {REPAIR.format(path=self.path)}"
        )

    def _check_overlaps(self) -> None:
        owner: dict[int, str] = {}
        for shard in self.shards:
            for text in shard.text_index:
                if text in owner:
                    raise DynamicsInputError(
                        f"store {str(self.path)!r} is inconsistent: text {text} is in both "
                        f"{owner[text]!r} and {shard.file!r}"
                    )
                owner[text] = shard.file

    def to_json(self) -> dict[str, Any]:
        """The manifest of this snapshot, JSON-ready."""
        return {
            "format": STORE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "labels": list(self.labels),
            "metadata": self.metadata.to_json(),
            "settings": self.settings,
            "fingerprint": self.fingerprint,
            "shards": [s.to_json() for s in self.shards],
            "texts_file": self.texts_file,
        }

    def __len__(self) -> int:
        """Number of samples stored (texts x kept positions)."""
        return sum(s.rows for s in self.shards)

    def __repr__(self) -> str:
        return (
            f"DynamicsStore({str(self.path)!r}, model={self.metadata.model_name!r}, "
            f"texts={len(self.text_indices())}/{self.n_texts}, samples={len(self)}, "
            f"shards={len(self.shards)})"
        )

    @property
    def n_texts(self) -> int:
        """Number of texts the run covers, stored or not."""
        return int(self.settings["n_texts"])

    @property
    def complete(self) -> bool:
        """Whether every text of the run is stored."""
        return len(self.text_indices()) == self.n_texts

    def text_indices(self) -> list[int]:
        """Indices of the stored texts, ascending."""
        return sorted(t for s in self.shards for t in s.text_index)

    def missing_texts(self) -> list[int]:
        """Indices of the texts not stored yet, ascending."""
        stored = set(self.text_indices())
        return [t for t in range(self.n_texts) if t not in stored]

    def read_shard(self, shard: ShardRecord | int) -> DynamicsCache:
        """One shard (a :class:`ShardRecord` or its position in :attr:`shards`) as a cache.

        Returns:
            A :class:`DynamicsCache` of that shard's samples, in text then position order,
            with the store's labels and metadata.

        Raises:
            FileNotFoundError, ValueError: the shard is missing or damaged (its SHA-256
                differs); the message names it and the command that repairs the store.
        """
        record = self.shards[shard] if isinstance(shard, int) else shard
        try:
            content = (self.path / record.file).read_bytes()
        except FileNotFoundError as error:
            raise InputNotFoundError(self._damaged(record, "the file is missing")) from error
        problem = record.check_bytes(content)
        if problem is not None:
            raise DynamicsInputError(self._damaged(record, problem))
        tensors = load_bytes(content)
        if len(tensors["text_index"]) != record.rows:
            raise DynamicsInputError(
                f"shard {record.file!r} holds {len(tensors['text_index'])} samples but the "
                f"manifest lists {record.rows}"
            )
        return DynamicsCache(
            resid=tensors["resid"],
            labels=self.labels,
            text_index=tensors["text_index"],
            position=tensors["position"],
            metadata=self.metadata,
        )

    def iter_shards(self) -> Iterator[DynamicsCache]:
        """Each shard in turn as a :class:`DynamicsCache` (only one in memory at a time)."""
        for shard in self.shards:
            yield self.read_shard(shard)

    def load_targets(self) -> list[Int[Tensor, " row"]]:
        """For each shard, in :attr:`shards` order, the sample index each of its rows has
        in :meth:`load` (text order, then position order)."""
        rows = {t: n for s in self.shards for t, n in zip(s.text_index, s.text_rows, strict=True)}
        texts = sorted(rows)
        starts = itertools.accumulate((rows[t] for t in texts), initial=0)
        offsets = dict(zip(texts, starts, strict=False))  # accumulate yields one start more
        targets = []
        for shard in self.shards:
            spans = zip(shard.text_index, shard.text_rows, strict=True)
            targets.append(
                torch.cat([torch.arange(offsets[t], offsets[t] + n) for t, n in spans])
            )
        return targets

    def load(self) -> DynamicsCache:
        """All stored samples as one :class:`DynamicsCache`, in text order then position order.

        Equal to what :func:`tl_dynamics.collect` returns for the same run (once the
        store is :attr:`complete`). Needs memory for the result plus one shard.

        Raises:
            FileNotFoundError, ValueError: a shard is missing or damaged, as :meth:`read_shard`.
        """
        n_samples, d_model = len(self), int(self.metadata.d_model)
        resid = torch.empty(n_samples, len(self.labels), d_model)
        text_index = torch.empty(n_samples, dtype=torch.long)
        position = torch.empty(n_samples, dtype=torch.long)
        for shard, target in zip(self.shards, self.load_targets(), strict=True):
            chunk = self.read_shard(shard)
            resid[target] = chunk.resid
            text_index[target] = chunk.text_index
            position[target] = chunk.position
        metadata = self.metadata
        if self.texts_file is not None:
            metadata = dataclasses.replace(metadata, texts=self.texts())
        return DynamicsCache(resid, self.labels, text_index, position, metadata)

    def texts(self) -> tuple[str, ...] | None:
        """The run's texts (all of them, stored or not), or ``None`` when they were not kept.

        Raises:
            FileNotFoundError, ValueError: ``texts.json`` is missing or is not the run's
                texts (its SHA-256 differs from the fingerprint's); the message says how
                to repair the store.
        """
        if self.texts_file is None:
            return self.metadata.texts
        path = self.path / self.texts_file
        try:
            content = path.read_bytes()
        except FileNotFoundError as error:
            raise InputNotFoundError(self._damaged_texts("the file is missing")) from error
        if hashlib.sha256(content).hexdigest() != self.settings["texts_sha256"]:
            raise DynamicsInputError(self._damaged_texts(SHA_MISMATCH))
        return tuple(json.loads(content))

    def _damaged_texts(self, problem: str) -> str:
        return (
            f"{self.texts_file!r} of the store {str(self.path)!r} is damaged or missing "
            f"({problem}); to repair the store, {REPAIR.format(path=self.path)}"
        )


def _run_settings(
    model: TLModel,
    texts: Sequence[str],
    settings: CollectSettings,
    fwd_hooks: Sequence[tuple[Any, Callable]] = (),
) -> tuple[tuple[str, ...], DynamicsMetadata, dict[str, Any]]:
    """``(labels, metadata, fingerprinted settings)`` of collecting ``texts`` so."""
    check_model(model)
    hooks = trajectory_hooks(model, settings.sites, settings.include_final)
    labels = tuple(h.label for h in hooks)
    metadata = collect_metadata(model, texts, settings, fwd_hooks)
    return labels, metadata, _settings(labels, metadata, texts)


def _check_same_run(folder: Path, stored: dict[str, Any], now: dict[str, Any]) -> None:
    changed = [
        f"{key}: {stored.get(key)!r} in the store, {now.get(key)!r} now"
        for key in sorted(set(stored) | set(now))
        if stored.get(key) != now.get(key)
    ]
    if changed:
        raise DynamicsInputError(
            f"{str(folder)!r} holds a store of another run ({'; '.join(changed)}); resume with "
            "the same model, settings and texts, or pass another folder"
        )


def _is_fresh_folder(path: Path) -> bool:
    """Absent, empty, or holding only temporary files of a run killed before its manifest."""
    return not path.exists() or (
        path.is_dir() and all(TEMP_PATTERN.fullmatch(p.name) for p in path.iterdir())
    )


def consolidate(path: str | Path, *, verify: bool = True) -> DynamicsStore:
    """Fold the partial manifests into the manifest and delete what no manifest lists.

    Every writer calls it before it starts (a data-parallel job: rank 0 alone), and rank 0
    again once every rank has finished: no process may be writing meanwhile. It removes
    temporary files and shard files that no manifest lists, both left by a killed run
    (their texts are run again). With ``verify``, every listed shard is first checked
    against its size and SHA-256: a damaged or missing one is dropped from the manifest
    with a warning, so that its texts are collected again.

    Returns:
        The store as it now is.
    """
    path = Path(path)
    store = DynamicsStore._read(path)
    if verify:
        sound = []
        for shard in store.shards:
            problem = shard.problem(path, checksum=True)
            if problem is None:
                sound.append(shard)
            else:
                warnings.warn(
                    f"shard {shard.file!r} of {str(path)!r} is damaged or missing ({problem}); "
                    f"its {len(shard.text_index)} texts will be collected again",
                    stacklevel=2,
                )
        store = dataclasses.replace(store, shards=tuple(sound))
    store._check_overlaps()
    _write_json(path / MANIFEST_NAME, store.to_json())
    listed = {shard.file for shard in store.shards}
    unlisted = (p for p in _ours(path, SHARD_PATTERN, SHARD_GLOB) if p.name not in listed)
    partials = _ours(path, PARTIAL_MANIFEST_PATTERN, PARTIAL_MANIFEST_GLOB)
    for leftover in [*partials, *_ours(path, TEMP_PATTERN, f"{TEMP_PREFIX}*"), *unlisted]:
        leftover.unlink()
    return store


def prepare_store(
    model: TLModel,
    texts: Sequence[str],
    out: str | Path,
    settings: CollectSettings = CollectSettings(),
    fwd_hooks: Sequence[tuple[Any, Callable]] = (),
) -> DynamicsStore:
    """Create the store of a run at ``out``, or check that the store there is of the same run.

    Arguments are those of :func:`collect_to_store`. Creates the folder and writes an
    empty manifest; on an existing store, refuses other settings or texts, then tidies
    it with :func:`consolidate`.

    Returns:
        The store, ready for :func:`append_to_store`.

    Raises:
        TypeError: ``model`` is no TransformerLens model, or ``texts`` are not strings.
        ValueError: bad ``texts`` or ``sites``; ``out`` holds a store of another run (the
            message names what differs) or is neither a store nor an empty folder.
    """
    texts = validate_texts(texts)
    labels, metadata, fingerprinted = _run_settings(model, texts, settings, fwd_hooks)
    out = Path(out)
    if (out / MANIFEST_NAME).is_file():
        existing = DynamicsStore._read(out)
        _check_same_run(out, existing.settings, fingerprinted)
        if existing.texts_file is not None:
            _write_texts_file(out / existing.texts_file, texts, fingerprinted)
    elif _is_fresh_folder(out):
        out.mkdir(parents=True, exist_ok=True)
        fingerprint = _fingerprint(fingerprinted)
        texts_file = None
        if metadata.texts is not None:
            texts_file = TEXTS_NAME
            _write_texts_file(out / TEXTS_NAME, texts, fingerprinted)
            metadata = dataclasses.replace(metadata, texts=None)
        empty = DynamicsStore(out, labels, metadata, fingerprinted, fingerprint, (), texts_file)
        _write_json(out / MANIFEST_NAME, empty.to_json())
    else:
        raise DynamicsInputError(
            f"out {str(out)!r} exists and is neither a tl-dynamics store ({MANIFEST_NAME} not "
            "found) nor an empty folder; pass a new or empty folder"
        )
    return consolidate(out)


def _write_texts_file(path: Path, texts: Sequence[str], settings: dict[str, Any]) -> None:
    """Write ``texts.json`` (the same bytes :func:`texts_digest` hashes), unless it is
    there already and sound: a resumed run repairs a damaged one."""
    if path.is_file() and file_digest([path])[1] == settings["texts_sha256"]:
        return
    content = _texts_json(texts)
    _atomic_write(path, lambda temporary: temporary.write_text(content, encoding="utf-8"))


def _check_shard_size(shard_size: int | None) -> None:
    """Raise ``DynamicsInputError`` unless ``shard_size`` is a positive int or None."""
    if shard_size is not None:
        check_int(shard_size, "shard_size", why=" or None")


def _shard_rows(shard_size: int | None, store: DynamicsStore) -> int:
    if shard_size is None:
        per_sample = len(store.labels) * int(store.metadata.d_model) * RESID_BYTES
        return max(1, SHARD_BYTES // per_sample)
    return shard_size


def _group_rows(batches: Iterable[CollectedBatch], rows: int) -> Iterator[list[CollectedBatch]]:
    """Consecutive batches gathered until they hold at least ``rows`` samples."""
    group: list[CollectedBatch] = []
    for batch in batches:
        group.append(batch)
        if sum(len(b.text_index) for b in group) >= rows:
            yield group
            group = []
    if group:
        yield group


def _write_shard(
    store: DynamicsStore, group: list[CollectedBatch], rank: int, number: int
) -> ShardRecord:
    """Write one shard atomically, rows sorted by text (a stable sort keeps position order).

    Each batch's rows are copied once, straight to their sorted place, and safetensors
    writes the tensors to the file without an in-memory copy of it; the SHA-256 is read
    back from the file in blocks. A shard thus costs its rows once in memory, not four
    times (concatenation, sorted copy, serialised bytes).
    """
    text_index: Int[Tensor, " row"] = torch.cat([b.text_index for b in group])
    order = torch.sort(text_index, stable=True).indices
    place = torch.empty_like(order)
    place[order] = torch.arange(len(order))  # where each collected row goes
    resid = torch.empty((len(order), *group[0].resid.shape[1:]), dtype=group[0].resid.dtype)
    position = torch.empty_like(text_index)
    start = 0
    for batch in group:
        rows = place[start : start + len(batch.text_index)]
        resid.index_copy_(0, rows, batch.resid)
        position[rows] = batch.position
        start += len(rows)
    tensors = {"resid": resid, "text_index": text_index[order], "position": position}
    file = SHARD_NAME.format(rank=rank, number=number)
    header = {"format": STORE_FORMAT, "fingerprint": store.fingerprint, "version": __version__}
    _atomic_write(store.path / file, lambda path: save_safetensors(tensors, path, metadata=header))
    size, sha256 = file_digest([store.path / file])
    texts, rows = torch.unique_consecutive(tensors["text_index"], return_counts=True)
    return ShardRecord(
        file, rank, number, tuple(texts.tolist()), tuple(rows.tolist()), size=size, sha256=sha256
    )


def append_to_store(
    model: TLModel,
    texts: Sequence[str],
    store: DynamicsStore,
    indices: Sequence[int],
    settings: CollectSettings = CollectSettings(),
    *,
    rank: int | None = None,
    shard_size: int | None = None,
    fwd_hooks: Sequence[tuple[Any, Callable]] = (),
) -> list[ShardRecord]:
    """Collect ``texts[i]`` for each ``i`` in ``indices`` and append them to ``store``.

    Each shard is written atomically, then its manifest is rewritten atomically.

    Args:
        model: The model of the store's run.
        texts: All the texts of the run (their SHA-256 must match the store's).
        store: From :func:`prepare_store`.
        indices: Which texts to run; their samples keep these indices.
        settings: The run's settings (what decides the numbers must be the store's:
            positions, sites, shuffle, seed, final sublayer); batch size and progress bar
            are this call's.
        rank: ``None`` when this process is the store's only writer: the manifest is
            rewritten after every shard. A data-parallel rank (int) writes its own shard
            names and partial manifest instead, merged by :func:`consolidate`.
        shard_size: Samples per shard, at least (whole forward passes, so up to one batch
            more); ``None`` for about :data:`SHARD_BYTES` per shard.
        fwd_hooks: The run's interventions, as :func:`tl_dynamics.collect` takes them.

    Returns:
        The records of the shards written.

    Raises:
        ValueError: ``model``, ``texts`` or ``settings`` are not the store's run, or a bad
            ``shard_size`` or index.
    """
    texts = validate_texts(texts)
    now = _run_settings(model, texts, settings, fwd_hooks)[2]
    _check_same_run(store.path, store.settings, now)
    _check_shard_size(shard_size)
    rows = _shard_rows(shard_size, store)
    manifest = store.path / (
        MANIFEST_NAME if rank is None else PARTIAL_MANIFEST_NAME.format(rank=rank)
    )
    writer = rank or 0
    first = 1 + max((s.number for s in store.shards if s.rank == writer), default=-1)
    batches = iter_batches(model, texts, settings, subset=indices, fwd_hooks=fwd_hooks)
    written: list[ShardRecord] = []
    for number, group in enumerate(_group_rows(batches, rows), start=first):
        written.append(_write_shard(store, group, writer, number))
        if rank is None:
            record = dataclasses.replace(store, shards=(*store.shards, *written)).to_json()
        else:
            record = {
                "format": STORE_FORMAT,
                "format_version": STORE_FORMAT_VERSION,
                "rank": rank,
                "fingerprint": store.fingerprint,
                "shards": [s.to_json() for s in written],
            }
        _write_json(manifest, record)
    return written


def collect_to_store(
    model: TLModel,
    texts: Sequence[str],
    out: str | Path,
    settings: CollectSettings = CollectSettings(),
    *,
    shard_size: int | None = None,
    fwd_hooks: Sequence[tuple[Any, Callable]] = (),
) -> DynamicsStore:
    """Collect trajectories of ``texts`` into the store folder ``out``, resuming if it exists.

    Arguments are those of :func:`tl_dynamics.collect` (its keywords held by
    ``settings``, a :class:`~tl_dynamics.collect.CollectSettings`), plus ``out`` (a new or
    empty folder, or the store of an interrupted run of the same settings and texts) and
    ``shard_size`` (samples per shard file; ``None`` for about :data:`SHARD_BYTES`), and
    ``fwd_hooks``, interventions as :func:`tl_dynamics.collect` takes them. The store's
    fingerprint records each hook's point and function name, so a resume under other
    hooks is refused; it cannot see a function's body, so a resume must pass the same
    functions. Texts already stored are skipped; the others are run and streamed to disk a shard at
    a time, so memory holds one shard, never the whole run.

    Arguments are checked before anything is created; a run that fails (or is
    interrupted) before its first shard removes the empty store it created, so that a
    corrected run can start afresh. A resumed run first checks every shard's SHA-256 and
    collects the texts of a damaged or missing one again (:func:`consolidate`).

    Returns:
        The complete :class:`DynamicsStore`; its ``load()`` equals
        ``tl_dynamics.collect(model, texts, ...)``.

    Raises:
        TypeError, ValueError, FloatingPointError: as :func:`tl_dynamics.collect`, and
            ``ValueError`` when ``out`` holds another run (see :func:`prepare_store`).
    """
    _check_shard_size(shard_size)
    refuse_symlink(out)
    out = Path(out)
    existed, resumed = out.exists(), (out / MANIFEST_NAME).is_file()
    with writer_lock(out):
        store = prepare_store(model, texts, out, settings, fwd_hooks)
        try:
            append_to_store(
                model, texts, store, store.missing_texts(), settings, shard_size=shard_size,
                fwd_hooks=fwd_hooks,
            )
        except BaseException:
            if not resumed and not DynamicsStore._read(out).shards:
                _remove_empty_store(out, keep_folder=existed)
            raise
        return DynamicsStore.open(store.path)


def _remove_empty_store(out: Path, *, keep_folder: bool) -> None:
    """Remove a store this run created and wrote no shard to (its manifest, texts and
    temporary files)."""
    for leftover in [out / MANIFEST_NAME, out / TEXTS_NAME, *_ours(out, TEMP_PATTERN, f"{TEMP_PREFIX}*")]:
        leftover.unlink(missing_ok=True)
    if not keep_folder:
        out.rmdir()
