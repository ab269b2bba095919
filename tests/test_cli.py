"""The command's options: clear names, with the old ones kept as aliases."""

import pytest

from tl_dynamics.cli import _parser


@pytest.mark.parametrize("flag", ["--sample", "--n"])
def test_report_sample_and_its_old_name(flag):
    assert _parser().parse_args(["report", flag, "7"]).n == 7


@pytest.mark.parametrize("flag", ["--first", "--limit"])
def test_collect_first_and_its_old_name(flag):
    assert _parser().parse_args(["collect", "--out", "store", flag, "3"]).limit == 3


def test_a_bad_count_names_both_spellings(capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["collect", "--out", "store", "--first", "0"])
    assert exit_.value.code == 2
    assert "--first/--limit: must be a positive integer; got '0'" in capsys.readouterr().err
