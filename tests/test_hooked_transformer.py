"""TransformerLens 3.x's ``HookedTransformer`` on real Gemma-3-270M weights, beside the Bridge.

TransformerLens 3.9 has both entry points; 4.0 removed ``HookedTransformer``, so this
module is skipped there (CI runs it in its second environment, transformer-lens 3.9).
The ``HookedTransformer`` is built the way a TL 3.x user builds one offline: transformers
loads the preset's dequantised weights, and ``from_pretrained_no_processing`` converts
them; the ``TransformerBridge`` boots the same folder. The README's TL 3.x example runs
here too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

try:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
except ImportError:  # TransformerLens 4.0 removed it; only the Bridge is left
    pytest.skip(
        "this transformer-lens has no HookedTransformer (4.x); CI runs this file with 3.9",
        allow_module_level=True,
    )

import tl_dynamics as tld
from tl_dynamics._batching import pad_token_id, pad_tokens, tokenize
from tl_dynamics.models import load_model
from tl_dynamics.presets import preset_folder

pytestmark = [
    pytest.mark.slow,  # real Gemma-3-270M: seconds per test
    pytest.mark.usefixtures("one_thread"),
    # HookedTransformer itself is what this module tests, deprecated in 3.x or not
    pytest.mark.filterwarnings("ignore:HookedTransformer.*deprecated:DeprecationWarning"),
]

GEMMA_HUB_NAME = "google/gemma-3-270m"  # TransformerLens's name: picks its Gemma-3 config
GEMMA_LAYERS, GEMMA_WIDTH = 18, 640  # Gemma-3-270M's config (n_layers, d_model)

N_TEXTS = 4  # offline corpus texts: a padded batch of different lengths, still fast
EXACT = 1e-6  # max |difference| / max |reference|: the same model batched vs one text alone
SAME_WEIGHTS = 2e-6  # the same between HookedTransformer and Bridge (float32 rounding)
LOGITS = 1e-5  # the same for logits, HookedTransformer vs transformers or the Bridge
SHIFT = 100.0  # a kick in residual-stream units (Gemma's last-token states are ~1e4 large)
README = Path(__file__).resolve().parent.parent / "README.md"
README_FENCE = "```python tl-3.x\n"  # the README's HookedTransformer example (needs TL 3.x)
TOY = 1e-5  # relative float32 agreement on a 2-layer random model, weights processed or not


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |value - reference| / max |reference|``, a scale-free float32 comparison."""
    return float((value - reference).abs().max() / reference.abs().max())


def accumulated_resid(model, text: str) -> tuple[torch.Tensor, list[str]]:
    """TransformerLens's own ``accumulated_resid`` at the last token of ``text`` run alone."""
    _, cache = model.run_with_cache(model.to_tokens(text))
    stack, labels = cache.accumulated_resid(incl_mid=True, pos_slice=-1, return_labels=True)
    return stack[:-1, 0].float(), labels[:-1]


@pytest.fixture(scope="session")
def gemma_folder():
    """The Gemma-3-270M preset's plain safetensors folder (converted once, then cached)."""
    return preset_folder("gemma-3-270m")


@pytest.fixture(scope="session")
def gemma_hf(gemma_folder):
    """The transformers model (float32), the reference for logits."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(gemma_folder, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def gemma_hooked(gemma_hf, gemma_folder):
    """``HookedTransformer.from_pretrained_no_processing`` on the transformers model."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_folder)
    model = HookedTransformer.from_pretrained_no_processing(
        GEMMA_HUB_NAME, hf_model=gemma_hf, tokenizer=tokenizer, device="cpu", dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="session")
def gemma_bridge():
    """The ``TransformerBridge`` on the same weights, booted from the same folder."""
    return load_model("gemma-3-270m")


@pytest.fixture(scope="session")
def gemma_texts():
    return tld.data.python_docs()[:N_TEXTS]


def test_logits_equal_transformers(gemma_hooked, gemma_hf, gemma_texts):
    tokens = gemma_hooked.to_tokens(gemma_texts[0])
    with torch.inference_mode():
        hooked, reference = gemma_hooked(tokens), gemma_hf(tokens).logits
    assert relative_error(hooked, reference) <= LOGITS


