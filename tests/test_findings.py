"""The paper's findings as tests on numbers: known verdicts on constructed data."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import tl_dynamics as tld
from tl_dynamics import findings
from tl_dynamics.metrics import default_labels


def cache_of(resid):
    n = resid.shape[0]
    return tld.DynamicsCache(resid, default_labels(resid.shape[1]), torch.arange(n), torch.zeros(n, dtype=torch.long))


def growing_stream(n=64, sublayers=8, d=16, seed=0):
    """Units keep their identity and sign while magnitudes grow with depth."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, d, generator=generator) + 3.0
    scale = torch.arange(1, sublayers + 1, dtype=torch.float32)[None, :, None]
    noise = 0.05 * torch.randn(n, sublayers, d, generator=generator) / scale
    return cache_of(base * scale + noise)


def test_growth_sign_and_correlation_hold_on_a_growing_stream():
    dyn = growing_stream()
    by_key = {f.key: f for f in findings.dynamics_findings(dyn)}
    assert by_key["activation_growth"].holds is True
    assert by_key["sign_persistence"].holds is True
    assert by_key["high_correlation"].holds is True
    assert "holds" in by_key["high_correlation"].observed


def test_shrinking_stream_fails_growth():
    dyn = growing_stream()
    shrinking = cache_of(dyn.resid.flip(1))
    assert findings.activation_growth(shrinking).holds is False


def test_constant_trend_is_undecided_not_no():
    flat = findings._trend("k", "claim", torch.ones(6), "value", rising=True)
    assert flat.holds is None and flat.verdict == "undecided" and "constant" in flat.observed


def test_within_vs_cross_counts_layers():
    kinds = ["within", "cross", "within", "cross", "within"]
    values = torch.tensor([0.9, 0.5, 0.8, 0.7, 0.95])
    finding = findings._within_vs_cross("k", "claim", values, kinds, "cosine", within_above=True)
    assert finding.holds is True and "2/2 layers" in finding.observed
    reversed_ = findings._within_vs_cross("k", "claim", values, kinds, "cosine", within_above=False)
    assert reversed_.holds is False and "0/2 layers" in reversed_.observed


class FakeSweep:
    def __init__(self, contraction, steps):
        self.frame = pd.DataFrame(
            {"layer": range(len(steps)), "contraction": contraction, "steps": steps}
        )

    def to_frame(self):
        return self.frame


def test_mid_layers_attract_compares_per_sublayer_rates():
    # the same final contraction everywhere, reached in fewer steps by the middle layers:
    # they pull back faster per sublayer (0.87, 0.79 against 0.93 and 0.90)
    faster_middle = findings.mid_layers_attract(FakeSweep([0.5, 0.5, 0.5, 0.9], [9, 5, 3, 1]))
    assert faster_middle.holds is True
    assert faster_middle.numbers["contraction_per_sublayer"][1] == pytest.approx(0.5 ** (1 / 5))
    slower_middle = findings.mid_layers_attract(FakeSweep([0.2, 0.9, 0.9, 0.5], [9, 5, 3, 1]))
    assert slower_middle.holds is False


def test_findings_on_minilm_are_complete_and_json_ready(minilm):
    dyn = tld.collect(minilm, tld.data.python_docs()[:48], progress=False)
    found = findings.dynamics_findings(dyn)
    assert len(found) == 11 and len({f.key for f in found}) == 11
    for finding in found:
        record = finding.to_json()
        assert record["verdict"] in ("yes", "no", "undecided") and finding.observed
        assert any(ch.isdigit() for ch in finding.observed)
