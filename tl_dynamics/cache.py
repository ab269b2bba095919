"""``DynamicsCache``: residual-stream trajectories with their labels and provenance.

Running a model over N texts and reading the residual stream at the chosen token of each
text, before every attention and MLP sub-block, gives a tensor of shape
``[sample, sublayer, d_model]``: one trajectory through ``d_model``-dimensional space per
sample, with depth as time. ``DynamicsCache`` holds that tensor (float32, CPU), the
TransformerLens labels of its sublayers (``"0_pre", "0_mid", "1_pre", ...``), which text
and token position each sample came from, and the settings that produced it.

Every metric of :mod:`tl_dynamics.metrics` is also a method here (``dyn.velocity()`` is
``tld.metrics.velocity(dyn.resid)``). ``save``/``load`` use safetensors for tensors and
JSON for everything else: loading never unpickles anything.

Example::

    import tl_dynamics as tld
    dyn = tld.collect(model, tld.data.python_docs()[:64])
    dyn.resid.shape                      # (64, 2 * n_layers, d_model)
    dyn.velocity().mean(0)               # mean step length per transition
    dyn.save("minilm.safetensors")       # + minilm.json
    same = tld.DynamicsCache.load("minilm.safetensors")
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from tl_dynamics import metrics
from tl_dynamics._output import follow_umask, read_json_record, save_safetensors
from tl_dynamics._version import __version__
from tl_dynamics.errors import DynamicsInputError, InputNotFoundError, InputTypeError

__all__ = ["FORMAT_VERSION", "FILE_FORMAT", "TENSOR_NAMES", "DynamicsMetadata", "DynamicsCache"]

FORMAT_VERSION = 1
"""Version of the on-disk layout written by :meth:`DynamicsCache.save`."""

FILE_FORMAT = "tl-dynamics"
"""The ``format`` entry of the safetensors header :meth:`DynamicsCache.save` writes."""

TENSOR_NAMES = ("resid", "text_index", "position")


@dataclass(frozen=True)
class DynamicsMetadata:
    """Where a :class:`DynamicsCache` came from.

    Attributes:
        model_name: The model's ``cfg.model_name`` (or class name).
        n_layers: Number of transformer blocks.
        d_model: Width of the residual stream.
        positions: Which token positions were kept: ``"last"``, ``"all"`` or a list of ints.
        sites: Residual-stream read points per block, ``("pre", "mid")`` or ``("pre",)``.
        corpus: Name of the text source, if known (e.g. ``"python-docs"``).
        shuffle: Whether the tokens after BOS were permuted (the paper's control).
        seed: Seed of the shuffle.
        model_dtype: The model's parameter dtype; ``resid`` itself is always float32.
        texts: The texts, in sample order of ``text_index``, when they were kept.
        version: tl-dynamics version that collected the data.
        provenance: Where a preset's weights came from (package, file, sha256,
            quantisation; see :meth:`tl_dynamics.presets.Preset.provenance`), else ``None``.
        interventions: The ``fwd_hooks`` the trajectories were collected under, one
            ``"<hook point>: <function>"`` each (``()``: none; hooks left on the model
            with ``model.hooks(...)`` are not seen, so not recorded).
    """

    model_name: str = "unknown"
    n_layers: int = 0
    d_model: int = 0
    positions: str | list[int] = "last"
    sites: tuple[str, ...] = ("pre", "mid")
    corpus: str | None = None
    shuffle: bool = False
    seed: int = 0
    model_dtype: str = "float32"
    texts: tuple[str, ...] | None = None
    version: str = __version__
    provenance: dict[str, Any] | None = None
    interventions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of the fields."""
        record = dataclasses.asdict(self)
        record["sites"] = list(self.sites)
        record["interventions"] = list(self.interventions)
        record["texts"] = None if self.texts is None else list(self.texts)
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> DynamicsMetadata:
        """Inverse of :meth:`to_json`; unknown keys are ignored (newer writers)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        values["sites"] = tuple(values.get("sites", ("pre", "mid")))
        values["interventions"] = tuple(values.get("interventions", ()))
        if values.get("texts") is not None:
            values["texts"] = tuple(values["texts"])
        return cls(**values)


def _on_resid(metric: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``metric(resid, ...)`` into a method computing it on ``self.resid``."""

    @functools.wraps(metric)
    def method(self: DynamicsCache, *args: Any, **kwargs: Any) -> Any:
        return metric(self.resid, *args, **kwargs)

    return method


