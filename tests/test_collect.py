"""Collection against TransformerLens's own accumulated_resid, padding safety, controls."""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import shutil
import stat

import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

import tl_dynamics as tld
from tl_dynamics._output import FILE_MODE
from tl_dynamics._batching import tokenize
from tl_dynamics.models import build_tiny_model, load_model

TOLERANCE = 1e-4  # max abs difference allowed between a padded batch and a text alone


def reference_trajectory(model, text, include_final=False):
    """TL's accumulated_resid at the last token of ``text`` run alone (no padding)."""
    _, cache = model.run_with_cache(model.to_tokens(text))
    stack, labels = cache.accumulated_resid(incl_mid=True, pos_slice=-1, return_labels=True)
    if not include_final:
        stack, labels = stack[:-1], labels[:-1]
    return stack[:, 0].float(), labels


def test_collect_matches_accumulated_resid_of_each_text_alone(any_model, texts):
    # batch_size 5 over 12 texts of different lengths: every batch is padded
    dyn = tld.collect(any_model, texts, batch_size=5, progress=False)
    n_layers, d_model = any_model.cfg.n_layers, any_model.cfg.d_model
    assert dyn.resid.shape == (len(texts), 2 * n_layers, d_model)
    assert dyn.resid.dtype == torch.float32 and dyn.resid.device.type == "cpu"
    lengths = {len(t) for t in tokenize(any_model, texts)}
    assert len(lengths) > 1, "the texts must differ in length for this test to mean anything"
    for i, text in enumerate(texts):
        expected, labels = reference_trajectory(any_model, text)
        assert dyn.labels == tuple(labels)
        assert (dyn.resid[i] - expected).abs().max() <= TOLERANCE


def test_include_final_appends_resid_post(any_model, texts):
    dyn = tld.collect(any_model, texts[:3], include_final=True, progress=False)
    expected, labels = reference_trajectory(any_model, texts[1], include_final=True)
    assert dyn.labels[-1] == "final_post" and dyn.labels == tuple(labels)
    assert (dyn.resid[1] - expected).abs().max() <= TOLERANCE


def test_padding_without_mask_would_corrupt_an_encoder(minilm, texts):
    """The trap collect avoids: BERT attends to right padding unless it is masked."""
    short, long = min(texts, key=len), max(texts, key=len)
    tokens = [minilm.to_tokens(t)[0] for t in (short, long)]
    padded = torch.zeros(2, len(tokens[1]), dtype=torch.long)
    padded[0, : len(tokens[0])], padded[1] = tokens[0], tokens[1]
    _, cache = minilm.run_with_cache(padded)  # no attention mask
    unmasked = cache.accumulated_resid(incl_mid=True)[:-1, 0, len(tokens[0]) - 1]
    alone, _ = reference_trajectory(minilm, short)
    assert (unmasked - alone).abs().max() > 0.1  # the mistake is large on a real encoder
    dyn = tld.collect(minilm, [short, long], batch_size=2, progress=False)
    assert (dyn.resid[0] - alone).abs().max() <= TOLERANCE


def test_model_accessor_and_cache_accessor_agree(minilm, texts):
    via_accessor = minilm.dynamics(texts[:4], progress=False)
    via_function = tld.collect(minilm, texts[:4], progress=False)
    torch.testing.assert_close(via_accessor.resid, via_function.resid)
    _, cache = minilm.run_with_cache(minilm.to_tokens(texts[0]))
    from_cache = cache.dynamics()
    assert from_cache.labels == via_function.labels
    torch.testing.assert_close(from_cache.resid[0], via_function.resid[0], atol=TOLERANCE, rtol=0)


