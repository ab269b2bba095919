"""The exercise checks of ``tl_dynamics.testing``: right answers pass, wrong ones are named.

A right answer here is an independent numpy/scipy implementation (tests/metrics_reference.py
and TransformerLens's own hooks), not the library's own output, so a check that merely
compares the library with itself would still be caught. Every kind of wrong answer a
student gives (no return, wrong shape, an off-by-one transition, NaN where none belongs)
must raise AssertionError with a message that says what differs.
"""

from __future__ import annotations

import itertools
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


def test_norms_and_transition_kinds_name_the_first_difference(dyn, capsys):
    testing.check_norms(dyn.resid.norm(dim=-1), dyn)
    testing.check_transition_kinds(["within", "cross"] * 2 + ["within"], dyn)
    assert capsys.readouterr().out.count("Passed") == 2
    with pytest.raises(AssertionError, match=r"first at sample 0, sublayer 0 \(0_pre\)"):
        testing.check_norms(dyn.resid.abs().sum(dim=-1), dyn)
    with pytest.raises(AssertionError, match=r"first at transition 1: expected 'cross', got 'within'"):
        testing.check_transition_kinds(["within"] * 5, dyn)
    with pytest.raises(AssertionError, match="expected 5 entries"):
        testing.check_transition_kinds(["within"] * 6, dyn)


def test_normalised_depth_is_the_compare_axis(dyn):
    labels = list(dyn.labels)
    testing.check_normalised_depth([s / 6 for s in range(6)], labels)
    with pytest.raises(AssertionError, match=r"sublayer 1 \(0_mid\)"):
        testing.check_normalised_depth([s / 5 for s in range(6)], labels)


def test_read_tokens_follow_collect_in_both_conditions(minilm):
    texts = ["The cat sat on the mat.", "Dogs bark at night, mostly."]
    testing.check_read_tokens(["[SEP]", "[SEP]"], minilm, texts)
    testing.check_read_tokens(["[SEP]", "[SEP]"], minilm, texts, shuffle=True, seed=0)  # specials stay
    with pytest.raises(AssertionError, match=r"first at text 0: expected '\[SEP\]', got '\.'"):
        testing.check_read_tokens([".", "."], minilm, texts)
    with pytest.raises(AssertionError, match="expected a list of strings"):
        testing.check_read_tokens("[SEP]", minilm, texts)