def _check_index_tensor(value: Any, name: str) -> None:
    """Raise ``InputTypeError`` unless ``value`` is a tensor of integers (bools refused)."""
    if not isinstance(value, Tensor):
        raise InputTypeError(f"{name} must be an integer tensor [sample]; got {type(value).__name__}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise InputTypeError(f"{name} must be an integer tensor [sample]; got a {value.dtype} tensor")


@dataclass(frozen=True)
class DynamicsCache:
    """Residual-stream trajectories, one per sample, over the sublayers of a model.

    Attributes:
        resid: ``[sample, sublayer, d_model]`` float32 residual stream, in the model's
            units, on CPU unless moved.
        labels: ``accumulated_resid`` label of each sublayer, e.g. ``("0_pre", "0_mid", ...)``.
        text_index: ``[sample]`` index of the text each sample came from.
        position: ``[sample]`` token position (0-based, BOS included) of each sample.
        metadata: :class:`DynamicsMetadata` provenance.
    """

    resid: Float[Tensor, "sample sublayer d_model"]
    labels: tuple[str, ...]
    text_index: Int[Tensor, " sample"]
    position: Int[Tensor, " sample"]
    metadata: DynamicsMetadata = field(default_factory=DynamicsMetadata)

    def __post_init__(self) -> None:
        if not isinstance(self.resid, Tensor) or self.resid.ndim != 3:
            got = tuple(self.resid.shape) if isinstance(self.resid, Tensor) else type(self.resid)
            raise DynamicsInputError(
                f"resid must be a [sample, sublayer, d_model] tensor; got {got}"
            )
        if not self.resid.is_floating_point():
            raise InputTypeError(f"resid must be a floating tensor; got a {self.resid.dtype} tensor")
        for name in ("text_index", "position"):
            _check_index_tensor(getattr(self, name), name)
        object.__setattr__(self, "labels", tuple(self.labels))
        n_samples, n_sublayers, _ = self.resid.shape
        if len(self.labels) != n_sublayers:
            raise DynamicsInputError(
                f"labels has {len(self.labels)} entries but resid has {n_sublayers} sublayers"
            )
        for name in ("text_index", "position"):
            if tuple(getattr(self, name).shape) != (n_samples,):
                raise DynamicsInputError(
                    f"{name} must have shape ({n_samples},), one entry per sample"
                )

    def __repr__(self) -> str:
        n, s, d = self.resid.shape
        return (
            f"DynamicsCache(model={self.metadata.model_name!r}, samples={n}, sublayers={s}, "
            f"d_model={d}, positions={self.metadata.positions!r}, shuffle={self.metadata.shuffle})"
        )

    @property
    def n_samples(self) -> int:
        """Number of trajectories (texts x kept positions)."""
        return int(self.resid.shape[0])

    @property
    def transition_kinds(self) -> list[str]:
        """Kind of each transition t -> t+1: ``"within"``, ``"cross"`` or ``"layer"``."""
        return metrics.transition_kinds(self.labels)

    def transition_frame(self, values: Tensor, value_name: str, **kwargs: Any) -> pd.DataFrame:
        """Tidy frame of a per-transition result, see :func:`tl_dynamics.metrics.transition_frame`."""
        return metrics.transition_frame(values, self.labels, value_name, **kwargs)

    def select(self, samples: Tensor | slice | list[int]) -> DynamicsCache:
        """A new cache with only the given samples (index, slice or boolean mask)."""
        return dataclasses.replace(
            self,
            resid=self.resid[samples],
            text_index=self.text_index[samples],
            position=self.position[samples],
        )

    def to(self, device: str | torch.device) -> DynamicsCache:
        """A new cache with ``resid`` on ``device`` (metrics then run there)."""
        return dataclasses.replace(self, resid=self.resid.to(device))

    mean_activation = _on_resid(metrics.mean_activation)
    unit_order = _on_resid(metrics.unit_order)
    cosine_similarity = _on_resid(metrics.cosine_similarity)
    velocity = _on_resid(metrics.velocity)
    norms = _on_resid(metrics.norms)
    unit_correlation = _on_resid(metrics.unit_correlation)
    pairwise_unit_correlation = _on_resid(metrics.pairwise_unit_correlation)
    correlation_distribution = _on_resid(metrics.correlation_distribution)
    mutual_information = _on_resid(metrics.mutual_information)
    phase_portrait = _on_resid(metrics.phase_portrait)
    rotations = _on_resid(metrics.rotations)
    rotation_null = _on_resid(metrics.rotation_null)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors: resid, text_index, position) and its JSON sidecar.

        ``path`` gets the suffix ``.safetensors`` if it has none; the sidecar is the same
        path with suffix ``.json``; a leading ``~`` is the home folder. Returns the
        safetensors path.
        """
        path = Path(path).expanduser()
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "resid": self.resid.detach().to("cpu").contiguous(),
            "text_index": self.text_index.to("cpu").contiguous(),
            "position": self.position.to("cpu").contiguous(),
        }
        save_safetensors(tensors, path, metadata={"format": FILE_FORMAT, "version": __version__})
        follow_umask(path)  # safetensors creates its files private (0600)
        sidecar = {
            "format_version": FORMAT_VERSION,
            "labels": list(self.labels),
            "metadata": self.metadata.to_json(),
        }
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> DynamicsCache:
        """Read a cache written by :meth:`save` (no pickle involved).

        The sidecar is checked against the tensors, not trusted.

        Raises:
            FileNotFoundError: the safetensors file or its JSON sidecar is missing.
            ValueError: a file that :meth:`save` did not write, a damaged one, a newer
                format, or a sidecar that contradicts the tensors (the message names the
                file).
        """
        path = Path(path).expanduser()
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        sidecar_path = path.with_suffix(".json")
        for needed in (path, sidecar_path):
            if not needed.is_file():
                raise InputNotFoundError(
                    f"{str(needed)!r} not found; write it with DynamicsCache.save"
                )
        sidecar = _read_sidecar(sidecar_path)
        tensors = _read_tensors(path)
        try:
            cache = cls(
                resid=tensors["resid"],
                labels=tuple(sidecar["labels"]),
                text_index=tensors["text_index"],
                position=tensors["position"],
                metadata=DynamicsMetadata.from_json(sidecar["metadata"]),
            )
            _check_metadata(cache)
        except (ValueError, TypeError) as error:
            raise DynamicsInputError(
                f"{str(path)!r} and its sidecar {str(sidecar_path)!r} do not agree: {error}"
            ) from error
        return cache


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON sidecar of a saved cache, checked for the fields :meth:`DynamicsCache.load` reads."""
    sidecar = read_json_record(
        path, "format_version", FORMAT_VERSION, "a JSON sidecar of DynamicsCache.save"
    )
    if not isinstance(sidecar.get("labels"), list) or not isinstance(sidecar.get("metadata"), dict):
        raise DynamicsInputError(f"{str(path)!r} lacks 'labels' (a list) or 'metadata' (an object)")
    return sidecar