def test_cache_accessor_uses_attention_mask_for_padded_batches(minilm, texts):
    tokens = [minilm.to_tokens(t)[0] for t in texts[:3]]
    width = max(len(t) for t in tokens)
    padded = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for row, t in enumerate(tokens):
        padded[row, : len(t)], mask[row, : len(t)] = t, 1
    _, cache = minilm.run_with_cache(padded, attention_mask=mask)
    from_cache = cache.dynamics(attention_mask=mask)
    expected = tld.collect(minilm, texts[:3], progress=False)
    assert (from_cache.resid - expected.resid).abs().max() <= TOLERANCE
    assert from_cache.position.tolist() == [len(t) - 1 for t in tokens]


def test_shuffle_keeps_bos_first_and_the_same_tokens(any_model, texts):
    plain = tokenize(any_model, texts[:4])
    shuffled = tokenize(any_model, texts[:4], shuffle=True, seed=3)
    again = tokenize(any_model, texts[:4], shuffle=True, seed=3)
    other = tokenize(any_model, texts[:4], shuffle=True, seed=4)
    for p, s, a in zip(plain, shuffled, again):
        assert s[0] == p[0]  # BOS (or [CLS]) stays first
        assert collections.Counter(s.tolist()) == collections.Counter(p.tolist())
        assert torch.equal(s, a)
    assert any(not torch.equal(p, s) for p, s in zip(plain, shuffled))
    assert any(not torch.equal(s, o) for s, o in zip(shuffled, other))


def test_shuffled_control_changes_trajectories_reproducibly(minilm, texts):
    plain = tld.collect(minilm, texts[:4], progress=False)
    control = tld.collect(minilm, texts[:4], shuffle=True, seed=0, progress=False)
    repeat = tld.collect(minilm, texts[:4], shuffle=True, seed=0, progress=False, batch_size=1)
    assert control.metadata.shuffle and not plain.metadata.shuffle
    assert (control.resid - plain.resid).abs().max() > 1e-2
    torch.testing.assert_close(control.resid, repeat.resid, atol=TOLERANCE, rtol=0)


def test_all_positions_cover_every_token(tiny_models, texts):
    model = tiny_models["llama"]
    every = tld.collect(model, texts[:3], positions="all", progress=False)
    last = tld.collect(model, texts[:3], progress=False)
    lengths = [len(t) for t in tokenize(model, texts[:3])]
    assert every.n_samples == sum(lengths)
    for i, n in enumerate(lengths):
        rows = every.text_index == i
        assert every.position[rows].tolist() == list(range(n))
        assert (every.resid[rows][-1] - last.resid[i]).abs().max() <= TOLERANCE
    first_two = tld.collect(model, texts[:3], positions=[0, -1], progress=False)
    assert first_two.n_samples == 6
    torch.testing.assert_close(first_two.resid[1::2], last.resid, atol=TOLERANCE, rtol=0)


def test_pre_only_sites_support_parallel_attention_models(tmp_path, minilm):
    config = GPTNeoXConfig(
        vocab_size=minilm.tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        use_parallel_residual=True,
    )
    GPTNeoXForCausalLM(config).save_pretrained(tmp_path)
    minilm.tokenizer.save_pretrained(tmp_path)
    neox = load_model(tmp_path)
    with pytest.raises(ValueError, match=r"hook_resid_mid.*sites=\('pre',\)"):
        tld.collect(neox, ["a short text"], progress=False)
    dyn = tld.collect(neox, ["a short text", "another one"], sites=("pre",), progress=False)
    assert dyn.labels == ("0_pre", "1_pre")
    assert tld.metrics.transition_kinds(dyn.labels) == ["layer"]


STEER = 2.0  # size of the steering vector, in residual-stream units


def steering_hook(model, seed=0):
    """A TransformerLens hook adding one fixed random vector of length STEER at every token
    (in place: see tl_dynamics.interventions on a Bridge's hook_resid_mid)."""
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))
    vector = STEER * direction / direction.norm()

    def steer(activation, hook):
        activation += vector.to(activation.device, activation.dtype)
        return activation

    return steer, vector


