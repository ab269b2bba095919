"""The exercise checks of ``tl_dynamics.testing``: right answers pass, wrong ones are named.

A right answer here is an independent numpy/scipy implementation (tests/metrics_reference.py
and TransformerLens's own hooks), not the library's own output, so a check that merely
compares the library with itself would still be caught. Every kind of wrong answer a
student gives (no return, wrong shape, an off-by-one transition, NaN where none belongs)
must raise AssertionError with a message that says what differs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from metrics_reference import kde_mutual_information_reference, make_resid, paper_rotations

from tl_dynamics import DynamicsCache, testing
from tl_dynamics.interventions import DEFAULT_PROMPT

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dyn():
    resid = make_resid(batch=60, n_sublayers=6, d_model=8, seed=1)
    return DynamicsCache(
        resid=resid,
        labels=("0_pre", "0_mid", "1_pre", "1_mid", "2_pre", "2_mid"),
        text_index=torch.arange(60),
        position=torch.zeros(60, dtype=torch.long),
    )


def numpy_velocity(resid):
    h = resid.double().numpy()
    return torch.from_numpy(np.linalg.norm(np.diff(h, axis=1), axis=-1))


def numpy_cosine(resid):
    h = resid.double().numpy()
    a, b = h[:, :-1], h[:, 1:]
    return torch.from_numpy(
        (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    )


def numpy_correlation(resid):
    h = resid.double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant unit gives NaN, as expected
        return torch.tensor(
            [
                [np.corrcoef(h[:, t, u], h[:, t + 1, u])[0, 1] for u in range(h.shape[2])]
                for t in range(h.shape[1] - 1)
            ]
        )


def test_right_answers_pass_and_print_a_success_line(dyn, capsys):
    testing.check_velocity(numpy_velocity(dyn.resid).float(), dyn)
    testing.check_cosine_similarity(numpy_cosine(dyn.resid), dyn)
    testing.check_unit_correlation(numpy_correlation(dyn.resid).numpy(), dyn.resid)
    x, y = dyn.resid[:, 2, 3].numpy(), dyn.resid[:, 3, 3].numpy()
    testing.check_mutual_information(
        kde_mutual_information_reference(x, y), dyn, unit=3, transition=2
    )
    mean_trajectory = dyn.resid.double().mean(0)[:, 5].numpy()
    testing.check_rotations(torch.tensor(paper_rotations(mean_trajectory)), dyn, unit=5)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith(testing.PASS_MARK) for line in lines)


def test_no_return_is_named(dyn):
    with pytest.raises(AssertionError, match="without a `return`"):
        testing.check_velocity(None, dyn)


def test_wrong_shape_names_the_axes(dyn):
    with pytest.raises(AssertionError, match=r"expected shape \(60, 5\) \[sample, transition\], got \(60, 6\)"):
        testing.check_velocity(dyn.resid.norm(dim=-1), dyn)
    with pytest.raises(AssertionError, match="reshape it"):
        testing.check_cosine_similarity(numpy_cosine(dyn.resid).T, dyn)


def test_wrong_value_names_sample_and_transition(dyn):
    mine = numpy_velocity(dyn.resid)
    mine[7, 3] += 0.01
    with pytest.raises(AssertionError) as error:
        testing.check_velocity(mine, dyn)
    message = str(error.value)
    assert "1 of 300 entries differ" in message
    assert "sample 7, transition 3 (1_mid -> 2_pre)" in message
    assert f"expected {float(numpy_velocity(dyn.resid)[7, 3]):.6g}" in message


def test_off_by_one_transition_is_caught(dyn):
    """Comparing each sublayer with the one two steps on is a classic slip."""
    h = dyn.resid.double()
    wrong = torch.cat([(h[:, 2:] - h[:, :-2]).norm(dim=-1), (h[:, -1:] - h[:, -2:-1]).norm(dim=-1)], 1)
    with pytest.raises(AssertionError, match="sample 0, transition 0"):
        testing.check_velocity(wrong, dyn)


def test_nan_pattern_is_checked(dyn):
    resid = dyn.resid.clone()
    resid[:, 2, 4] = 1.5  # a constant unit has no correlation: NaN
    expected = numpy_correlation(resid)
    assert expected[1, 4].isnan() and expected[2, 4].isnan()
    testing.check_unit_correlation(expected, resid)
    with pytest.raises(AssertionError, match=r"NaN in the wrong place at transition 1 \(0_mid -> 1_pre\), unit 4"):
        testing.check_unit_correlation(torch.nan_to_num(expected), resid)


def test_scalar_checks_catch_wrong_values(dyn):
    with pytest.raises(AssertionError, match=r"MI of unit 0 across 0_pre -> 0_mid: expected .* nats, got 0 nats$"):
        testing.check_mutual_information(0.0, dyn, unit=0, transition=0)
    # Per-sample counts averaged are not the mean trajectory's count.
    per_sample = np.mean([paper_rotations(row) for row in dyn.resid[:, :, 1].double().numpy()])
    mean_count = paper_rotations(dyn.resid[:, :, 1].double().mean(0).numpy())
    assert not math.isclose(per_sample, mean_count, abs_tol=1e-3)
    with pytest.raises(AssertionError, match="rotation count of unit 1"):
        testing.check_rotations(per_sample, dyn, unit=1)


def test_bad_arguments_name_themselves(dyn):
    with pytest.raises(TypeError, match="dyn must be a DynamicsCache"):
        testing.check_velocity(torch.zeros(2), [1, 2])
    with pytest.raises(ValueError, match=r"unit must be an int in \[0, 7\]"):
        testing.check_rotations(0.0, dyn, unit=8)
    with pytest.raises(ValueError, match=r"transition must be an int in \[0, 4\]"):
        testing.check_mutual_information(0.0, dyn, unit=0, transition=5)


def test_teleport_against_transformer_lens_hooks(minilm):
    """A teleport written with plain TransformerLens hooks passes; the control fails."""
    layer = 2
    tokens = minilm.to_tokens(DEFAULT_PROMPT)
    names = [f"blocks.{l}.hook_resid_{site}" for l in range(minilm.cfg.n_layers) for site in ("pre", "mid")]
    _, cache = minilm.run_with_cache(tokens, names_filter=lambda name: name in names)
    control = torch.stack([cache[name][0, -1] for name in names])
    point = control[2 * layer] * 3.0 + 1.0

    def write(activation, hook):
        activation[:, -1] = point
        return activation

    with minilm.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", write)]):
        _, cache = minilm.run_with_cache(tokens, names_filter=lambda name: name in names)
    mine = torch.stack([cache[name][0, -1] for name in names])
    testing.check_teleport(mine, minilm, layer=layer, point=point)
    with pytest.raises(AssertionError, match=r"first at sublayer 4 \(2_pre\)"):
        testing.check_teleport(control, minilm, layer=layer, point=point)
