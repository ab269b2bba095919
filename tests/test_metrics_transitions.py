"""Labels, transition kinds, selecting and tabulating per-transition results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_dynamics.metrics import (
    TRANSITION_KINDS,
    default_labels,
    select_transitions,
    transition_frame,
    transition_kinds,
)


def stack_labels(
    n_layers: int, with_mid: bool, with_final: bool, first_layer: int = 0
) -> list[str]:
    """Labels as TransformerLens's accumulated_resid writes them."""
    points = ("pre", "mid") if with_mid else ("pre",)
    labels = [
        f"{layer}_{p}" for layer in range(first_layer, first_layer + n_layers) for p in points
    ]
    return [*labels, "final_post"] if with_final else labels


def test_default_labels_interleave_pre_and_mid():
    assert default_labels(5) == ["0_pre", "0_mid", "1_pre", "1_mid", "2_pre"]
    assert default_labels(1) == ["0_pre"]
    assert default_labels(6) == stack_labels(3, with_mid=True, with_final=False)


def test_default_labels_rejects_bad_counts():
    with pytest.raises(ValueError, match="n_sublayers must be an int >= 1; got 0"):
        default_labels(0)
    with pytest.raises(TypeError, match="n_sublayers must be an int >= 1; got str"):
        default_labels("4")


def test_kinds_interleaved_without_final_post():
    assert transition_kinds(["0_pre", "0_mid", "1_pre", "1_mid"]) == ["within", "cross", "within"]


def test_kinds_interleaved_with_final_post():
    labels = ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    assert transition_kinds(labels) == ["within", "cross", "within", "cross"]


def test_kinds_pre_only_with_and_without_final_post():
    assert transition_kinds(["0_pre", "1_pre", "2_pre"]) == ["layer", "layer"]
    assert transition_kinds(["0_pre", "1_pre", "final_post"]) == ["layer", "layer"]


def test_kinds_accept_any_iterable_of_labels():
    assert transition_kinds(("0_pre", "0_mid")) == ["within"]
    assert transition_kinds(np.array(["0_pre", "1_pre"])) == ["layer"]


def test_kinds_of_a_stack_starting_mid_model():
    assert transition_kinds(["3_mid", "4_pre", "4_mid"]) == ["cross", "within"]
    assert transition_kinds(["7_pre"]) == []


@given(
    n_layers=st.integers(1, 12),
    with_mid=st.booleans(),
    with_final=st.booleans(),
    first_layer=st.integers(0, 5),
)
def test_kind_counts_follow_the_collection(n_layers, with_mid, with_final, first_layer):
    labels = stack_labels(n_layers, with_mid, with_final, first_layer)
    kinds = transition_kinds(labels)
    assert len(kinds) == len(labels) - 1
    if with_mid:
        assert kinds.count("within") == n_layers
        assert kinds.count("cross") == n_layers - 1 + with_final
        assert kinds[::2] == ["within"] * n_layers
    else:
        assert kinds == ["layer"] * (n_layers - 1 + with_final)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["0_pre", "0_post"], r"labels\[1\] = '0_post' is not a sublayer label"),
        (["0_pre", 3], r"labels\[1\] = 3 is not a sublayer label"),
        (
            ["0_mid", "0_pre"],
            r"labels\[0\] -> labels\[1\] = '0_mid' -> '0_pre' is not a transition",
        ),
        (["0_pre", "2_pre"], r"'0_pre' -> '2_pre' is not a transition between successive"),
        (["0_pre", "0_pre"], r"'0_pre' -> '0_pre' is not a transition"),
        (["0_pre", "final_post", "1_pre"], r"'final_post' -> '1_pre' is not a transition"),
        (["0_pre", "0_mid", "1_mid"], r"'0_mid' -> '1_mid' is not a transition"),
    ],
)
def test_kinds_reject_unknown_or_ill_ordered_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        transition_kinds(labels)


def test_kinds_reject_a_single_string():
    with pytest.raises(
        TypeError, match="labels must be a sequence of sublayer labels; got str"
    ):
        transition_kinds("0_pre")
    with pytest.raises(TypeError, match="sequence of sublayer labels; got int"):
        transition_kinds(3)


def test_select_transitions_along_last_and_first_dim():
    labels = default_labels(6)  # within, cross, within, cross, within
    values = torch.arange(10.0).reshape(2, 5)
    assert torch.equal(select_transitions(values, labels, "within"), values[:, [0, 2, 4]])
    assert torch.equal(select_transitions(values, labels, "cross"), values[:, [1, 3]])
    assert select_transitions(values, labels, "layer").shape == (2, 0)
    per_unit = torch.arange(15.0).reshape(5, 3)
    assert torch.equal(select_transitions(per_unit, labels, "cross", dim=0), per_unit[[1, 3]])