@pytest.mark.parametrize("sublayer", [1, 4])
def test_steering_hook_changes_trajectories_from_its_sublayer_on(any_model, texts, sublayer):
    steer, vector = steering_hook(any_model)
    name = tld.sublayer_hook_name(any_model, sublayer)
    plain = tld.collect(any_model, texts[:5], batch_size=2, progress=False)
    steered = tld.collect(any_model, texts[:5], batch_size=2, progress=False,
                          fwd_hooks=[(name, steer)])  # fmt: skip
    assert steered.labels == plain.labels
    assert torch.equal(steered.resid[:, :sublayer], plain.resid[:, :sublayer])  # exactly
    torch.testing.assert_close(steered.resid[:, sublayer], plain.resid[:, sublayer] + vector)
    assert ((steered.resid[:, sublayer:] - plain.resid[:, sublayer:]).norm(dim=-1) > 1e-3).all()
    # TransformerLens's own accumulated_resid under the same hook, each text alone
    with any_model.hooks(fwd_hooks=[(name, steer)]):
        for i, text in enumerate(texts[:5]):
            expected, _ = reference_trajectory(any_model, text)
            assert (steered.resid[i] - expected).abs().max() <= TOLERANCE
        in_context = tld.collect(any_model, texts[:5], batch_size=2, progress=False)
    assert torch.equal(in_context.resid, steered.resid)  # hooks on the model apply too
    assert torch.equal(tld.collect(any_model, texts[:5], batch_size=2, progress=False).resid,
                       plain.resid)  # fmt: skip  # and are gone after the context


def test_the_metadata_records_the_interventions(tiny_models, texts):
    model = tiny_models["llama"]
    steer, _ = steering_hook(model)
    name = tld.sublayer_hook_name(model, 2)
    steered = tld.collect(model, texts[:2], progress=False, fwd_hooks=[(name, steer)])
    qualname = "steering_hook.<locals>.steer"
    assert steered.metadata.interventions == (f"{name}: {qualname}",)
    assert tld.collect(model, texts[:2], progress=False).metadata.interventions == ()
    by_filter = tld.collect(
        model, texts[:2], progress=False, fwd_hooks=[(lambda hook: hook == name, steer)]
    )
    assert by_filter.metadata.interventions[0].startswith("<filter ")
    assert torch.equal(by_filter.resid, steered.resid)


def test_a_store_collects_under_interventions_and_refuses_a_resume_without_them(
    tiny_models, texts, tmp_path
):
    from tl_dynamics.store import DynamicsStore, collect_to_store

    model = tiny_models["llama"]
    steer, _ = steering_hook(model)
    hooks = [(tld.sublayer_hook_name(model, 2), steer)]
    settings = tld.CollectSettings(batch_size=2, progress=False)
    store = collect_to_store(model, texts[:4], tmp_path, settings, shard_size=2, fwd_hooks=hooks)
    expected = tld.collect(model, texts[:4], batch_size=2, progress=False, fwd_hooks=hooks)
    loaded = store.load()
    assert loaded.metadata == expected.metadata
    assert (loaded.resid - expected.resid).abs().max() <= TOLERANCE
    with pytest.raises(ValueError, match="another run.*interventions"):
        collect_to_store(model, texts[:4], tmp_path, settings)
    assert DynamicsStore.open(tmp_path).complete


def test_sublayer_hook_name_follows_the_sublayer_axis(tiny_models):
    model = tiny_models["llama"]
    dyn = tld.collect(model, ["a text"], include_final=True, progress=False)
    names = [tld.sublayer_hook_name(model, s) for s in range(len(dyn.labels))]
    assert names[:3] == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid",
                         "blocks.1.hook_resid_pre"]  # fmt: skip
    last = model.cfg.n_layers - 1
    assert names[-1] == f"blocks.{last}.hook_resid_post"
    assert [tld.sublayer_hook_name(model, label) for label in dyn.labels] == names
    assert tld.sublayer_hook_name(model, 1, sites=("pre",)) == "blocks.1.hook_resid_pre"
    for bad in (-1, len(names), True, 1.0):
        with pytest.raises(ValueError, match="sublayer must be an int"):
            tld.sublayer_hook_name(model, bad)
    with pytest.raises(ValueError, match="no label"):
        tld.sublayer_hook_name(model, "0_post")


