"""Figures 3 and 4: every function returns a Figure with the right traces, panels and axes."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

import tl_dynamics as tld
from tl_dynamics.embed import CompressingAutoencoder, pca_trajectories
from tl_dynamics.interventions import pca_grid, teleport, teleport_sweep
from tl_dynamics.plot import trajectories as plots


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def llama_dyn(tiny_models, texts):
    return tld.collect(tiny_models["llama"], texts, progress=False)


@pytest.fixture(scope="module")
def llama_pca(llama_dyn):
    return pca_trajectories(llama_dyn, n_components=10)


@pytest.fixture(scope="module")
def cae(llama_dyn):
    return CompressingAutoencoder(n_layers=3, epochs=1, val_fraction=0.25, progress=False).fit(
        llama_dyn
    )


@pytest.fixture(scope="module")
def sweep(tiny_models, llama_pca):
    return teleport_sweep(tiny_models["llama"], llama_pca, n=3, progress=False)


def titles(figure: go.Figure) -> tuple[str, str]:
    return figure.layout.xaxis.title.text, figure.layout.yaxis.title.text


def test_cae_panels(cae):
    trajectory = plots.cae_trajectory(cae)
    assert isinstance(trajectory, go.Figure) and len(trajectory.data) == 1
    assert len(trajectory.data[0].x) == 8  # 4 layers x (pre, mid)
    assert titles(trajectory) == (
        "bottleneck z1 (arbitrary units)",
        "bottleneck z2 (arbitrary units)",
    )
    steps = plots.cae_step_distance(cae)
    assert [trace.name for trace in steps.data] == [
        "within layer (pre → mid)",
        "cross layer (mid → next pre)",
    ]
    assert sum(len(trace.x) for trace in steps.data) == 7
    assert "bottleneck units" in titles(steps)[1]
    explained = plots.cae_explained_variance(cae.held_out_)
    assert [len(trace.y) for trace in explained.data] == [8, 8]
    assert [trace.name for trace in explained.data] == [
        "around each sublayer's mean",
        "around the mean of all vectors",
    ]
    assert titles(explained) == ("sublayer (depth)", "explained variance (fraction, 1 = perfect)")


def test_step_distance_of_bare_tensors_has_one_trace(cae, llama_dyn):
    figure = plots.cae_step_distance(cae.trajectories(llama_dyn.resid))
    assert len(figure.data) == 1


def test_pca_panels(llama_pca):
    paths = plots.pca_plane(llama_pca, samples=3)
    assert len(paths.data) == 4 and paths.data[-1].name == "mean"
    assert titles(paths) == ("PC1 (residual-stream units)", "PC2 (residual-stream units)")
    cumulative = plots.pca_cumulative_variance(llama_pca)
    assert len(cumulative.data) == 1 and list(cumulative.data[0].x) == list(range(1, 11))
    assert titles(cumulative) == (
        "number of principal components k",
        "cumulative explained variance (fraction)",
    )
    per_sublayer = plots.pca_variance_per_sublayer(llama_pca)
    assert [len(trace.y) for trace in per_sublayer.data] == [8, 8]
    assert "10 components" in per_sublayer.layout.title.text


def test_teleport_quiver_has_one_panel_per_layer(sweep):
    figure = plots.teleport_quiver(sweep)
    assert sweep.layers == [0, 1, 2, 3]
    assert len(figure.data) == 3 * 4  # arrows, injected points, control per panel
    assert [a.text for a in figure.layout.annotations] == [f"layer {i} ({i}_pre)" for i in range(4)]
    assert {figure.layout[f"xaxis{i}"].title.text for i in ("", 2, 3, 4)} == {
        "PC1 (residual-stream units)"
    }
    assert {figure.layout[f"yaxis{i}"].title.text for i in ("", 2, 3, 4)} == {
        "PC2 (residual-stream units)"
    }
    control = figure.data[2]
    assert control.name == "control" and len(control.x) == 8
    assert len(figure.data[1].x) == 9  # the 3 x 3 grid


def test_quiver_arrows_follow_at_most_the_requested_sublayers(sweep):
    one_step = plots.teleport_quiver(sweep.results[0], steps=1)
    two_steps = plots.teleport_quiver(sweep.results[0], steps=2)
    assert len(one_step.data) == 3
    assert len(two_steps.data[0].x) == 2 * len(one_step.data[0].x)  # 9 runs x arrows per step


def test_quiver_lines_match_plotlys_quiver():
    from plotly.figure_factory import create_quiver

    generator = torch.Generator().manual_seed(0)
    starts, moves = torch.randn(50, 2, generator=generator), torch.randn(50, 2, generator=generator)
    x, y = plots.quiver_lines(starts, moves)
    theirs = create_quiver(
        *starts.T.double().numpy(), *moves.T.double().numpy(), scale=1, arrow_scale=plots.ARROW_SCALE
    ).data[0]
    for mine, reference in ((x, theirs.x), (y, theirs.y)):
        assert [value is None for value in mine] == [value is None for value in reference]
        numbers = [(a, b) for a, b in zip(mine, reference) if a is not None]
        assert torch.allclose(*torch.tensor(numbers).T, atol=1e-5)


def test_recovery_figure(sweep):
    figure = plots.teleport_recovery(sweep)
    assert [trace.name for trace in figure.data] == [f"layer {i}" for i in range(4)]
    assert figure.data[0].y[0] == pytest.approx(1.0)
    assert titles(figure)[0] == "sublayers after injection"


def test_plots_refuse_what_they_cannot_draw(tiny_models, llama_dyn, llama_pca):
    model = tiny_models["llama"]
    bare = teleport(model, layer=1, points=pca_grid(llama_pca, n=2))
    with pytest.raises(ValueError, match="pca is needed"):
        plots.teleport_quiver(bare)
    assert len(plots.teleport_quiver(bare, pca=llama_pca).data) == 3
    with pytest.raises(TypeError, match="results must be"):
        plots.teleport_quiver([])
    with pytest.raises(ValueError, match="steps"):
        plots.teleport_quiver(bare, pca=llama_pca, steps=0)
    no_held_out = CompressingAutoencoder(n_layers=2, epochs=1, val_fraction=0, progress=False).fit(
        llama_dyn
    )
    with pytest.raises(ValueError, match="val_fraction > 0"):
        plots.cae_trajectory(no_held_out)
    with pytest.raises(TypeError, match="pca must be"):
        plots.pca_plane(torch.zeros(3))
