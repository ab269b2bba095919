"""Model loading: the offline default, fast and clear failures for hub names offline."""

from __future__ import annotations

import socket

import pytest
import torch
from huggingface_hub import constants
from transformer_lens.model_bridge import TransformerBridge

from tl_dynamics import models


def test_packaged_minilm_is_named_by_its_hub_name(minilm):
    assert minilm.cfg.model_name == models.PRESETS["minilm"].model_name
    assert not minilm.training


def test_unknown_hub_name_offline_fails_fast_without_calling_the_hub(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no network")

    def must_not_boot(*args, **kwargs):
        pytest.fail("boot_transformers must not be reached when the hub is unreachable")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(TransformerBridge, "boot_transformers", must_not_boot)
    with pytest.raises(ConnectionError, match="hub is unreachable.*save_pretrained"):
        models.load_model("some-org/some-model")


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_model(str(tmp_path / "absent-folder"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", torch.float16])
def test_half_dtypes_are_refused_on_cpu(dtype):
    with pytest.raises(ValueError, match="not supported on CPU"):
        models.load_model(dtype=dtype)


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be one of"):
        models.load_model(dtype="int8")


def test_tiny_model_architecture_is_checked(tmp_path):
    with pytest.raises(ValueError, match="architecture must be one of"):
        models.build_tiny_model("mamba", tmp_path)


@pytest.mark.parametrize(
    "device, message",
    [("foo", "device must be one of"), ("cuda", "sees no CUDA GPU"), ("cuda:0", "no CUDA GPU")],
)
def test_bad_or_absent_devices_are_refused_before_loading(device, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        models.load_model("minilm", device=device)


def test_a_file_is_not_a_model_folder(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file; pass the folder"):
        models.load_model(str(path))


def test_a_folder_with_only_config_says_the_weights_are_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="config.json but no weights"):
        models.load_model(str(tmp_path))


def test_a_folder_without_config_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        models.load_model(str(tmp_path))


def test_progress_false_keeps_transformers_bars_off_and_restores_them(capfd):
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    models.load_model("minilm", progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()


def test_progress_false_also_silences_the_gguf_reader_and_restores_it(capfd):
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    reader_tqdm = gguf_utils.tqdm
    with models._transformers_progress(False):
        for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing"):
            pass
    assert "Converting" not in capfd.readouterr().err
    assert gguf_utils.tqdm is reader_tqdm
    for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing"):
        pass
    assert "Converting" in capfd.readouterr().err  # the bar is back, as a user had it