@pytest.mark.parametrize("fwd_hooks", [[("blocks.0.hook_resid_pre",)], "blocks.0", [("x", 3)], 5])
def test_bad_fwd_hooks_are_refused(minilm, fwd_hooks):
    with pytest.raises(ValueError, match="fwd_hooks must be a list of"):
        tld.collect(minilm, ["a text"], fwd_hooks=fwd_hooks, progress=False)


@pytest.mark.parametrize(
    "bad_texts, error, match",
    [
        ([], ValueError, "texts is empty"),
        (["fine", ""], ValueError, r"texts\[1\] is empty"),
        (["fine", "   "], ValueError, r"texts\[1\] is empty"),
        ("a single string", TypeError, "wrap it"),
        (["fine", 3], TypeError, r"texts\[1\] must be a str"),
    ],
)
def test_bad_texts_are_refused(minilm, bad_texts, error, match):
    with pytest.raises(error, match=match):
        tld.collect(minilm, bad_texts, progress=False)


@pytest.mark.parametrize(
    "field, value",
    [("batch_size", 0), ("seed", 1.5), ("shuffle", 1), ("include_final", None),
     ("keep_texts", "yes"), ("progress", 0), ("corpus", 3), ("positions", "first"),
     ("sites", ("mid",))],
)  # fmt: skip
def test_collect_settings_name_a_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        tld.CollectSettings(**{field: value})


def test_collect_settings_are_frozen_and_normalised():
    settings = tld.CollectSettings(positions=[0, -1], sites=["mid", "pre"])
    assert settings.positions == (0, -1) and settings.sites == ("pre", "mid")
    assert tld.CollectSettings(positions=3).positions == (3,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_bad_batch_size_is_refused(minilm, batch_size):
    expected = r"batch_size must be an int >= 1; got .*" + re.escape(repr(batch_size))
    with pytest.raises(ValueError, match=expected):
        tld.collect(minilm, ["a text"], batch_size=batch_size, progress=False)


@pytest.mark.parametrize("positions", ["first", [], [0.5], None])
def test_bad_positions_are_refused(minilm, positions):
    with pytest.raises(ValueError, match="positions must be"):
        tld.collect(minilm, ["a text"], positions=positions, progress=False)


def test_position_beyond_a_text_is_refused(minilm):
    with pytest.raises(ValueError, match="fall outside text 0"):
        tld.collect(minilm, ["tiny"], positions=[40], progress=False)


def test_non_model_is_refused():
    with pytest.raises(TypeError, match="must be a TransformerLens model"):
        tld.collect(torch.nn.Linear(3, 3), ["a text"], progress=False)


def test_training_mode_is_refused(tiny_model_folders):
    model = load_model(tiny_model_folders["gpt2"]).train()
    with pytest.raises(ValueError, match="training mode"):
        tld.collect(model, ["a text"], progress=False)


def test_text_longer_than_context_is_truncated_with_a_warning(tiny_models):
    model = tiny_models["gpt2"]
    long_text = " ".join(["residual"] * 400)
    assert len(model.to_tokens(long_text, truncate=False)[0]) > model.cfg.n_ctx
    with pytest.warns(UserWarning, match="1 of 2 texts are longer than the model's context"):
        dyn = tld.collect(model, [long_text, "short"], positions="all", progress=False)
    assert int((dyn.text_index == 0).sum()) == model.cfg.n_ctx


def test_non_finite_activations_name_the_sublayer(tmp_path):
    folder = build_tiny_model("gpt2", tmp_path / "overflow")
    hf = GPT2LMHeadModel.from_pretrained(folder)
    with torch.no_grad():  # block 1's MLP adds twice float32's maximum: overflow to inf
        hf.transformer.h[1].mlp.c_proj.bias.fill_(torch.finfo(torch.float32).max)
        hf.transformer.h[1].mlp.c_proj.weight.fill_(torch.finfo(torch.float32).max)
    hf.save_pretrained(folder)
    model = load_model(folder)
    with pytest.raises(FloatingPointError, match=r"first appear at sublayer '2_pre'"):
        tld.collect(model, ["some text to read"], progress=False)


def test_save_and_load_round_trip_without_pickle(minilm, texts, tmp_path):
    dyn = tld.collect(minilm, texts[:3], corpus="python-docs", progress=False)
    path = dyn.save(tmp_path / "run")
    assert path.name == "run.safetensors" and path.with_suffix(".json").is_file()
    with open(path, "rb") as handle:
        assert b"pickle" not in handle.read(4096)
    loaded = tld.DynamicsCache.load(path)
    torch.testing.assert_close(loaded.resid, dyn.resid, atol=0, rtol=0)
    assert loaded.labels == dyn.labels and loaded.metadata == dyn.metadata
    assert loaded.metadata.corpus == "python-docs" and loaded.metadata.texts == tuple(texts[:3])


def test_load_reports_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        tld.DynamicsCache.load(tmp_path / "nothing.safetensors")


def small_cache():
    """A cache of 3 samples, 4 sublayers, 5 units, made up (no model needed)."""
    return tld.DynamicsCache(
        resid=torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0)),
        labels=("0_pre", "0_mid", "1_pre", "1_mid"),
        text_index=torch.arange(3),
        position=torch.zeros(3, dtype=torch.long),
        metadata=tld.DynamicsMetadata(n_layers=2, d_model=5, texts=("a", "b", "c")),
    )


