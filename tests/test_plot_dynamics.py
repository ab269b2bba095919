"""Figures 1-2: every panel is a plotly Figure with labelled axes, built from real data."""

from __future__ import annotations

import dataclasses

import plotly.graph_objects as go
import pytest
import torch

import tl_dynamics as tld


@pytest.fixture(scope="module")
def dyn(minilm):
    return tld.collect(minilm, tld.data.python_docs()[:24], progress=False)


@pytest.mark.parametrize("panel", tld.plot.dynamics.__all__)
def test_every_panel_is_a_labelled_figure(dyn, panel):
    figure = getattr(tld.plot, panel)(dyn)
    assert isinstance(figure, go.Figure) and figure.data
    assert figure.layout.title.text
    layout = figure.to_plotly_json()["layout"]
    x_titles = [v["title"]["text"] for k, v in layout.items() if k.startswith("xaxis") and "title" in v]
    y_titles = [v["title"]["text"] for k, v in layout.items() if k.startswith("yaxis") and "title" in v]
    assert x_titles and all(x_titles) and y_titles and all(y_titles)


def test_per_transition_panels_split_within_and_cross(dyn):
    figure = tld.plot.velocity(dyn)
    names = [trace.name for trace in figure.data]
    assert len(names) == 2 and "within" in names[0] and "cross" in names[1]
    n_points = sum(len(trace.x) for trace in figure.data)
    assert n_points == len(dyn.labels) - 1
    means = tld.metrics.velocity(dyn.resid).mean(0)
    within = tld.metrics.select_transitions(means, dyn.labels, "within")
    assert list(figure.data[0].y) == pytest.approx(within.double().tolist(), rel=1e-6)


def test_precomputed_values_are_used(dyn):
    fake = tld.metrics.unit_correlation(dyn.resid) * 0 + 7.0
    figure = tld.plot.mutual_information(dyn, values=fake)
    assert set(v for row in figure.data[0].z for v in row) == {7.0}


def test_phase_portrait_units_are_checked(dyn):
    assert len(tld.plot.phase_portrait(dyn, units=[0, 5]).data) == 2
    with pytest.raises(ValueError, match="units must be"):
        tld.plot.phase_portrait(dyn, units=[10_000])


def test_plots_refuse_a_tensor(dyn):
    with pytest.raises(TypeError, match="dyn must be a DynamicsCache"):
        tld.plot.velocity(dyn.resid)


def test_mean_activation_colours_ignore_a_massive_unit_and_name_it(dyn):
    resid = dyn.resid.clone()
    resid[:, :, 3] += 500.0  # one "massive activation" unit, far beyond the rest
    planted = dataclasses.replace(dyn, resid=resid)
    figure = tld.plot.mean_activation(planted)
    heatmap = figure.data[0]
    means = tld.metrics.mean_activation(resid)
    assert heatmap.zmax == -heatmap.zmin < 50.0 < means[:, 3].abs().max()
    caption = figure.layout.annotations[0].text
    beyond = int((means.abs().amax(0) > heatmap.zmax).sum())  # MiniLM has large units of its own
    assert caption.split("; ")[1].startswith(f"{beyond} units clipped: unit 3 (")  # largest first
    full = tld.plot.mean_activation(planted, percentile=100)
    assert full.data[0].zmax == pytest.approx(float(means.abs().max()), rel=1e-6)
    assert "no unit beyond it" in full.layout.annotations[0].text


def test_mean_activation_refuses_a_bad_percentile(dyn):
    with pytest.raises(ValueError, match="percentile must be a number in"):
        tld.plot.mean_activation(dyn, percentile=40)


def test_curves_spanning_decades_get_a_log_axis(dyn):
    assert tld.plot.velocity(dyn).layout.yaxis.type == "linear"  # MiniLM: within one decade
    resid = dyn.resid * torch.logspace(0, 4, dyn.resid.shape[1]).view(1, -1, 1)
    grown = dataclasses.replace(dyn, resid=resid)
    assert tld.plot.velocity(grown).layout.yaxis.type == "log"
    assert tld.plot.cosine_similarity(grown).layout.yaxis.type == "linear"  # bounded, not positive


def test_log_facets_puts_only_facets_spanning_decades_on_a_log_axis():
    import pandas as pd
    import plotly.express as px

    frame = pd.DataFrame({"depth": [0, 1, 2] * 2, "value": [1.0, 30.0, 1000.0, 0.5, 0.6, 0.7],
                          "quantity": ["norm"] * 3 + ["cosine"] * 3})
    figure = px.line(frame, x="depth", y="value", facet_col="quantity")
    tld.plot.dynamics.log_facets(figure)
    assert figure.layout.yaxis.type == "log" and figure.layout.yaxis2.type != "log"
