"""Jacobian spectra: matrix-free SVD against known and dense Jacobians, on real models."""

from __future__ import annotations

import math

import pytest
import torch

import tl_dynamics as tld
from tl_dynamics.stability import (
    JacobianSpectrum,
    JacobianSweep,
    jacobian_spectrum,
    jacobian_sweep,
    kick_growth,
    map_spectrum,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_known_linear_map_gives_its_singular_triplets():
    generator = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(30, 30, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(30, 30, generator=generator, dtype=torch.float64))
    sigma = torch.logspace(1, -2, 30, dtype=torch.float64)
    matrix = u @ torch.diag(sigma) @ v.T
    values, left, right = map_spectrum(lambda x: x @ matrix.T, torch.zeros(30, dtype=torch.float64), k=5)
    torch.testing.assert_close(values, sigma[:5], rtol=1e-10, atol=0)
    torch.testing.assert_close(matrix @ right, left * values, rtol=0, atol=1e-10)
    torch.testing.assert_close(left.T @ left, torch.eye(5, dtype=torch.float64))


def test_nonlinear_map_matches_its_analytic_jacobian():
    """tanh(W x + b) has Jacobian diag(1 - tanh^2(W x + b)) W."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(40, 50, generator=generator, dtype=torch.float64) / 5
    bias = torch.randn(40, generator=generator, dtype=torch.float64)
    x = torch.randn(50, generator=generator, dtype=torch.float64)
    analytic = torch.diag(1 - torch.tanh(weight @ x + bias) ** 2) @ weight
    values, _, _ = map_spectrum(lambda rows: torch.tanh(rows @ weight.T + bias), x, k=8)
    torch.testing.assert_close(values, torch.linalg.svdvals(analytic)[:8], rtol=1e-8, atol=0)


def test_a_flat_spectrum_near_the_identity_converges():
    """Residual maps are I + low rank: a flat spectrum, the hard case for sketching."""
    generator = torch.Generator().manual_seed(2)
    low_rank = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    matrix = torch.eye(64, dtype=torch.float64) + 0.05 * torch.randn(
        64, 64, generator=generator, dtype=torch.float64
    ) + low_rank @ low_rank.T / 10
    values, _, _ = map_spectrum(lambda x: x @ matrix.T, torch.zeros(64, dtype=torch.float64), k=10)
    torch.testing.assert_close(values, torch.linalg.svdvals(matrix)[:10], rtol=1e-4, atol=0)


def dense_jacobian(model, prompt: str, start: int, stop: int) -> torch.Tensor:
    """``d x_stop / d x_start`` at the last token by plain autograd, hooks written here."""
    hooks = tld.hooks.trajectory_hooks(model, include_final=True)
    tokens = model.to_tokens(prompt)
    state = {}

    def read(activation, hook):  # hook.name may be an alias: store under one key
        state["x"] = activation[0, -1]

    def run(x):
        def write(activation, hook):
            # In place, as teleports write: on TransformerBridge Llama, a returned copy at
            # hook_resid_mid reaches the MLP but not the residual addition after it.
            activation[0, -1] = x
            return activation

        model.run_with_hooks(
            tokens, fwd_hooks=[(hooks[start].name, write), (hooks[stop].name, read)],
            return_type=None,
        )
        return state["x"]

    model.run_with_hooks(tokens, fwd_hooks=[(hooks[start].name, read)], return_type=None)
    x0 = state["x"].detach().clone()
    return torch.autograd.functional.jacobian(run, x0, vectorize=True).double()


@pytest.fixture(scope="module")
def minilm_spectrum(minilm):
    return jacobian_spectrum(minilm, tld.DEFAULT_PROMPT, 4, 7, k=6)


@pytest.fixture(scope="module")
def minilm_dense(minilm):
    return dense_jacobian(minilm, tld.DEFAULT_PROMPT, 4, 7)


def test_minilm_spectrum_matches_the_dense_autograd_jacobian(minilm, minilm_spectrum, minilm_dense):
    spectrum = minilm_spectrum
    dense = minilm_dense
    torch.testing.assert_close(spectrum.singular_values, torch.linalg.svdvals(dense)[:6],
                               rtol=1e-3, atol=0)
    torch.testing.assert_close(dense @ spectrum.right_vectors,
                               spectrum.left_vectors * spectrum.singular_values,
                               rtol=0, atol=2e-3 * float(spectrum.singular_values[0]))


def test_minilm_whole_spectrum_matches_the_dense_jacobian(minilm, minilm_dense):
    """k = d_model forms J from d_model reverse-mode rows: every singular value, to float32
    rounding relative to the largest; two null directions of the post-LayerNorm map sit
    below the floor and stay out of the volume."""
    d_model = int(minilm.cfg.d_model)
    full = jacobian_spectrum(minilm, tld.DEFAULT_PROMPT, 4, 7, k=d_model)
    dense = torch.linalg.svdvals(minilm_dense)
    assert full.complete and len(full.singular_values) == d_model
    assert float((full.singular_values - dense).abs().max()) < 2e-6 * float(dense[0])
    assert full.n_null == 2
    kept = full.singular_values[: d_model - 2]
    assert full.log_volume == pytest.approx(float(kept.log().sum()), rel=1e-12)
    assert full.n_expanding == int((full.singular_values > 1).sum())
    scale = full.stop_median / full.start_median
    assert full.log_volume_robust == pytest.approx(full.log_volume - (d_model - 2) * math.log(scale))
    assert full.n_expanding_robust == int((full.singular_values / scale > 1).sum())


def test_robust_normalisation_ignores_a_massive_unit():
    """One unit 100x the others moves the norm ratio, not the median ratio."""
    from tl_dynamics.stability import JacobianSpectrum

    x_start = torch.ones(64, dtype=torch.float64)
    x_stop = 2 * x_start
    x_stop[0] = 400.0  # a massive unit appears
    values = torch.full((64,), 2.0, dtype=torch.float64)  # a map that doubles every direction
    eye = torch.eye(64, dtype=torch.float64)
    spectrum = JacobianSpectrum(
        "m", "p", 0, 0, 2, "0_pre", "1_pre", values, eye, eye, values.log() / 2,
        float(x_start.norm()), float(x_stop.norm()), values * x_start.norm() / x_stop.norm(),
        (values * x_start.norm() / x_stop.norm()).log() / 2,
        float(x_start.abs().median()), float(x_stop.abs().median()),
    )
    torch.testing.assert_close(spectrum.robust_singular_values, torch.ones(64, dtype=torch.float64))
    assert spectrum.log_volume_robust == pytest.approx(0.0, abs=1e-12)
    assert float(spectrum.normalised_singular_values[0]) < 0.5  # the norm ratio reads a contraction


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_random_kicks_grow_as_the_spectrum_predicts(tiny_models, arch):
    """A causal check of the linearisation: finite kicks written into the stream and
    propagated grow by the rms singular value, and none beyond the top one."""
    model = tiny_models[arch]
    d_model = int(model.cfg.d_model)
    full = jacobian_spectrum(model, "The cat sat on the mat.", 1, 4, k=d_model)
    growth = kick_growth(model, "The cat sat on the mat.", 1, 4, n_kicks=256, seed=0)
    predicted = float(full.singular_values.square().mean().sqrt())
    # The rms of 256 isotropic kicks: sampling error a few % of the prediction.
    assert float(growth.square().mean().sqrt()) == pytest.approx(predicted, rel=0.1)
    assert float(growth.max()) < float(full.singular_values[0]) * 1.01


def test_parameters_keep_requiring_gradients(minilm, minilm_spectrum):
    assert all(param.requires_grad for param in minilm.parameters())


def test_lyapunov_exponents_and_normalisation(minilm, minilm_spectrum):
    spectrum = minilm_spectrum
    assert isinstance(spectrum, JacobianSpectrum)
    assert (spectrum.start_label, spectrum.stop_label, spectrum.steps) == ("2_pre", "3_mid", 3)
    torch.testing.assert_close(spectrum.lyapunov, spectrum.singular_values.log() / 3)
    dyn = tld.collect(minilm, [tld.DEFAULT_PROMPT], progress=False)
    resid = dyn.resid[0].double()
    assert spectrum.start_norm == pytest.approx(float(resid[4].norm()), rel=1e-5)
    assert spectrum.stop_norm == pytest.approx(float(resid[7].norm()), rel=1e-5)
    ratio = float(resid[4].norm() / resid[7].norm())
    torch.testing.assert_close(spectrum.normalised_singular_values,
                               spectrum.singular_values * ratio, rtol=1e-5, atol=0)
    torch.testing.assert_close(spectrum.normalised_lyapunov,
                               (spectrum.singular_values * ratio).log() / 3, rtol=1e-5, atol=0)
    frame = spectrum.to_frame()
    assert list(frame["rank"]) == list(range(6)) and set(frame["start"]) == {"2_pre"}


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_decoder_spectra_match_dense_jacobians(tiny_models, arch):
    model = tiny_models[arch]
    last = 2 * int(model.cfg.n_layers)  # final_post
    spectrum = jacobian_spectrum(model, "The cat sat on the mat.", 1, last, k=5)
    dense = dense_jacobian(model, "The cat sat on the mat.", 1, last)
    torch.testing.assert_close(spectrum.singular_values, torch.linalg.svdvals(dense)[:5],
                               rtol=1e-3, atol=0)
    assert spectrum.stop_label == "final_post"


@pytest.mark.slow
def test_real_decoder_spectra_match_dense_jacobians(real_decoder):
    """SmolLM2 (Llama) and Gemma-3, real weights: a short early span keeps the dense
    reference (d_model reverse-mode passes) affordable."""
    spectrum = jacobian_spectrum(real_decoder, tld.DEFAULT_PROMPT, 2, 5, k=5)
    dense = dense_jacobian(real_decoder, tld.DEFAULT_PROMPT, 2, 5)
    torch.testing.assert_close(spectrum.singular_values, torch.linalg.svdvals(dense)[:5],
                               rtol=1e-3, atol=0)


def test_spectrum_is_seeded(minilm):
    a = jacobian_spectrum(minilm, start=0, stop=2, k=3, n_iter=1, seed=0)
    b = jacobian_spectrum(minilm, start=0, stop=2, k=3, n_iter=1, seed=0)
    torch.testing.assert_close(a.singular_values, b.singular_values)


def test_sweep_over_prompts_and_positions_gives_intervals(tiny_models):
    model = tiny_models["llama"]
    d_model = int(model.cfg.d_model)
    prompts = ["The cat sat on the mat.", "One, two, three, four, five.", "Why is the sky blue today?"]
    sweep = jacobian_sweep(model, prompts, layers=[0, 1], k=d_model, positions=(-1, -2), progress=False)
    assert len(sweep.spectra) == 2 * 3 * 2 and sweep.prompts == tuple(prompts)
    per_spectrum = sweep.spectra_frame()
    assert set(per_spectrum["prompt"]) == {0, 1, 2} and len(per_spectrum) == 12
    frame = sweep.to_frame()
    assert list(frame["n_prompts"]) == [3, 3]
    first = per_spectrum[per_spectrum["layer"] == 0].groupby("prompt")["log_volume"].mean()
    assert frame.loc[0, "log_volume"] == pytest.approx(first.mean())
    assert frame.loc[0, "log_volume_ci_low"] < frame.loc[0, "log_volume"] < frame.loc[0, "log_volume_ci_high"]
    assert frame.loc[0, "n_expanding"] == pytest.approx(
        per_spectrum[per_spectrum["layer"] == 0].groupby("prompt")["n_expanding"].mean().mean()
    )
    with pytest.raises(ValueError, match="positions must be an int"):
        jacobian_sweep(model, prompts, layers=[0], positions=(-40,), progress=False)


def test_sweep_runs_layer_by_layer(tiny_models):
    model = tiny_models["llama"]
    last = int(model.cfg.n_layers) - 1
    sweep = jacobian_sweep(model, layers=[0, last], k=3, progress=False)
    assert isinstance(sweep, JacobianSweep)
    frame = sweep.to_frame()
    assert list(frame["layer"]) == [0, last]
    assert list(frame["stop"]) == ["1_pre", "final_post"]
    assert (frame["steps"] == 2).all()
    to_end = jacobian_sweep(model, layers=[0], to_end=True, k=3, progress=False).to_frame()
    # The span a teleport at the same layer is followed over (Recovery.labels).
    pca = tld.pca_trajectories(tld.collect(model, tld.data.python_docs()[:4], progress=False),
                               n_components=2)
    labels = tld.teleport(model, layer=0, points=tld.pca_grid(pca, n=1), pca=pca).recovery().labels
    assert list(to_end["steps"]) == [len(labels) - 1]
    assert list(to_end["stop"]) == [labels[-1]] == [f"{last}_mid"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": 3, "stop": 3}, "stop must be an int"),
        ({"start": 13, "stop": 14}, "start must be an int"),
        ({"start": 0, "stop": 2, "k": 0}, "k must be an int"),
        ({"start": 0, "stop": 2, "position": 99}, "position must be an int"),
    ],
)
def test_argument_errors(minilm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        jacobian_spectrum(minilm, **kwargs)


def test_training_mode_is_refused(tiny_models):
    model = tiny_models["llama"]
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            jacobian_spectrum(model, start=0, stop=1)
    finally:
        model.eval()


def test_exports():
    assert tld.jacobian_spectrum is jacobian_spectrum and tld.JacobianSpectrum is JacobianSpectrum
    assert tld.jacobian_sweep is jacobian_sweep and tld.JacobianSweep is JacobianSweep


def test_contraction_plot_draws_the_sweep_and_the_teleports(tiny_models):
    model = tiny_models["llama"]
    sweep = jacobian_sweep(model, layers=[0, 1], to_end=True, k=2, progress=False)
    pca = tld.pca_trajectories(tld.collect(model, tld.data.python_docs()[:8], progress=False),
                               n_components=2)
    teleports = tld.teleport_sweep(model, pca, layers=[0, 1], n=2, progress=False)
    figure = tld.plot.jacobian_contraction(sweep, teleports)
    assert len(figure.data) == 6 and figure.layout.title.text
    assert figure.layout.xaxis.title.text and figure.layout.yaxis.title.text
    assert list(figure.data[0].y) == pytest.approx(list(sweep.to_frame()["top_lyapunov"]))
    with pytest.raises(TypeError, match="JacobianSweep"):
        tld.plot.jacobian_contraction(teleports)


def test_jacobian_decoders_script_prints_every_measure_and_the_kick_check(tiny_models, monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "jacobian_decoders.py"
    spec = importlib.util.spec_from_file_location("jacobian_decoders", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "load_model", lambda preset, progress: tiny_models["llama"])
    monkeypatch.setattr(script, "DEFAULT_PROMPTS", script.DEFAULT_PROMPTS[:2])
    script.measure("tiny-llama")
    out = capsys.readouterr().out
    assert "2 prompts, last token" in out
    for name in script.MEASURES:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert "[" in line and "nan" not in line.lower(), line
    assert "kicks: rms growth" in out
