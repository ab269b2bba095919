"""The paper's findings as statistical tests: controls on noise, on data built to satisfy
each finding and on data built to contradict it, and small samples."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import tl_dynamics as tld
from tl_dynamics import metrics, synthetic
from tl_dynamics.report import findings
from tl_dynamics.stats import Resampler, percentile_interval
from tl_dynamics.metrics import default_labels

N_SHUFFLES = 200  # layer shuffles of the rotation null in these tests (the report: 1000)


def cache_of(resid, text_index=None):
    n = resid.shape[0]
    text_index = torch.arange(n) if text_index is None else text_index
    return tld.DynamicsCache(resid, default_labels(resid.shape[1]), text_index, torch.zeros(n, dtype=torch.long))


def run(resid, **kwargs):
    """Every Figure 1-2 finding of ``resid`` by key (a cheaper rotation null)."""
    null = metrics.rotation_null(resid, n_shuffles=N_SHUFFLES, seed=0)
    return {f.key: f for f in findings.dynamics_findings(cache_of(resid), rotation_null=null, **kwargs)}


def noise(seed, n=120, sublayers=16, d=32):
    return torch.randn(n, sublayers, d, generator=torch.Generator().manual_seed(seed))


def walk(steps, n=150, d=24, seed=0):
    """``x_0 ~ N(0, 1)`` per unit, then ``x_{t+1} = x_t + steps[t] * N(0, 1)``."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(n, 1, d, generator=g)
    increments = torch.randn(n, len(steps), d, generator=g) * torch.tensor(steps)[None, :, None]
    return torch.cat([start, start + increments.cumsum(1)], dim=1)


def chain(r, n=150, d=24, seed=0):
    """Unit-variance units whose successive sublayers correlate exactly ``r[t]`` in
    expectation: ``x_{t+1} = r_t x_t + sqrt(1 - r_t^2) e_t``."""
    g = torch.Generator().manual_seed(seed)
    states = [torch.randn(n, d, generator=g)]
    for rho in r:
        states.append(rho * states[-1] + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=g))
    return torch.stack(states, dim=1)


def layers(within, cross):
    """Per-transition values of successive layers: within (pre→mid), then cross (mid→pre)."""
    return [v for pair in zip(within, cross, strict=True) for v in pair]


@pytest.mark.parametrize("seed", range(5))
def test_noise_gives_no_yes(seed):
    found = run(noise(seed))
    assert [f.key for f in found.values()] == list(findings.DYNAMICS_KEYS)
    assert not [f.key for f in found.values() if f.verdict == "yes"]
    for finding in found.values():
        assert finding.null and 0 <= finding.p_adjusted <= 1
        assert finding.ci[0] <= finding.ci[1]


def test_growing_signed_units_satisfy_growth_and_sign():
    """Units keep their sign except in a few weak cells of the opposite sign (mean -0.4
    against noise 1: significant in some resamples only, so the kappa varies)."""
    g = torch.Generator().manual_seed(0)
    sign = torch.where(torch.rand(1, 1, 24, generator=g) < 0.5, -1.0, 1.0)
    scale = torch.arange(1, 13, dtype=torch.float32)[None, :, None]
    mean = sign * torch.where(torch.rand(1, 12, 24, generator=g) < 0.1, -0.4, 3.0)
    resid = (mean + torch.randn(100, 12, 24, generator=g)) * scale
    found = run(resid)
    assert found["activation_growth"].verdict == "yes"
    assert found["sign_persistence"].verdict == "yes"
    assert 0.5 < found["sign_persistence"].effect < 1.0
    shrinking = run(resid.flip(1))
    assert shrinking["activation_growth"].verdict == "no"


def test_perfectly_kept_signs_have_no_spread_and_stay_undecided():
    """Every resample gives kappa = 1: a statistic that does not vary says nothing."""
    g = torch.Generator().manual_seed(0)
    sign = torch.where(torch.rand(1, 1, 24, generator=g) < 0.5, -1.0, 1.0)
    resid = sign * (3 + 0.3 * torch.randn(100, 12, 24, generator=g))
    found = run(resid)["sign_persistence"]
    assert found.effect == 1.0 and found.verdict == "undecided" and "do not vary" in found.observed


