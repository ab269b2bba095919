"""The README's Python blocks run as written (in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_a_quickstart():
    assert python_blocks(), "README.md must show Python usage"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runnable = [b for b in python_blocks() if "meta-llama" not in b and "gemma-2-9b" not in b]
    assert runnable
    for block in runnable:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "velocity.html").is_file() and (tmp_path / "smollm2.safetensors").is_file()


def test_readme_install_pins_torch_and_ci_runs_its_test_command():
    text = README.read_text()
    assert "pip install torch==2.13.0" in text
    test_command = re.search(r"```bash\n(\. \.venv/bin/activate && )?(python -m pytest[^\n]*)\n", text)
    assert test_command, "README must show the test command"
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_command.group(2) in ci
