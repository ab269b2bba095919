"""Teleport interventions: exactness of the write, batching, recovery measures, bad input."""

from __future__ import annotations

import math

import einops
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tl_dynamics as tld
from tl_dynamics._batching import forward_trajectories
from tl_dynamics.embed import pca_trajectories
from tl_dynamics.interventions import (
    DEFAULT_PROMPT,
    Recovery,
    TeleportGrid,
    TeleportResult,
    TeleportSweep,
    inject_noise,
    pca_grid,
    swap_activations,
    teleport,
    teleport_layers,
    teleport_sweep,
)

NULL_TOLERANCE = 1e-5  # a null teleport must reproduce the control this closely
SHIFT = 3.0  # size of the random kick, in residual-stream units


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def minilm_pca(minilm):
    return pca_trajectories(
        tld.collect(minilm, tld.data.python_docs()[:32], progress=False), n_components=20
    )


def kicked_points(control_state: torch.Tensor, n: int) -> torch.Tensor:
    """The control's own state (a null teleport) followed by ``n - 1`` random kicks of it."""
    generator = torch.Generator().manual_seed(0)
    kicks = torch.randn(n - 1, control_state.shape[0], generator=generator)
    kicks = kicks / kicks.norm(dim=-1, keepdim=True) * SHIFT
    return torch.cat([control_state[None], control_state + kicks])


def test_teleport_layers_scale_the_papers_choice():
    assert teleport_layers(32) == [0, 7, 15, 23, 31]
    assert teleport_layers(6) == [0, 1, 2, 4, 5]
    assert teleport_layers(4) == [0, 1, 2, 3]
    assert teleport_layers(1) == [0]
    with pytest.raises(ValueError, match="n_layers"):
        teleport_layers(0)


@given(st.integers(1, 200))
def test_teleport_layers_span_the_model(n_layers):
    layers = teleport_layers(n_layers)
    assert layers[0] == 0 and layers[-1] == n_layers - 1
    assert layers == sorted(set(layers)) and len(layers) <= 5


@pytest.mark.parametrize("site", ["pre", "mid"])
def test_teleport_writes_exactly_and_only_downstream(any_model, site):
    layer = int(any_model.cfg.n_layers) // 2
    probe = teleport(
        any_model, layer=layer, points=torch.zeros(1, any_model.cfg.d_model), site=site
    )
    injection = probe.injection
    assert injection == 2 * layer + (site == "mid")
    assert probe.labels[injection] == f"{layer}_{site}"
    points = kicked_points(probe.control[injection], 5)
    result = teleport(any_model, layer=layer, points=points, site=site, batch_size=2)  # 3 passes
    assert result.trajectories.shape == (5, 2 * any_model.cfg.n_layers, any_model.cfg.d_model)
    assert result.logits.shape == (5, result.control_logits.shape[0])
    # the null teleport reproduces the control everywhere, logits included
    assert (result.trajectories[0] - result.control).abs().max() <= NULL_TOLERANCE
    assert (result.logits[0] - result.control_logits).abs().max() <= NULL_TOLERANCE * 10
    # sublayers before the injection are untouched, the injection holds the point
    before = result.trajectories[:, :injection] - result.control[:injection]
    assert before.numel() == 0 or before.abs().max() <= NULL_TOLERANCE
    torch.testing.assert_close(result.trajectories[:, injection], points)
    # a real kick changes every later sublayer and the logits
    if injection + 1 < len(result.labels):
        later = (result.trajectories[1:, injection + 1 :] - result.control[injection + 1 :]).norm(
            dim=-1
        )
        assert (later > 1e-3).all()
    assert ((result.logits[1:] - result.control_logits).abs().amax(-1) > 1e-4).all()


@pytest.mark.parametrize("position", [-1, 2])
def test_teleport_logits_are_the_models_logits_at_the_position(any_model, position):
    result = teleport(any_model, layer=0, points=torch.zeros(1, any_model.cfg.d_model),
                      position=position)
    with torch.inference_mode():
        full = any_model(any_model.to_tokens(DEFAULT_PROMPT))[0, position].float()
    assert result.control_logits.shape == full.shape
    assert (result.control_logits - full).abs().max() <= 1e-5 * full.abs().max()