def test_signs_that_flip_every_sublayer_contradict_sign_persistence():
    g = torch.Generator().manual_seed(1)
    sign = torch.where(torch.rand(1, 1, 24, generator=g) < 0.5, -1.0, 1.0)
    flips = torch.tensor([(-1.0) ** s for s in range(12)])[None, :, None]
    strength = torch.where(torch.rand(1, 12, 24, generator=g) < 0.2, 0.3, 3.0)  # some weak cells
    resid = sign * flips * strength + torch.randn(100, 12, 24, generator=g)
    found = run(resid)["sign_persistence"]
    assert found.verdict == "no" and found.effect < 0, found.observed


CORRELATION_KEYS = (
    "high_correlation", "correlation_rises", "correlation_within_above_cross",
    "cosine_within_above_cross", "velocity_cross_above_within",
)


def test_high_rising_correlation_with_rougher_cross_steps_satisfies_the_correlation_findings():
    within = [1 - 0.03 / (k + 1) for k in range(6)]
    cross = [1 - 0.1 / (k + 1) for k in range(6)]
    found = run(chain(layers(within, cross)))
    for key in CORRELATION_KEYS:
        assert found[key].verdict == "yes", found[key].observed


def test_low_falling_correlation_with_smoother_cross_steps_contradicts_them():
    within = [0.5 - 0.06 * k for k in range(6)]
    cross = [0.7 - 0.06 * k for k in range(6)]
    found = run(chain(layers(within, cross)))
    for key in CORRELATION_KEYS:
        assert found[key].verdict == "no", found[key].observed


def test_late_speed_up_satisfies_velocity_acceleration_and_early_one_contradicts():
    late = run(walk([1.0] * 8 + [4.0] * 4))["velocity_acceleration"]
    assert late.verdict == "yes" and late.effect > math.log(3)
    early = run(walk([4.0] * 4 + [1.0] * 8))["velocity_acceleration"]
    assert early.verdict == "no"


def test_mutual_information_findings_follow_built_dependence():
    # early layers: dependence falls, and each cross step is far weaker than its layer's
    within, cross = [0.97, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8], [0.6, 0.5, 0.4] + [0.5] * 6
    found = run(chain(layers(within, cross), n=200, d=16))
    assert found["information_falls"].verdict == "yes", found["information_falls"].observed
    assert found["information_drop_at_cross"].verdict == "yes"
    found = run(chain(layers(cross, within), n=200, d=16))
    assert found["information_drop_at_cross"].verdict == "no"
    rising_within, rising_cross = [0.8, 0.9, 0.97] + [0.97] * 6, [0.4, 0.5, 0.6] + [0.6] * 6
    found = run(chain(layers(rising_within, rising_cross), n=200, d=16))
    assert found["information_falls"].verdict == "no", found["information_falls"].observed


def test_smooth_oscillation_turns_less_than_the_shuffled_null():
    depth = torch.arange(32, dtype=torch.float32)
    wave = torch.sin(2 * math.pi * 2 * depth / 31)[None, :, None]
    resid = wave + 0.05 * torch.randn(80, 32, 8, generator=torch.Generator().manual_seed(0))
    finding = run(resid)["rotations_exceed_null"]
    assert finding.verdict == "no" and finding.effect < 0


def test_rotation_every_three_sublayers_turns_more_than_the_shuffled_null():
    # each unit turns a third of a circle per sublayer (random phase per unit): the true
    # order turns (S - 2) / 3 times, a shuffle of the same values fewer (~S / 4)
    n_sublayers, g = 32, torch.Generator().manual_seed(0)
    phase = 2 * math.pi * torch.rand(1, 1, 8, generator=g)
    depth = torch.arange(n_sublayers, dtype=torch.float32)[None, :, None]
    resid = torch.cos(2 * math.pi * depth / 3 + phase) + 0.3 * torch.randn(80, n_sublayers, 8, generator=g)
    finding = run(resid)["rotations_exceed_null"]
    assert finding.numbers["observed"] == pytest.approx((n_sublayers - 2) / 3, abs=0.5)
    assert finding.verdict == "yes", finding.observed
    assert finding.ci[0] <= finding.effect <= finding.ci[1]


def test_resampled_mean_trajectories_turn_more_than_the_observed_one():
    # the limitation in rotations_exceed_null's docstring: noise in a mean trajectory adds
    # turns, and a resampled mean carries it twice, so the interval sits above the count
    g = torch.Generator().manual_seed(0)
    depth = torch.arange(32, dtype=torch.float64)[None, :, None]
    wave = torch.sin(2 * math.pi * 2 * depth / 31 + 2 * math.pi * torch.rand(1, 1, 16, generator=g))
    resid = wave + torch.randn(60, 32, 16, generator=g, dtype=torch.float64)
    noise_free = float(metrics.rotations(wave, trajectory="mean").abs().mean())
    observed = float(metrics.rotations(resid, trajectory="mean").abs().mean())
    resampler = Resampler.of(torch.arange(60), 1000, 0)
    replicates = torch.cat(
        [metrics.rotations(m.double(), trajectory="sample").abs().mean(-1) for m in resampler.mean_chunks(resid)]
    ).numpy()
    assert noise_free == pytest.approx(2.0, abs=0.1)  # two periods turn twice
    assert noise_free < observed < percentile_interval(replicates)[0]


