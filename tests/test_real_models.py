"""The trained Llama- and Gemma-family decoders that load offline from packaged GGUF files.

Checked against independent references: TransformerLens's own ``accumulated_resid`` on
each text alone, and the logits of the model that transformers' GGUF loader builds from the
same file (not from our converted copy).
"""

from __future__ import annotations

import pytest
import torch

import tl_dynamics as tld
from tl_dynamics import presets
from tl_dynamics._batching import tokenize

pytestmark = pytest.mark.slow

RELATIVE_TOLERANCE = 1e-5  # float32 work in a different batch shape; norms reach ~10^3
LOGIT_TOLERANCE = 1e-3  # same weights, same float32 arithmetic, different code paths
EXPECTED_SHAPES = {"smollm2-135m": (30, 576), "gemma-3-270m": (18, 640)}  # the model cards


def preset_of(model) -> str:
    return model.tl_dynamics_provenance["preset"]


def test_preset_architecture_and_provenance(real_decoder):
    name = preset_of(real_decoder)
    preset = presets.PRESETS[name]
    assert (real_decoder.cfg.n_layers, real_decoder.cfg.d_model) == EXPECTED_SHAPES[name]
    assert real_decoder.cfg.model_name == preset.model_name
    provenance = real_decoder.tl_dynamics_provenance
    assert provenance["sha256"] == presets.sha256_of(presets.gguf_parts(name))
    assert provenance["quantisation"].startswith(preset.quantisation)
    dyn = tld.collect(real_decoder, ["The capital of France is Paris."], progress=False)
    assert dyn.metadata.provenance == provenance


def test_padded_batches_equal_accumulated_resid_per_text(real_decoder, texts):
    dyn = tld.collect(real_decoder, texts[:6], batch_size=3, progress=False)
    assert len({len(t) for t in tokenize(real_decoder, texts[:6])}) > 1, "texts must differ"
    for i, text in enumerate(texts[:6]):
        _, cache = real_decoder.run_with_cache(real_decoder.to_tokens(text))
        expected, labels = cache.accumulated_resid(incl_mid=True, pos_slice=-1, return_labels=True)
        expected = expected[:-1, 0].float()
        assert dyn.labels == tuple(labels[:-1])
        scale = expected.abs().max()
        assert (dyn.resid[i] - expected).abs().max() <= RELATIVE_TOLERANCE * scale


def test_logits_equal_transformers_gguf_model(real_decoder, tmp_path):
    reference, tokenizer = presets.load_gguf(preset_of(real_decoder), tmp_path)
    prompt = "The capital of France is"
    ids = real_decoder.to_tokens(prompt)  # BOS first, as the paper tokenizes (section 2.1)
    assert ids[0, 1:].tolist() == tokenizer(prompt, add_special_tokens=False).input_ids
    with torch.no_grad():
        expected = reference(ids).logits[0, -1]
    got = real_decoder(ids)[0, -1]
    assert (got - expected).abs().max() <= LOGIT_TOLERANCE * expected.abs().max()


def test_smollm2_knows_the_capital_of_france(smollm2):
    logits = smollm2(smollm2.to_tokens("The capital of France is"))[0, -1]
    assert smollm2.to_string(logits.argmax()) == " Paris"


def test_null_teleport_reproduces_the_control(real_decoder):
    layer = real_decoder.cfg.n_layers // 2
    probe = tld.teleport(real_decoder, layer=layer, points=torch.zeros(1, real_decoder.cfg.d_model))
    null = probe.control[probe.injection].unsqueeze(0)
    result = tld.teleport(real_decoder, layer=layer, points=null)
    assert (result.trajectories[0] - result.control).abs().max() == 0.0
    assert (result.logits[0] - result.control_logits).abs().max() == 0.0


def test_report_header_says_the_weights_are_quantised(smollm2):
    from tl_dynamics.report.html import provenance_note

    note = provenance_note(smollm2.tl_dynamics_provenance)
    assert "Q4_1 GGUF, dequantised to float32" in note and "4-bit quantisation noise" in note
    assert "4-bit" not in provenance_note(tld.presets.PRESETS["minilm"].provenance())
    assert provenance_note(None) == ""