def test_batching_gives_the_result_of_one_run_per_point(tiny_models):
    model = tiny_models["llama"]
    points = torch.randn(7, model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    one = teleport(model, "The quick brown fox.", layer=1, points=points, batch_size=1)
    many = teleport(model, "The quick brown fox.", layer=1, points=points, batch_size=32)
    torch.testing.assert_close(many.trajectories, one.trajectories, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(many.logits, one.logits, atol=1e-4, rtol=1e-5)


def test_points_run_in_batched_passes(tiny_models, monkeypatch):
    from tl_dynamics import interventions

    passes = []

    def counting(model, tokens, *args, **kwargs):
        passes.append(tokens.shape[0])
        return forward_trajectories(model, tokens, *args, **kwargs)

    monkeypatch.setattr(interventions, "forward_trajectories", counting)
    model = tiny_models["gpt2"]
    teleport(model, layer=1, points=torch.zeros(9, model.cfg.d_model), batch_size=4)
    assert passes == [1, 3, 3, 3]  # the control, then ceil(9 / 4) = 3 passes of equal size


def test_position_picks_the_token_written_and_read(minilm):
    tokens = minilm.to_tokens(DEFAULT_PROMPT)[0]
    point = torch.zeros(1, minilm.cfg.d_model)
    result = teleport(minilm, layer=2, points=point, position=3)
    assert result.position == 3
    _, cache = minilm.run_with_cache(tokens[None])
    torch.testing.assert_close(
        result.control[0], cache["blocks.0.hook_resid_pre"][0, 3], atol=1e-5, rtol=0
    )
    assert teleport(minilm, layer=2, points=point, position=-1).position == len(tokens) - 1


def test_pca_grid_covers_the_observed_plane(minilm_pca):
    grid = pca_grid(minilm_pca, n=4)
    assert isinstance(grid, TeleportGrid)
    assert grid.plane_points.shape == (16, 2) and grid.points.shape == (16, 384)
    observed = minilm_pca.trajectories[..., :2].reshape(-1, 2)
    torch.testing.assert_close(grid.plane_points.min(0).values, observed.min(0).values)
    torch.testing.assert_close(grid.plane_points.max(0).values, observed.max(0).values)
    projected = minilm_pca.project(grid.points)
    torch.testing.assert_close(projected[:, :2], grid.plane_points, atol=1e-3, rtol=1e-5)
    assert projected[:, 2:].abs().max() < 1e-3  # x = z V[:2]^T + mu has no other component
    square = pca_grid(minilm_pca, n=3, r_min=-5.0, r_max=5.0)
    assert square.plane_points.tolist()[:3] == [[-5.0, -5.0], [-5.0, 0.0], [-5.0, 5.0]]


def test_recovery_measures_distances_to_the_control():
    control = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    runs = control.repeat(3, 1, 1)
    runs[0, 1:] += torch.tensor([[0.0, 4.0], [0.0, 2.0], [0.0, 1.0]])  # pulled back
    runs[1, 1:] += torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])  # pushed away
    result = TeleportResult(
        model_name="toy",
        prompt="toy",
        layer=0,
        site="mid",
        position=0,
        injection=1,
        labels=("0_pre", "0_mid", "1_pre", "1_mid"),
        points=runs[:, 1],
        plane_points=None,
        trajectories=runs,
        control=control,
        logits=torch.zeros(3, 5),
        control_logits=torch.zeros(5),
    )
    recovery = result.recovery()
    assert isinstance(recovery, Recovery) and recovery.labels == ("0_mid", "1_pre", "1_mid")
    assert recovery.sublayers.tolist() == [1, 2, 3]
    torch.testing.assert_close(
        recovery.distance[:2], torch.tensor([[4.0, 2, 1], [1, 2, 3]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        recovery.normalised[:2], torch.tensor([[1.0, 0.5, 0.25], [1, 2, 3]], dtype=torch.float64)
    )
    torch.testing.assert_close(recovery.mse[0], torch.tensor([8.0, 2, 0.5], dtype=torch.float64))
    norms = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)  # of the control, from step 0
    torch.testing.assert_close(recovery.relative[1], torch.tensor([1.0, 2, 3]) / norms)
    # medians over the displaced points: of (0.25, 3), and of ((1/3) / 4, 1 / 1)
    assert recovery.relative_contraction == pytest.approx((1 / 12 + 1) / 2)
    assert recovery.normalised[2].isnan().all()  # not displaced: nothing to normalise by
    assert recovery.contraction == pytest.approx((0.25 + 3) / 2)
    assert recovery.plane_distance is None
    frame = recovery.to_frame()
    assert len(frame) == 9 and "plane_distance" not in frame.columns
    assert frame.loc[(frame.point == 1) & (frame.step == 2), "normalised"].item() == pytest.approx(
        3.0
    )


def test_teleport_on_the_pca_grid_with_real_weights(minilm, minilm_pca):
    grid = pca_grid(minilm_pca, n=3)
    result = teleport(minilm, layer=2, points=grid, pca=minilm_pca)
    torch.testing.assert_close(result.plane_points, grid.plane_points)
    recovery = result.recovery()
    assert recovery.distance.shape == (9, 12 - result.injection)
    torch.testing.assert_close(recovery.normalised[:, 0], torch.ones(9, dtype=torch.float64))
    assert recovery.plane_normalised is not None and math.isfinite(recovery.contraction)
    assert {"plane_distance", "plane_normalised"} <= set(recovery.to_frame().columns)


def test_sweep_runs_the_default_layers(minilm, minilm_pca):
    sweep = teleport_sweep(minilm, minilm_pca, n=2, progress=False)
    assert isinstance(sweep, TeleportSweep) and sweep.layers == [0, 1, 2, 4, 5]
    table = sweep.to_frame()
    assert table.layer.tolist() == [0, 1, 2, 4, 5] and table.steps.tolist() == [11, 9, 7, 3, 1]
    summaries = ["contraction", "relative_contraction", "plane_contraction", "final_mse"]
    assert table[summaries].notna().all().all()
    assert set(sweep.recovery_frame().layer) == {0, 1, 2, 4, 5}
    # one shared control run: each layer's result is what teleport gives alone
    alone = teleport(minilm, layer=2, points=pca_grid(minilm_pca, n=2), pca=minilm_pca)
    torch.testing.assert_close(sweep.results[2].trajectories, alone.trajectories)
    torch.testing.assert_close(sweep.results[2].control, alone.control)


def test_noise_injection_displaces_by_the_relative_scale(minilm):
    result = inject_noise(minilm, layer=2, scale=0.1, n=4, seed=0)
    state = result.control[result.injection]
    distance = (result.points - state).norm(dim=-1)
    torch.testing.assert_close(
        distance, torch.full((4,), 0.1 * float(state.norm())), rtol=1e-5, atol=1e-5
    )
    again = inject_noise(minilm, layer=2, scale=0.1, n=4, seed=0)
    torch.testing.assert_close(again.trajectories, result.trajectories)
    assert not torch.equal(
        inject_noise(minilm, layer=2, scale=0.1, n=4, seed=1).points, result.points
    )


def test_swap_writes_the_donors_states(minilm, texts):
    result = swap_activations(minilm, layer=1, donors=texts[:3], site="mid")
    donated = tld.collect(minilm, texts[:3], progress=False).resid[:, result.injection]
    torch.testing.assert_close(result.points, donated)
    torch.testing.assert_close(result.trajectories[:, result.injection], donated)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": 6}, ValueError, r"layer must be an int in \[0, 5\]"),
        ({"layer": -1}, ValueError, "layer"),
        ({"layer": True}, ValueError, "layer"),
        ({"layer": "1"}, ValueError, "layer"),
        ({"site": "post"}, ValueError, "site must be one of"),
        ({"points": torch.zeros(2, 64)}, ValueError, r"points must have shape \[n_points, 384\]"),
        ({"points": torch.zeros(384)}, ValueError, "points must have shape"),
        ({"points": torch.zeros(0, 384)}, ValueError, "points is empty"),
        ({"points": [[0.0] * 384]}, TypeError, "points must be a TeleportGrid"),
        ({"points": torch.full((1, 384), math.inf)}, ValueError, "non-finite"),
        ({"prompt": ""}, ValueError, "prompt is empty"),
        ({"prompt": "   "}, ValueError, "prompt is empty"),
        ({"prompt": ["a prompt"]}, TypeError, "prompt must be a str"),
        ({"position": 99}, ValueError, "position"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"pca": "pca"}, TypeError, "pca must be"),
    ],
)
def test_bad_teleport_input_is_refused(minilm, kwargs, error, match):
    arguments = {"layer": 1, "points": torch.zeros(1, 384), **kwargs}
    with pytest.raises(error, match=match):
        teleport(minilm, **arguments)