def test_too_few_texts_are_undecided_saying_why():
    found = run(noise(0, n=findings.MIN_TEXTS - 1))
    assert {f.verdict for f in found.values()} == {"undecided"}
    assert all("texts" in f.observed and f.claim for f in found.values())


def test_texts_not_tokens_are_resampled():
    # 40 texts of 5 tokens each: enough texts; weights are equal within a text
    resid = noise(0, n=200)
    text_index = torch.arange(40).repeat_interleave(5)
    weights = Resampler.of(text_index, 50, 0).weights
    assert torch.equal(weights.reshape(50, 40, 5).amin(-1), weights.reshape(50, 40, 5).amax(-1))
    dyn = cache_of(resid, text_index)
    assert findings._too_few_texts(dyn) is None
    assert findings._too_few_texts(cache_of(resid[:145], text_index[:145])) is not None


def test_linearised_correlation_bootstrap_matches_full_recomputation():
    resid = chain([0.5, 0.9, 0.3, 0.8], n=60, d=6, seed=3)
    resampler = Resampler.of(torch.arange(60), 400, seed=1)
    point, replicates = resampler.means(metrics.correlation.unit_correlation_per_sample(resid))
    assert point == pytest.approx(metrics.unit_correlation(resid).mean(-1).numpy())
    full = []
    for row in resampler.weights:
        index = torch.repeat_interleave(torch.arange(60), (row * 60).round().long())
        full.append(metrics.unit_correlation(resid[index]).mean(-1))
    full = torch.stack(full).numpy()
    assert replicates.std(0) == pytest.approx(full.std(0), rel=0.2)


def test_findings_json_has_the_test_fields():
    record = json.loads(json.dumps(run(noise(0))["cosine_rises"].to_json(), allow_nan=False))
    for field in ("effect", "ci", "p_value", "p_adjusted", "null", "alpha", "min_effect", "verdict"):
        assert field in record
    assert record["alpha"] == 0.01 and len(record["ci"]) == 2


class FakeResult:
    def __init__(self, layer, normalised):
        self.layer = layer
        self._normalised = normalised

    def recovery(self):
        return SimpleNamespace(normalised=self._normalised)


def sweep_of(final_distances, steps, points=20, seed=0):
    """One prompt's teleport sweep: at every layer ``points`` grid points end at about
    ``final_distances[layer]`` (normalised) after ``steps[layer]`` sublayers."""
    g = torch.Generator().manual_seed(seed)
    results = []
    for layer, (final, n_steps) in enumerate(zip(final_distances, steps, strict=True)):
        end = final * torch.exp(0.05 * torch.randn(points, generator=g))
        results.append(FakeResult(layer, torch.cat([torch.ones(points, n_steps), end[:, None]], 1)))
    return SimpleNamespace(results=results, layers=list(range(len(results))))


def prompts_of(final_distances, steps, n_prompts=10):
    """One sweep per prompt, each prompt's distances jittered by 10 %."""
    g = torch.Generator().manual_seed(1)
    return [
        sweep_of([d * float(torch.exp(0.1 * torch.randn(1, generator=g))) for d in final_distances], steps, seed=p)
        for p in range(n_prompts)
    ]


def test_mid_layers_attract_compares_per_sublayer_pull_over_prompts():
    # the same final distance everywhere, reached in fewer steps by the middle layers
    faster_middle = findings.mid_layers_attract(prompts_of([0.5, 0.5, 0.5, 0.9], [9, 5, 3, 1]))
    assert faster_middle.verdict == "yes", faster_middle.observed
    # each prompt's distances jitter by 10 %: the mean of 10 prompts within ~3 %
    assert faster_middle.numbers["pull_per_sublayer"][1] == pytest.approx(-math.log(0.5) / 5, rel=0.2)
    assert faster_middle.numbers["n_prompts"] == 10
    slower_middle = findings.mid_layers_attract(prompts_of([0.2, 0.95, 0.95, 0.5], [9, 5, 3, 1]))
    assert slower_middle.verdict == "no"