def test_saved_files_follow_the_umask(tmp_path):
    path = small_cache().save(tmp_path / "run")
    for written in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(written.stat().st_mode) == FILE_MODE


def test_load_refuses_another_programs_safetensors(tmp_path):
    other = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(other))
    small_cache().save(tmp_path / "mine")
    shutil.copy(tmp_path / "mine.json", tmp_path / "weights.json")
    with pytest.raises(ValueError, match=r"weights.safetensors' was not written by DynamicsCache"):
        tld.DynamicsCache.load(other)
    other.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ValueError, match=r"weights.safetensors' is not a readable safetensors"):
        tld.DynamicsCache.load(other)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sidecar: sidecar.update(labels=["0_pre"]), "labels has 1 entries"),
        (lambda sidecar: sidecar["metadata"].update(d_model=7), "d_model 7"),
        (lambda sidecar: sidecar["metadata"].update(texts=["a"]), "keeps 1 texts"),
        (lambda sidecar: sidecar.update(format_version="1"), "format_version '1'"),
        (lambda sidecar: sidecar.pop("labels"), "lacks 'labels'"),
    ],
)
def test_load_checks_the_sidecar_against_the_tensors(tmp_path, change, message):
    path = small_cache().save(tmp_path / "run")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    change(sidecar)
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match=rf"run\.json.*{re.escape(message)}"):
        tld.DynamicsCache.load(path)


def test_load_names_a_sidecar_that_is_no_json(tmp_path):
    path = small_cache().save(tmp_path / "run")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ValueError, match=r"run.json' is not a JSON sidecar"):
        tld.DynamicsCache.load(path)


def test_tiny_models_are_reproducible(tmp_path):
    a = load_model(build_tiny_model("llama", tmp_path / "a", seed=1))
    b = load_model(build_tiny_model("llama", tmp_path / "b", seed=1))
    c = load_model(build_tiny_model("llama", tmp_path / "c", seed=2))
    text = ["The same text."]
    ra, rb, rc = (tld.collect(m, text, progress=False).resid for m in (a, b, c))
    torch.testing.assert_close(ra, rb)
    assert (ra - rc).abs().max() > 1e-3