def test_an_empty_grid_is_refused(minilm_pca):
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        pca_grid(minilm_pca, n=0)
    with pytest.raises(ValueError, match="r_min must not exceed r_max"):
        pca_grid(minilm_pca, r_min=1.0, r_max=-1.0)


def test_a_prompt_that_tokenizes_to_nothing_is_refused(minilm, monkeypatch):
    monkeypatch.setattr(
        minilm, "to_tokens", lambda *args, **kwargs: torch.zeros(1, 0, dtype=torch.long)
    )
    with pytest.raises(ValueError, match=r"prompt 'Hello' cannot be run: .*no tokens"):
        teleport(minilm, "Hello", layer=0, points=torch.zeros(1, 384))


def test_a_pca_of_another_model_is_refused(minilm, tiny_models):
    llama = tiny_models["llama"]
    other = pca_trajectories(tld.collect(llama, ["Some text to fit a PCA on."] * 2, progress=False), n_components=2)
    with pytest.raises(ValueError, match=r"pca was fitted on vectors of width 64.*d_model=384"):
        teleport(minilm, layer=0, points=torch.zeros(1, 384), pca=other)
    with pytest.raises(ValueError, match="pca was fitted on vectors of width 64"):
        teleport_sweep(minilm, other, n=2, progress=False)