def test_one_prompt_or_none_leaves_the_teleport_finding_undecided():
    """Grid points of one prompt are neighbours, not independent samples."""
    one = findings.mid_layers_attract(sweep_of([0.5, 0.5, 0.5, 0.9], [9, 5, 3, 1], points=200))
    assert one.verdict == "undecided" and "prompt" in one.observed
    assert findings.mid_layers_attract(None).verdict == "undecided"
    few = findings.mid_layers_attract(prompts_of([0.5, 0.5, 0.5, 0.9], [9, 5, 3, 1], n_prompts=findings.MIN_PROMPTS - 1))
    assert few.verdict == "undecided"


def plane_walk(steps, spread, n=100, d=16, seed=0):
    """A walk in units 0-1 (start ~ N(0, 4), ``x_{t+1} = x_t + steps[t] * N(0, 1)``) and
    iid ``N(0, spread[t]^2)`` in the other units: the PC1-PC2 plane is units 0-1."""
    g = torch.Generator().manual_seed(seed)
    start = 2 * torch.randn(n, 1, 2, generator=g)
    increments = torch.randn(n, len(steps), 2, generator=g) * torch.tensor(steps)[None, :, None]
    plane = torch.cat([start, start + increments.cumsum(1)], dim=1)
    rest = torch.randn(n, len(spread), d - 2, generator=g) * torch.tensor(spread)[None, :, None]
    return torch.cat([plane, rest], dim=-1)


def fig4_findings(resid):
    """The two PCA findings of ``resid`` (2 components), each decided alone."""
    dyn = cache_of(resid)
    pca = tld.pca_trajectories(dyn, n_components=2, seed=0)
    variance = findings.variance_concentrates_with_depth(pca, dyn, 999, 0)
    return variance, findings.steps_lengthen_in_pca_plane(pca, dyn, 999, 0)


def test_variance_leaving_other_dimensions_satisfies_concentration_and_spreading_contradicts():
    narrowing = [1.5 - 0.13 * t for t in range(12)]  # off-plane spread shrinks with depth
    variance, _ = fig4_findings(plane_walk([0.3] * 11, narrowing, n=200))
    assert variance.verdict == "yes", variance.observed
    variance, _ = fig4_findings(plane_walk([0.3] * 11, narrowing[::-1], n=200))
    assert variance.verdict == "no", variance.observed


def test_lengthening_steps_in_the_plane_satisfy_the_step_finding_and_shortening_contradict():
    growing = [0.2 * (t + 1) for t in range(11)]
    _, steps = fig4_findings(plane_walk(growing, [0.3] * 12, n=200))
    assert steps.verdict == "yes", steps.observed
    assert steps.numbers["values"][-1] > 5 * steps.numbers["values"][0]
    _, steps = fig4_findings(plane_walk(growing[::-1], [0.3] * 12, n=200))
    assert steps.verdict == "no", steps.observed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_gives_no_yes_for_the_pca_findings(seed):
    for finding in fig4_findings(noise(seed, n=100, sublayers=12, d=16)):
        assert finding.verdict != "yes", finding.observed


def test_pca_axes_fitted_on_the_same_texts_make_a_walk_concentrate_held_out_ones_do_not():
    """The issue's failure: on a random walk the in-sample explained variance per sublayer
    rises with depth; with axes from the other half of the texts it is flat at ~k / d."""
    dyn = synthetic.structured("random_walk", 300, 24, 64, seed=0)
    pca = tld.pca_trajectories(dyn, n_components=16, seed=0)
    in_sample = pca.variance_per_sublayer_pooled.numpy()
    assert in_sample[-6:].mean() > 1.25 * in_sample[:6].mean()
    finding = findings.variance_concentrates_with_depth(pca, dyn, 999, 0)
    held_out = np.array(finding.numbers["values"])
    assert held_out.mean() == pytest.approx(16 / 64, abs=0.05)
    assert finding.verdict == "no", finding.observed


def test_trajectory_findings_keys_and_checks():
    dyn = cache_of(walk([0.2 * (k + 1) for k in range(7)], n=80, d=12))
    pca = tld.pca_trajectories(dyn, n_components=4, seed=0)
    both = findings.trajectory_findings(pca, None, dyn, n_resamples=499)
    assert [f.key for f in both] == list(findings.TRAJECTORY_KEYS)
    assert both[-1].verdict == "undecided"
    with pytest.raises(ValueError, match="pca must be fitted on dyn"):
        findings.trajectory_findings(pca, None, cache_of(dyn.resid[:40]))