def test_collect_equals_accumulated_resid_of_each_text_alone(gemma_hooked, gemma_texts):
    dyn = tld.collect(gemma_hooked, gemma_texts, batch_size=3, progress=False)  # padded
    assert len({len(t) for t in tokenize(gemma_hooked, gemma_texts)}) > 1
    assert dyn.resid.shape == (N_TEXTS, 2 * GEMMA_LAYERS, GEMMA_WIDTH)
    assert dyn.metadata.model_name == gemma_hooked.cfg.model_name
    for i, text in enumerate(gemma_texts):
        expected, labels = accumulated_resid(gemma_hooked, text)
        assert dyn.labels == tuple(labels)
        assert relative_error(dyn.resid[i], expected) <= EXACT


def test_model_and_cache_accessors_agree_with_collect(gemma_hooked, gemma_texts):
    collected = tld.collect(gemma_hooked, gemma_texts, progress=False)
    torch.testing.assert_close(
        gemma_hooked.dynamics(gemma_texts, progress=False).resid, collected.resid, rtol=0, atol=0
    )
    token_lists = tokenize(gemma_hooked, gemma_texts)
    tokens, mask = pad_tokens(token_lists, pad_token_id(gemma_hooked))
    _, cache = gemma_hooked.run_with_cache(tokens, attention_mask=mask)
    from_cache = cache.dynamics(attention_mask=mask)
    assert from_cache.labels == collected.labels
    assert from_cache.position.tolist() == [len(t) - 1 for t in token_lists]
    assert relative_error(from_cache.resid, collected.resid) <= EXACT


@pytest.mark.parametrize("site", ["pre", "mid"])
def test_null_teleport_reproduces_accumulated_resid(gemma_hooked, gemma_texts, site):
    layer = int(gemma_hooked.cfg.n_layers) // 2
    injection = 2 * layer + (site == "mid")
    for text in gemma_texts[:2]:
        expected, labels = accumulated_resid(gemma_hooked, text)
        kick = torch.zeros(GEMMA_WIDTH)
        kick[0] = SHIFT
        points = torch.stack([expected[injection], expected[injection] + kick])
        result = tld.teleport(gemma_hooked, text, layer=layer, points=points, site=site)
        assert result.labels == tuple(labels)
        assert relative_error(result.control, expected) <= EXACT
        assert relative_error(result.trajectories[0], expected) <= EXACT
        # the kick leaves earlier sublayers alone and moves every later one
        kicked = result.trajectories[1]
        assert relative_error(kicked[:injection], expected[:injection]) <= EXACT
        assert ((kicked[injection + 1 :] - expected[injection + 1 :]).norm(dim=-1) > 1).all()


def test_hooked_transformer_equals_the_bridge_on_the_same_weights(
    gemma_hooked, gemma_bridge, gemma_texts
):
    hooked = tld.collect(gemma_hooked, gemma_texts, batch_size=3, progress=False)
    bridge = tld.collect(gemma_bridge, gemma_texts, batch_size=3, progress=False)
    assert hooked.labels == bridge.labels
    for i in range(N_TEXTS):
        assert relative_error(hooked.resid[i], bridge.resid[i]) <= SAME_WEIGHTS
    layer, text, models = 3, gemma_texts[1], (gemma_hooked, gemma_bridge)
    points = hooked.resid[:2, 2 * layer]  # two texts' states, written into a third
    runs = [tld.teleport(model, text, layer=layer, points=points) for model in models]
    assert relative_error(runs[0].trajectories, runs[1].trajectories) <= SAME_WEIGHTS
    assert relative_error(runs[0].logits, runs[1].logits) <= LOGITS