def _read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a file written by :meth:`DynamicsCache.save`, refusing any other."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise DynamicsInputError(
            f"{str(path)!r} is not a readable safetensors file ({error})"
        ) from error
    if header.get("format") != FILE_FORMAT or set(tensors) != set(TENSOR_NAMES):
        raise DynamicsInputError(
            f"{str(path)!r} was not written by DynamicsCache.save (header format "
            f"{header.get('format')!r}, tensors {sorted(tensors)}; expected {FILE_FORMAT!r} "
            f"and {list(TENSOR_NAMES)})"
        )
    if tensors["resid"].dtype != torch.float32:
        raise DynamicsInputError(
            f"{str(path)!r} holds resid as {tensors['resid'].dtype}, not float32"
        )
    return tensors


def _check_metadata(cache: DynamicsCache) -> None:
    """Raise ``ValueError`` where the metadata contradicts the tensors' shapes or values."""
    metadata, (_, _, d_model) = cache.metadata, cache.resid.shape
    if metadata.d_model and metadata.d_model != d_model:
        raise DynamicsInputError(
            f"metadata says d_model {metadata.d_model}, resid has {d_model} units"
        )
    if metadata.texts is not None and cache.n_samples:
        low, high = int(cache.text_index.min()), int(cache.text_index.max())
        if low < 0 or high >= len(metadata.texts):
            raise DynamicsInputError(
                f"text_index runs over [{low}, {high}] but metadata keeps {len(metadata.texts)} texts"
            )