def test_findings_on_minilm_are_complete_and_json_ready(minilm):
    dyn = tld.collect(minilm, tld.data.python_docs()[:48], progress=False)
    found = findings.dynamics_findings(dyn)
    assert [f.key for f in found] == list(findings.DYNAMICS_KEYS)
    for finding in found:
        record = finding.to_json()
        assert record["verdict"] in ("yes", "no", "undecided") and finding.observed
        assert any(ch.isdigit() for ch in finding.observed)
        assert "replicates" not in record


def test_report_table_shows_effect_interval_and_p_for_both_conditions():
    from tl_dynamics.report.html import findings_table

    original, control = list(run(noise(0)).values()), list(run(noise(1)).values())
    table = findings_table(original, control)
    assert table.count("<small>p = ") == 2 * len(original)
    first = original[0]
    assert f"[{first.ci[0]:+.3g}, {first.ci[1]:+.3g}]" in table and first.null in table


def built(effect, sd, n=4999, seed=0):
    """A finding of effect ``effect`` whose resamples spread by ``sd`` (minimum 0.5)."""
    return findings.tested(
        "k", "claim", "built", effect, effect + sd * np.random.default_rng(seed).standard_normal(n),
        effect_unit="x", null="x < 0.5", null_value=0.0, min_effect=0.5, direction=1,
    )


@pytest.mark.parametrize(
    ("effect", "sd", "expected"),
    [
        (0.9, 0.05, "yes"),  # 8 sd beyond the minimum
        (0.3, 0.05, "no"),  # 4 sd short of it, even though far from 0
        (0.45, 0.1, "undecided"),  # short of the minimum, interval reaches it
        (0.9, 0.3, "undecided"),  # large but not significant
        (-0.6, 0.05, "no"),  # the opposite direction
    ],
)
def test_one_sided_tests_against_the_minimum_decide_yes_and_no(effect, sd, expected):
    assert built(effect, sd).verdict == expected


def test_p_values_come_from_the_resamples_and_are_never_zero():
    far = built(5.0, 0.01)
    assert far.p_value == pytest.approx(1 / 5000) and far.p_short == pytest.approx(1.0)
    flat = findings.tested(
        "k", "claim", "built", 0.9, np.full(999, 0.9), effect_unit="x", null="x", null_value=0.0,
        min_effect=0.5, direction=1,
    )
    assert flat.verdict == "undecided" and math.isnan(flat.p_value) and "do not vary" in flat.observed


def test_holm_decides_across_the_family_of_both_one_sided_tests():
    single = built(0.9, 0.138)  # 2.9 sd beyond 0.5: p ~ 0.002, times 2 alone, 22 here
    assert single.verdict == "yes" and single.p_adjusted == pytest.approx(2 * single.p_value)
    family = findings.decide([single] + [built(0.5, 0.3, seed=s) for s in range(1, 11)])
    assert family[0].p_adjusted == pytest.approx(min(1.0, 22 * single.p_value))
    assert family[0].verdict == "undecided"  # 22 tests: 2 per finding


def test_trend_p_values_hold_their_level_on_flat_noise():
    """200 curves with no trend (per-sample random walks over 12 steps: zero mean at every
    step, serially correlated errors) of |values| around 1: the one-sided test of a 1.25x
    rise passes at 5 % rarely and at 1 % about never."""
    p_values = []
    for seed in range(200):
        terms = 1 + 0.05 * torch.randn(60, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).cumsum(1)
        resampler = Resampler.of(torch.arange(60), 999, seed)
        trend = findings._trend("k", "a claim", *resampler.means(terms), "a measure")
        p_values.append(trend.p_value)
    p_values = np.array(p_values)
    assert (p_values <= 0.05).sum() <= 18 and (p_values <= 0.01).sum() <= 6, np.sort(p_values)[:20]


def test_a_pre_mid_zig_zag_does_not_drive_a_trend():
    """The issue's MiniLM case: a curve alternating between a low pre and a high mid
    value, both rising slowly, read as a fall by rho; thirds compare whole layers."""
    depth = np.arange(24)
    curve = np.where(depth % 2 == 0, 0.26, 0.42) * (1 + 0.02 * depth)
    replicates = curve + 0.001 * np.random.default_rng(0).standard_normal((999, 24))
    trend = findings._trend("k", "a claim", curve, replicates, "a measure")
    first, last = curve[:8].mean(), curve[-8:].mean()
    assert trend.effect == pytest.approx(math.log(last / first))
    assert trend.effect > 0
