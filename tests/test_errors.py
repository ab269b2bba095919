"""One exception class for bad input, and the only one the command turns into exit 2."""

import sys

import pytest
import torch

import tl_dynamics as tld
from tl_dynamics import cli, data
from tl_dynamics.cli import EXIT_BAD_INPUT, main
from tl_dynamics.errors import (
    DynamicsInputError,
    InputNotFoundError,
    InputTypeError,
    MissingDependencyError,
)


def test_bad_input_is_one_class_that_is_also_the_builtin_type():
    with pytest.raises(DynamicsInputError, match=r"resid must have 3 dims.*got shape"):
        tld.metrics.velocity(torch.zeros(4, 3))
    with pytest.raises(InputTypeError) as caught:
        tld.metrics.velocity([[[0.0]]])
    assert isinstance(caught.value, (DynamicsInputError, ValueError, TypeError))
    with pytest.raises(InputNotFoundError) as missing:
        data.load_corpus("no-such-file.txt")
    assert isinstance(missing.value, (DynamicsInputError, FileNotFoundError))


def test_the_command_turns_bad_input_into_exit_2(monkeypatch, capsys, tmp_path):
    def bad_input(args):
        raise DynamicsInputError("batch_size must be a positive int; got 0")

    monkeypatch.setattr(cli, "_report", bad_input)
    assert main(["report", "--out", str(tmp_path / "r")]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "tl-dynamics: error: batch_size must be a positive int; got 0\n"


@pytest.mark.parametrize("bug", [TypeError, ValueError, ImportError, KeyError])
def test_a_genuine_bug_keeps_its_traceback(monkeypatch, tmp_path, bug):
    def buggy(args):
        raise bug("an internal mistake")

    monkeypatch.setattr(cli, "_report", buggy)
    with pytest.raises(bug, match="an internal mistake"):
        main(["report", "--out", str(tmp_path / "r")])


def test_a_missing_optional_package_prints_its_pip_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    with pytest.raises(MissingDependencyError) as caught:
        data.wikitext()
    assert isinstance(caught.value, ImportError)
    status = main(["report", "--texts", "wikitext", "--out", str(tmp_path / "r"), "--quiet"])
    assert status == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.startswith("tl-dynamics: error:") and 'pip install "tl-dynamics[hub]"' in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