def test_steering_and_teleport_hooks_compose_with_hooked_transformer(
    gemma_hooked, gemma_bridge, gemma_texts
):
    """The public hooks in collect(fwd_hooks=...), model.hooks(...) and run_with_hooks."""
    layer = 5
    sublayer = 2 * layer  # blocks.5.hook_resid_pre
    name = tld.sublayer_hook_name(gemma_hooked, sublayer)
    assert name == f"blocks.{layer}.hook_resid_pre"
    vector = torch.zeros(GEMMA_WIDTH)
    vector[1] = SHIFT

    def steer(activation, hook):
        return activation + vector.to(activation.dtype)

    plain = tld.collect(gemma_hooked, gemma_texts, batch_size=3, progress=False)
    steered = {
        model: tld.collect(model, gemma_texts, batch_size=3, progress=False,
                           fwd_hooks=[(name, steer)])  # fmt: skip
        for model in (gemma_hooked, gemma_bridge)
    }
    hooked = steered[gemma_hooked]
    assert torch.equal(hooked.resid[:, :sublayer], plain.resid[:, :sublayer])  # exactly
    assert ((hooked.resid[:, sublayer:] - plain.resid[:, sublayer:]).norm(dim=-1) > 1).all()
    assert relative_error(hooked.resid, steered[gemma_bridge].resid) <= SAME_WEIGHTS
    with gemma_hooked.hooks(fwd_hooks=[(name, steer)]):
        in_context = tld.collect(gemma_hooked, gemma_texts, batch_size=3, progress=False)
        expected, _ = accumulated_resid(gemma_hooked, gemma_texts[0])
    assert torch.equal(in_context.resid, hooked.resid)
    assert relative_error(hooked.resid[0], expected) <= EXACT
    # teleport_hook in the user's own run_with_hooks gives tld.teleport's logits
    text, mid = gemma_texts[1], f"blocks.{layer}.hook_resid_mid"
    points = plain.resid[:2, sublayer + 1]
    result = tld.teleport(gemma_hooked, text, layer=layer, site="mid", points=points)
    tokens = gemma_hooked.to_tokens(text).expand(2, -1)
    with torch.inference_mode():
        logits = gemma_hooked.run_with_hooks(
            tokens, fwd_hooks=[(mid, tld.teleport_hook(points, position=-1))]
        )[:, -1]
    assert relative_error(logits, result.logits) <= LOGITS


def test_a_write_at_resid_mid_carries_on_in_the_residual_stream(gemma_hooked, gemma_texts):
    """resid_post = (written) resid_mid + mlp_out, as on the Bridge (test_interventions)."""
    tokens = gemma_hooked.to_tokens(gemma_texts[0])
    state = torch.zeros(GEMMA_WIDTH)
    with gemma_hooked.hooks(fwd_hooks=[("blocks.3.hook_resid_mid", tld.teleport_hook(state))]):
        _, cache = gemma_hooked.run_with_cache(tokens)
    post = cache["blocks.3.hook_resid_post"][0, -1]
    torch.testing.assert_close(post, state + cache["blocks.3.hook_mlp_out"][0, -1])


@pytest.mark.parametrize("normalization", ["LN", "RMS"])
def test_what_from_pretrained_processing_does_to_the_stream(normalization):
    """The README's claim: processing centres a LayerNorm model's stream, not an RMSNorm one's.

    ``from_pretrained`` (unlike ``from_pretrained_no_processing``) folds the norms' weights
    into the next layer and centres the weights that write to the residual stream; the
    latter only applies to LayerNorm models, whose norms ignore the stream's mean.
    """
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=16, d_vocab=50,
        act_fn="gelu", normalization_type=normalization, seed=0,
    )  # fmt: skip
    raw = HookedTransformer(cfg).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move every weight off its initial value (norm weights of 1...)
        for parameter in raw.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    processed = HookedTransformer(cfg).eval()
    processed.load_state_dict(raw.state_dict())
    processed.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    tokens = torch.randint(0, cfg.d_vocab, (3, 10), generator=generator)
    mask = torch.ones_like(tokens)
    raw_logits, raw_cache = raw.run_with_cache(tokens)
    logits, cache = processed.run_with_cache(tokens)
    before = raw_cache.dynamics(attention_mask=mask).resid
    after = cache.dynamics(attention_mask=mask).resid
    torch.testing.assert_close(logits.log_softmax(-1), raw_logits.log_softmax(-1))
    if normalization == "LN":
        assert relative_error(after, before) > 100 * TOY  # the stream changes...
        centred = before - before.mean(-1, keepdim=True)  # ...to its mean-free part
        assert relative_error(after, centred) <= TOY
    else:
        assert relative_error(after, before) <= TOY


def test_readme_hooked_transformer_example_runs():
    blocks = re.findall(re.escape(README_FENCE) + r"(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) == 1, "README.md must show one HookedTransformer example"
    namespace = {"__name__": "__readme__"}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["model"].cfg.model_name == "gemma-3-270m"
    assert relative_error(namespace["from_cache"].resid, namespace["dyn"].resid) <= EXACT
