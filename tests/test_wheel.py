"""The package installs the way a course installs it: a wheel with complete metadata.

``python -m build`` makes a wheel from a copy of the sources, ``twine check`` accepts it,
and the wheel installs into a fresh virtual environment and runs the README's quickstart
there. To stay cheap and offline, the fresh environment borrows the dependencies of the
running one through a ``.pth`` file and gets the wheel with ``pip install --no-deps
--no-index``; the quickstart runs outside the repository, so it can only import the
installed copy.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "tl_dynamics")
SETUPTOOLS_WITHOUT_WHEEL = (70, 1)  # setuptools builds wheels without the `wheel` package from 70.1
REPOSITORY_URL = "https://github.com/tl-dynamics/tl-dynamics"

pytestmark = pytest.mark.slow


CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
"""The environment without PYTHONPATH: pip and the fresh venv must not see the source tree."""


def _run(*args, **kwargs):
    kwargs.setdefault("env", CLEAN_ENV)
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


def _local_setuptools_builds() -> bool:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2]) >= SETUPTOOLS_WITHOUT_WHEEL


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the sources (nothing is written into the repository)."""
    source = tmp_path_factory.mktemp("source")
    for name in PACKAGE_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    out = tmp_path_factory.mktemp("dist")
    # Offline where the running environment can build; otherwise build's own isolated env.
    isolation = ["--no-isolation", "--skip-dependency-check"] if _local_setuptools_builds() else []
    _run(sys.executable, "-m", "build", "--wheel", *isolation, "--outdir", str(out), str(source))
    (built,) = out.glob("tl_dynamics-*.whl")
    return built


def test_wheel_metadata_is_complete(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert urls["Source"] == REPOSITORY_URL and urls["Homepage"] == REPOSITORY_URL
    assert metadata["License"] == "MIT" and any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    classifiers = metadata.get_all("Classifier")
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers)
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().startswith("# tl-dynamics")
    assert "tl_dynamics/testing.py" in names
    assert not any(n.startswith(("tests/", "notebooks/")) for n in names)


def test_twine_check_passes(wheel):
    _run(sys.executable, "-m", "twine", "check", "--strict", str(wheel))


def _quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_wheel_installs_into_a_fresh_venv_and_runs_the_quickstart(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    site_packages = Path(
        _run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    )
    _run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel))
    # Then the running environment's dependencies (torch, transformer-lens, ...) without copying
    # them. Written after the install, so that pip never sees (let alone touches) the running
    # environment's own tl-dynamics.
    (site_packages / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "work"
    work.mkdir()
    where = _run(str(python), "-c", "import tl_dynamics; print(tl_dynamics.__file__)", cwd=work)
    assert Path(where.stdout.strip()).is_relative_to(venv)  # the installed copy, not the repository's
    (work / "quickstart.py").write_text(_quickstart())
    _run(str(python), "quickstart.py", cwd=work, timeout=600)
    assert (work / "velocity.html").is_file()