@given(n_layers=st.integers(1, 8), with_mid=st.booleans(), with_final=st.booleans())
@settings(max_examples=30)
def test_selections_partition_the_transitions(n_layers, with_mid, with_final):
    labels = stack_labels(n_layers, with_mid, with_final)
    values = torch.randn(3, len(labels) - 1)
    parts = [select_transitions(values, labels, kind) for kind in TRANSITION_KINDS]
    assert sum(p.shape[1] for p in parts) == values.shape[1]
    assert torch.equal(torch.cat(parts, dim=1).sort(dim=1).values, values.sort(dim=1).values)


def test_select_transitions_errors():
    labels = default_labels(4)
    with pytest.raises(
        ValueError, match=r"kind must be one of \['within', 'cross', 'layer'\]; got 'mlp'"
    ):
        select_transitions(torch.zeros(3), labels, "mlp")
    with pytest.raises(
        ValueError, match=r"len\(labels\) - 1 = 3 transitions along dim -1; got shape \(4,\)"
    ):
        select_transitions(torch.zeros(4), labels, "within")
    with pytest.raises(ValueError, match="dim must index one of the 1 dims of values"):
        select_transitions(torch.zeros(3), labels, "within", dim=1)
    with pytest.raises(TypeError, match=r"values must be a torch\.Tensor; got list"):
        select_transitions([0.0, 1.0, 2.0], labels, "within")


def test_frame_of_a_transition_vector():
    labels = ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    frame = transition_frame(torch.tensor([1.0, 2.0, 3.0, 4.0]), labels, "velocity")
    assert list(frame.columns) == ["transition", "source", "target", "kind", "depth", "velocity"]
    assert frame["transition"].tolist() == [0, 1, 2, 3]
    assert frame["source"].tolist() == labels[:-1]
    assert frame["target"].tolist() == labels[1:]
    assert frame["kind"].tolist() == ["within", "cross", "within", "cross"]
    assert frame["depth"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert frame["velocity"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_frame_of_batch_by_transition():
    labels = default_labels(4)
    values = torch.arange(6.0).reshape(2, 3)
    frame = transition_frame(values, labels, "cos", dims=("sample", "transition"))
    assert list(frame.columns) == [
        "transition",
        "source",
        "target",
        "kind",
        "depth",
        "sample",
        "cos",
    ]
    assert len(frame) == 6
    row = frame[(frame["sample"] == 1) & (frame["transition"] == 2)].iloc[0]
    assert (row["cos"], row["source"], row["target"], row["kind"]) == (
        5.0,
        "1_pre",
        "1_mid",
        "within",
    )


def test_frame_of_transition_by_unit_in_bfloat16():
    labels = ["0_pre", "1_pre", "2_pre"]
    values = torch.arange(8.0).reshape(2, 4).to(torch.bfloat16)
    frame = transition_frame(values, labels, "r", dims=("transition", "unit"))
    assert len(frame) == 8
    assert set(frame["kind"]) == {"layer"}
    assert frame.loc[(frame["transition"] == 1) & (frame["unit"] == 3), "r"].item() == 7.0


def test_frame_infers_dims_of_metric_outputs():
    labels = default_labels(4)
    per_sample = transition_frame(torch.zeros(5, 3), labels, "velocity")
    assert "sample" in per_sample.columns and len(per_sample) == 15
    per_unit = transition_frame(torch.zeros(3, 7), labels, "r")
    assert "unit" in per_unit.columns and len(per_unit) == 21


def test_frame_errors():
    labels = default_labels(4)
    values = torch.zeros(2, 3)
    with pytest.raises(
        ValueError,
        match=r"dims must name each of the 2 dims of values .* got \('transition',\)",
    ):
        transition_frame(values, labels, "v", dims=("transition",))
    with pytest.raises(ValueError, match="cannot tell which axis"):
        transition_frame(torch.zeros(3, 3), labels, "v")  # [sample, transition] or [transition, unit]?
    with pytest.raises(ValueError, match="contain 'transition' exactly once"):
        transition_frame(values, labels, "v", dims=("sample", "unit"))
    with pytest.raises(ValueError, match="must not reuse the columns"):
        transition_frame(values, labels, "kind", dims=("sample", "transition"))
    with pytest.raises(ValueError, match="dims and value_name must be distinct"):
        transition_frame(values, labels, "sample", dims=("sample", "transition"))
    with pytest.raises(ValueError, match=r"len\(labels\) - 1 = 3 transitions along dim 0"):
        transition_frame(values, labels, "v", dims=("transition", "unit"))
    with pytest.raises(TypeError, match=r"values must be a torch\.Tensor; got tuple"):
        transition_frame((1.0, 2.0, 3.0), labels, "v")
