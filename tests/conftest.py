"""Shared fixtures: real MiniLM weights and tiny Llama / Gemma-2 / GPT-2 models, offline.

Models are built once per session: the tiny ones are written with ``save_pretrained`` and
booted from their folder through ``TransformerBridge.boot_transformers``, the real
loading path users take.
"""

from __future__ import annotations

import os

import pytest
import torch
from threadpoolctl import threadpool_limits

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from tl_dynamics.cli import main  # noqa: E402
from tl_dynamics.data import python_docs  # noqa: E402
from tl_dynamics.models import build_tiny_model, load_model  # noqa: E402

REPORT_TEXTS = 40  # texts in the session's MiniLM report: small, so it runs in seconds

ARCHITECTURES = ("llama", "gemma2", "gpt2", "bert")
"""Every architecture the library is tested on; "bert" is the real MiniLM."""


@pytest.fixture(scope="module")
def one_thread():
    """Small problems run faster on one thread (torch and BLAS), far faster on busy cores.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``; restores the count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 (BERT, 6 layers, d_model 384), real weights."""
    return load_model("minilm")


REAL_DECODERS = ("smollm2-135m", "gemma-3-270m")
"""The trained decoders that load offline: the paper's Llama and Gemma families."""


@pytest.fixture(scope="session")
def real_decoder_models():
    """Booted real decoders, keyed by preset, loaded on first use (each converts once)."""
    return {}


@pytest.fixture(scope="session", params=REAL_DECODERS)
def real_decoder(request, real_decoder_models):
    """SmolLM2-135M (Llama) and Gemma-3-270M (Gemma) in turn: real, 4-bit-quantised weights."""
    if request.param not in real_decoder_models:
        real_decoder_models[request.param] = load_model(request.param)
    return real_decoder_models[request.param]


@pytest.fixture(scope="session")
def smollm2(real_decoder_models):
    """SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), the default model."""
    if "smollm2-135m" not in real_decoder_models:
        real_decoder_models["smollm2-135m"] = load_model("smollm2-135m")
    return real_decoder_models["smollm2-135m"]


@pytest.fixture(scope="session")
def tiny_model_folders(tmp_path_factory):
    """Folders of the tiny decoder models, keyed by architecture."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        arch: build_tiny_model(arch, root / arch) for arch in ("llama", "gemma2", "gpt2")
    }


@pytest.fixture(scope="session")
def tiny_models(tiny_model_folders):
    """Booted tiny decoder models, keyed by architecture."""
    return {arch: load_model(folder) for arch, folder in tiny_model_folders.items()}


@pytest.fixture(scope="session", params=ARCHITECTURES)
def any_model(request, minilm, tiny_models):
    """Each architecture in turn: tiny Llama, Gemma-2, GPT-2, and the real MiniLM."""
    return minilm if request.param == "bert" else tiny_models[request.param]


@pytest.fixture(scope="session")
def texts():
    """A dozen offline corpus texts of different lengths."""
    return python_docs()[:12]


@pytest.fixture(scope="session")
def minilm_report(tmp_path_factory, minilm):
    """A `tl-dynamics report` folder on the packaged MiniLM (offline defaults)."""
    out = tmp_path_factory.mktemp("reports") / "minilm"
    args = ["report", "--model", "minilm", "--n", str(REPORT_TEXTS), "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def llama_report(tmp_path_factory, tiny_model_folders):
    """A `tl-dynamics report` folder on the tiny Llama."""
    out = tmp_path_factory.mktemp("reports") / "llama"
    args = ["report", "--model", str(tiny_model_folders["llama"]), "--n", "30", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    return out