def test_recovery_is_the_teleports_normalised_distance(minilm):
    from tl_dynamics.interventions import teleport

    points = torch.randn(3, minilm.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 10
    result = teleport(minilm, layer=2, points=points)
    runs = result.trajectories[:, result.injection :].double()
    distance = (runs - result.control[result.injection :].double()).norm(dim=-1)
    testing.check_recovery(distance / distance[:, :1], result)
    with pytest.raises(AssertionError, match=r"normalised distance to the control: .* first at run 0, step 0 \(2_pre\)"):
        testing.check_recovery(distance / distance[:, -1:], result)


def _order_p_value(values, n_shuffles, seed):
    """A right answer: covariance with the position against random orders, observed counted."""
    generator = torch.Generator().manual_seed(seed)
    position = torch.arange(len(values), dtype=torch.float64)
    position = position - position.mean()
    values = values.double()
    orders = torch.stack([torch.randperm(len(values), generator=generator) for _ in range(n_shuffles)])
    null = (values[orders] - values.mean()) @ position
    return float((1 + (null >= (values - values.mean()) @ position).sum()) / (1 + n_shuffles))


def test_order_null_passes_a_right_test_and_names_what_a_wrong_one_gets_wrong(capsys):
    testing.check_order_null(_order_p_value)
    assert capsys.readouterr().out.startswith("Passed: order null")
    without_correction = lambda v, n, s: (round(_order_p_value(v, n, s) * (1 + n)) - 1) / n  # noqa: E731
    wrong = [
        (lambda v, n, s: 0.5, "strictly rising sequence should get p <= 0.01"),
        (without_correction, "a p-value of 0 claims more"),
        (lambda v, n, s: _order_p_value(-v, n, s) if v[0] > v[-1] else _order_p_value(v, n, s), "one-sided"),
        (lambda v, n, s: 0.005 if v[0] < v[-1] else 0.95, "spread evenly"),  # ignores the data's order
        (lambda v, n, s: "0.5", "expected a float p-value"),
    ]
    for p_value, message in wrong:
        with pytest.raises(AssertionError, match=message):
            testing.check_order_null(p_value)


def test_order_only_shuffle_keeps_the_read_token():
    def right(tokens, generator):
        shuffled = tokens.clone()
        shuffled[1:-1] = tokens[torch.randperm(len(tokens) - 2, generator=generator) + 1]
        return shuffled

    testing.check_order_only_shuffle(right)
    every_token = lambda tokens, g: tokens[torch.randperm(len(tokens), generator=g)]  # noqa: E731
    with pytest.raises(AssertionError, match="the first and the last token must stay"):
        testing.check_order_only_shuffle(every_token)
    with pytest.raises(AssertionError, match="came back in their original order"):
        testing.check_order_only_shuffle(lambda tokens, g: tokens.clone())
    seeds = itertools.count()
    with pytest.raises(AssertionError, match="same generator seed"):  # ignores the generator it is given
        testing.check_order_only_shuffle(lambda tokens, g: right(tokens, torch.Generator().manual_seed(next(seeds))))


def test_prediction_must_be_written_down_and_is_then_compared(capsys):
    choices = ("within", "cross")
    for missing in (..., None, "", "maybe"):
        with pytest.raises(AssertionError, match="write one of"):
            testing.check_prediction(missing, choices)
    testing.check_prediction(" Cross ", choices)
    testing.check_prediction("cross", choices, outcome="cross")
    testing.check_prediction("within", choices, outcome="cross")  # a wrong prediction is no error
    out = capsys.readouterr().out
    assert "written down" in out and "the run agrees" in out and "the run says 'cross'" in out
    with pytest.raises(TypeError, match="outcome must be one of"):
        testing.check_prediction("cross", choices, outcome="both")


def test_answer_in_words_against_accepted_answers(capsys):
    testing.check_answer(" The Last third. ", ["last", "the last third"], question="where")
    assert capsys.readouterr().out.startswith("Passed: where")
    for wrong, message in (("", "write your answer"), (None, "write your answer"), ("first", "not one of")):
        with pytest.raises(AssertionError, match=message):
            testing.check_answer(wrong, ["last", "the last third"], question="where")
    with pytest.raises(AssertionError) as error:
        testing.check_answer("middle", ["last"], question="where")
    assert "last" not in str(error.value).replace("look", "")  # the accepted answers stay hidden


def test_single_system_r2_is_checked_against_numpy_least_squares():
    import tl_dynamics as tld

    rng = np.random.default_rng(0)
    states = np.zeros((40, 12, 6))
    states[:, 0] = rng.normal(size=(40, 6))
    for t in range(1, 12):  # one stable linear system with noise
        states[:, t] = 0.8 * states[:, t - 1] + 0.3 * rng.normal(size=(40, 6))
    trajectories = torch.from_numpy(states).float()
    result = tld.regimes(trajectories, n_regimes=1, rank=4, seed=0)
    z = (trajectories.double().numpy() - result.mean.numpy()) @ result.components.numpy().T
    held = result.heldout.numpy()

    def pairs(rows):
        inputs = np.concatenate([rows[:, :-1], np.ones_like(rows[:, :-1, :1])], axis=-1)
        return inputs.reshape(-1, inputs.shape[-1]), rows[:, 1:].reshape(-1, rows.shape[-1])

    x, y = pairs(z[~held])
    weights = np.linalg.lstsq(x, y, rcond=None)[0]
    x_test, y_test = pairs(z[held])
    r2 = 1 - ((y_test - x_test @ weights) ** 2).sum() / ((y_test - y_test.mean(0)) ** 2).sum()
    testing.check_regime_single_r2(r2, result)
    with pytest.raises(AssertionError, match="held-out R2 of one linear system"):
        testing.check_regime_single_r2(r2 - 0.05, result)
    with pytest.raises(TypeError, match="result must be a Regimes"):
        testing.check_regime_single_r2(r2, trajectories)
