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


def test_readme_api_table_names_exactly_the_public_api():
    """Every name of ``tl_dynamics.__all__`` is in the README's API table, and only those:
    as ``tld.<name>``, or (a result type) as a backticked name the package exports."""
    import tl_dynamics as tld

    section = README.read_text().split("## The API at a glance", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    called = set(re.findall(r"\btld\.(\w+)", table))
    returned = {name for name in re.findall(r"`(\w+)", table) if name[0].isupper() and hasattr(tld, name)}
    assert (called | returned) - set(tld.__all__) == set(), "the table names what is not exported"
    assert set(tld.__all__) - (called | returned) == set(), "exported names missing from the table"