def test_training_mode_and_non_models_are_refused(tiny_models):
    with pytest.raises(TypeError, match="TransformerLens model"):
        teleport(object(), layer=0, points=torch.zeros(1, 64))
    model = tiny_models["gpt2"]
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            teleport(model, layer=0, points=torch.zeros(1, 64))
    finally:
        model.eval()


def test_bad_noise_and_donors_are_refused(minilm):
    with pytest.raises(ValueError, match="scale"):
        inject_noise(minilm, layer=0, scale=0.0, n=2)
    with pytest.raises(ValueError, match="n must be"):
        inject_noise(minilm, layer=0, scale=0.1, n=0)
    with pytest.raises(ValueError, match="donors"):
        swap_activations(minilm, layer=0, donors=[])


# ------------------------------------------------------- hooks for the user's own runs


def last_token_trajectories(model, prompt, rows, fwd_hooks):
    """TransformerLens's own accumulated_resid at the last token of ``rows`` copies of the
    prompt run under ``fwd_hooks``: ``[row, sublayer, d_model]``."""
    tokens = model.to_tokens(prompt).expand(rows, -1)
    with model.hooks(fwd_hooks=fwd_hooks):
        _, cache = model.run_with_cache(tokens)
    stack = cache.accumulated_resid(incl_mid=True, pos_slice=-1)[:-1]
    return einops.rearrange(stack, "sublayer row d_model -> row sublayer d_model").float(), cache


@pytest.mark.parametrize("site", ["pre", "mid"])
def test_teleport_hook_in_run_with_hooks_gives_the_teleport(any_model, site):
    layer = int(any_model.cfg.n_layers) // 2
    name = f"blocks.{layer}.hook_resid_{site}"
    zero = torch.zeros(1, any_model.cfg.d_model)
    probe = teleport(any_model, layer=layer, points=zero, site=site)
    points = kicked_points(probe.control[probe.injection], 3)
    result = teleport(any_model, layer=layer, points=points, site=site)
    hook = tld.teleport_hook(points, position=-1)
    runs, cache = last_token_trajectories(any_model, DEFAULT_PROMPT, 3, [(name, hook)])
    assert (runs - result.trajectories).abs().max() <= NULL_TOLERANCE * runs.abs().max()
    torch.testing.assert_close(runs[:, probe.injection], points)
    with torch.inference_mode():
        logits = any_model.run_with_hooks(any_model.to_tokens(DEFAULT_PROMPT).expand(3, -1),
                                          fwd_hooks=[(name, hook)])[:, -1]  # fmt: skip
    assert (logits - result.logits).abs().max() <= NULL_TOLERANCE * 10 * logits.abs().max()
    # a [d_model] vector goes into every row
    one_point = [(name, tld.teleport_hook(points[1]))]
    one, _ = last_token_trajectories(any_model, DEFAULT_PROMPT, 2, one_point)
    torch.testing.assert_close(one, result.trajectories[1:2].expand(2, -1, -1))


def test_noise_hook_kicks_as_inject_noise_does(minilm):
    result = inject_noise(minilm, layer=2, scale=0.1, n=4, seed=3)
    hooks = [("blocks.2.hook_resid_pre", tld.noise_hook(0.1, seed=3))]
    runs, _ = last_token_trajectories(minilm, DEFAULT_PROMPT, 4, hooks)
    state = result.control[result.injection]
    distance = (runs[:, result.injection] - state).norm(dim=-1)
    torch.testing.assert_close(distance, torch.full((4,), 0.1 * float(state.norm())))
    torch.testing.assert_close(runs, result.trajectories, atol=1e-4, rtol=1e-5)
    again, _ = last_token_trajectories(minilm, DEFAULT_PROMPT, 4, hooks)
    assert torch.equal(again, runs)  # the same kicks on every call


def test_swap_hook_patches_the_donors_states(minilm, texts):
    result = swap_activations(minilm, layer=1, donors=texts[:3], site="mid")
    hooks = [("blocks.1.hook_resid_mid", tld.swap_hook(minilm, texts[:3], layer=1, site="mid"))]
    runs, _ = last_token_trajectories(minilm, DEFAULT_PROMPT, 3, hooks)
    torch.testing.assert_close(runs, result.trajectories, atol=1e-4, rtol=1e-5)


def test_hooks_refuse_bad_input(minilm):
    d_model = minilm.cfg.d_model
    with pytest.raises(TypeError, match="values must be a floating tensor"):
        tld.teleport_hook([0.0] * d_model)
    for bad in (torch.zeros(1, 1, d_model), torch.zeros(0)):
        with pytest.raises(ValueError, match="values must have shape"):
            tld.teleport_hook(bad)
    with pytest.raises(ValueError, match="non-finite"):
        tld.teleport_hook(torch.full((d_model,), math.nan))
    with pytest.raises(ValueError, match="position must be an int"):
        tld.teleport_hook(torch.zeros(d_model), position=1.0)
    tokens = minilm.to_tokens(DEFAULT_PROMPT)
    calls = [
        (tld.teleport_hook(torch.zeros(64)), r"values of shape \(1, 64\) cannot be written"),
        (tld.teleport_hook(torch.zeros(3, d_model)), r"\[batch=1, pos=\d+, d_model=384\]"),
        (tld.teleport_hook(torch.zeros(d_model), position=500), "position 500 is outside"),
        (tld.noise_hook(0.1, position=-500), "position -500 is outside"),
    ]
    for hook, match in calls:
        with pytest.raises(ValueError, match=match):
            minilm.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", hook)])
    for scale in (0, -1.0, math.inf, True):
        with pytest.raises(ValueError, match="scale must be a positive number"):
            tld.noise_hook(scale)
    with pytest.raises(ValueError, match="layer must be an int"):
        tld.swap_hook(minilm, ["a donor"], layer=6)
    with pytest.raises(ValueError, match="donors"):
        tld.swap_hook(minilm, [], layer=0)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])  # pre-norm: BERT normalises
def test_a_write_at_resid_mid_carries_on_in_the_residual_stream(tiny_models, arch):
    """resid_post = (written) resid_mid + mlp_out: the write is a residual-stream write."""
    model = tiny_models[arch]
    state = torch.zeros(model.cfg.d_model)
    with model.hooks(fwd_hooks=[("blocks.1.hook_resid_mid", tld.teleport_hook(state))]):
        _, cache = model.run_with_cache(model.to_tokens(DEFAULT_PROMPT))
    post = cache["blocks.1.hook_resid_post"][0, -1]
    torch.testing.assert_close(post, state + cache["blocks.1.hook_mlp_out"][0, -1])


def test_a_new_tensor_returned_at_a_bridges_resid_mid_reaches_only_the_mlp(tiny_models):
    """The pitfall the module's docstring and the README warn about (TransformerBridge's
    hook_resid_mid is ln2.hook_in). If this fails, TransformerLens changed it: update them."""
    model = tiny_models["llama"]
    state = torch.zeros(model.cfg.d_model)

    def replace(activation, hook):
        new = activation.clone()
        new[:, -1] = state
        return new

    with model.hooks(fwd_hooks=[("blocks.1.hook_resid_mid", replace)]):
        _, cache = model.run_with_cache(model.to_tokens(DEFAULT_PROMPT))
    _, plain = model.run_with_cache(model.to_tokens(DEFAULT_PROMPT))
    post = cache["blocks.1.hook_resid_post"][0, -1]
    mid = plain["blocks.1.hook_resid_mid"][0, -1]
    torch.testing.assert_close(post, mid + cache["blocks.1.hook_mlp_out"][0, -1])
