# %% [markdown]
# # 04 · Comparing model families on normalised depth
#
# Fernando & Guitchounts (2025) studied Llama 3.1 8B and said Gemma 2 behaves similarly. Which
# of the dynamics belong to *transformers trained on language*, and which to one architecture?
# This notebook runs the paper's measures, in both conditions (original and shuffled tokens),
# on three real trained models of three families, all offline:
#
# | model | family | architecture | normalisation | layers | $d_\text{model}$ |
# |---|---|---|---|---|---|
# | SmolLM2-135M-Instruct | Llama | decoder | pre-RMSNorm (the paper's) | 30 | 576 |
# | Gemma-3-270M | Gemma | decoder | RMSNorm before *and after* each sub-block | 18 | 640 |
# | all-MiniLM-L6-v2 | BERT | encoder | post-LayerNorm on the stream | 6 | 384 |
#
# The two decoders are 4-bit GGUF files dequantised to float32: the real trained networks
# with quantisation noise. MiniLM is read at its last token, which for this encoder is always
# the special `[SEP]` token (section 1 shows it). (The tiny Llama / Gemma / GPT-2 models of the test suite have
# **random** weights; they say nothing about learnt dynamics and do not appear here.)
#
# Models of different depth share one axis, **normalised depth**: sublayer $s$ of a model with
# $2L$ sublayers sits at $s / 2L$, and a transition $t \to t+1$ at $(t+1)/2L$. Velocities and
# norms are in each model's own units, so they are also shown divided by the model's mean norm.
#
# **Learning objectives.** After this notebook you can
# 1. put models of different depth and scale on one axis, as `tl-dynamics compare` does;
# 2. read per-depth curves in both conditions;
# 3. say which of the paper's findings hold in which family, in which condition;
# 4. reproduce the full comparison (Figures 1-4, HTML reports) with three commands.
#
# **Time:** about 60 minutes (three exercises of 3-10 minutes and a bonus). The solved
# notebook runs in about 3-4 minutes on a laptop CPU.

# %% [setup] gemma

# %% [contents]

# %%
import pandas as pd
import plotly.express as px
import torch

import tl_dynamics as tld
from tl_dynamics import testing
from tl_dynamics.report.compare import depth_curves
from tl_dynamics.findings import contrasts, dynamics_findings

PRESETS = {"SmolLM2-135M": "smollm2-135m", "Gemma-3-270M": "gemma-3-270m", "MiniLM": "minilm"}
N_TEXTS = 48
texts = tld.data.python_docs()[:N_TEXTS]

# %% [markdown]
# ## 1. An encoder's read token, and its norm
#
# A decoder is read at the text's last token (most often a full stop: notebook 02a). BERT's
# tokenizer puts `[CLS]` in front of every text and `[SEP]` after it, so MiniLM's last token
# is the same special token for every text, and the shuffled control keeps it in place (the
# shuffle permutes only the tokens between the specials):

# %%
minilm = tld.models.load_model("minilm", device=DEVICE)
generator = torch.Generator().manual_seed(0)     # as collect(..., shuffle=True, seed=0)
special = minilm.tokenizer.all_special_ids
read = {"original": {minilm.to_str_tokens(text)[-1] for text in texts},
        "shuffled": {minilm.to_str_tokens(tld.data.shuffle_tokens(minilm.to_tokens(text)[0].cpu(), special,
                                                                  generator))[-1] for text in texts}}
print("tokens read, per condition:", read)
assert read == {"original": {"[SEP]"}, "shuffled": {"[SEP]"}}
minilm_dyn = tld.collect(minilm, texts, batch_size=16, corpus="python-docs", progress=False)

# %% [markdown]
# Every state of MiniLM's stream is the output of a LayerNorm. Compute the norm of every
# state yourself, `[sample, sublayer]`, from `minilm_dyn.resid`.

# %% [exercise] title="The norm of every state" kind=compute importance=2 difficulty=1 minutes=5
from torch import Tensor


def my_norms(resid: Tensor) -> Tensor:
    """Euclidean norm of every state: [sample, sublayer]."""
    # SOLUTION
    return resid.norm(dim=-1)
    # STUB
    # return resid.abs().sum(dim=-1)
    # END


testing.check_norms(my_norms(minilm_dyn.resid), minilm_dyn)

# %% [hint]
# One number per (text, sublayer): the length of the vector over the unit axis.

# %% [hint] code
# ```python
# resid.norm(dim=-1)            # or torch.linalg.vector_norm(resid, dim=-1)
# ```

# %% [markdown]
# **Predict before you run the three models.** Whose stream grows most, as the ratio of its
# mean norm at the last sublayer to that at the first: `"SmolLM2-135M"`, `"Gemma-3-270M"` or
# `"MiniLM"`? Section 4 measures it.

# %% [exercise] title="Whose stream grows most?" kind=predict importance=2 difficulty=2 minutes=3
# SOLUTION
prediction = "Gemma-3-270M"     # a decoder; of the two, the run in section 4 decides
# STUB
# prediction = ...              # one of PRESETS
# END
testing.check_prediction(prediction, list(PRESETS))

# %% [hint]
# Rule out the model whose stream is renormalised after every sub-block. Between the two
# decoders the architecture alone does not decide: commit to one, and let section 4 tell.

# %% [hint] code
# ```python
# prediction = "SmolLM2-135M"   # or "Gemma-3-270M", "MiniLM"
# ```

# %% [markdown]
# **Recap.** MiniLM is read at `[SEP]` in both conditions, so its shuffled control changes the
# order only; a decoder's changes the order and the read token.
#
# ## 2. Both conditions, three models
#
# For each model: the trajectories of the same texts in both conditions, and per condition
# the measures behind the per-depth curves and the Figure 1-2 findings: cosine, velocity,
# norm, per-unit correlation, mutual information (the fast binned estimator) and the
# rotation null. Each model is dropped before the next is loaded.

# %%
def condition(dyn):
    """The per-depth numbers of one condition, keyed as in a report's metrics.json."""
    mi = dyn.mutual_information(method="binned")
    null = dyn.rotation_null(n_shuffles=1000, seed=0)
    numbers = {
        "labels": list(dyn.labels),
        "norms_mean": dyn.norms().mean(0).tolist(),
        "fig1e_cosine_similarity_mean": dyn.cosine_similarity().mean(0).tolist(),
        "fig1f_velocity_mean": dyn.velocity().mean(0).tolist(),
        "fig1h_unit_correlation_mean": dyn.unit_correlation().nanmean(-1).tolist(),
        "fig1h_mutual_information_mean_nats": mi.nanmean(-1).tolist(),
    }
    return numbers, dynamics_findings(dyn, mi, null)


records, findings = {}, {}
for name, preset in PRESETS.items():
    model = tld.models.load_model(preset, device=DEVICE)
    conditions = {}
    for label, shuffle in (("original", False), ("shuffled", True)):
        dyn = tld.collect(model, texts, batch_size=16, corpus="python-docs", shuffle=shuffle, seed=0, progress=False)
        conditions[label], findings[(name, label)] = condition(dyn)
    records[name] = {"conditions": conditions}
    print(f"{name}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, {dyn.n_samples} texts per condition")
    del model

# %% [markdown]
# **Recap.** For each model and condition: the per-depth numbers of a report's `metrics.json`
# and the Figure 1-2 findings.

# %% [markdown]
# ## 3. Every per-depth curve, both conditions
#
# `tl_dynamics.report.compare.depth_curves` places each quantity on normalised depth exactly as
# `tl-dynamics compare` does (and adds the velocity divided by the mean norm). A facet whose
# values span more than two decades (the norms and velocities of the decoders) has a log
# axis, so that MiniLM's curve is not flattened onto zero.

# %%
curves = pd.DataFrame([
    {"model": name, "condition": entry["condition"], "quantity": entry["quantity"],
     "normalised depth": depth, "value": value}
    for name, record in records.items()
    for entry in depth_curves(record)
    for depth, value in zip(entry["depth"], entry["values"])
])
figure = px.line(curves, x="normalised depth", y="value", color="model", line_dash="condition",
                 facet_col="quantity", facet_col_wrap=2, markers=True, template="plotly_white", height=900,
                 title="Three model families on normalised depth · solid: original texts, dotted: shuffled tokens")
figure.update_yaxes(matches=None, showticklabels=True)
figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
tld.plot.dynamics.log_facets(figure)

# %% [markdown]
# Read the norm facet: which model's norm grows by less than one decade (ten-fold) over depth?

# %% [exercise] title="Read the norm facet" kind=figure importance=2 difficulty=1 minutes=3
# SOLUTION
answer = "MiniLM"       # its curve rises by less than one decade; the decoders climb by two or more
# STUB
# answer = ""           # a model's name
# END
testing.check_answer(answer, ["MiniLM", "all-MiniLM-L6-v2", "the encoder", "BERT"], question="whose norm grows least")

# %% [hint]
# On a log axis a ten-fold growth is one decade of rise, whatever the starting value: compare
# how many decades each curve climbs from its first point to its last.

# %% [hint] code
# ```python
# answer = "SmolLM2-135M"   # or "Gemma-3-270M", "MiniLM"
# ```

# %% [markdown]
# **Recap.** On normalised depth, models of any depth share one axis; facets that span decades
# are read on their log axes.

# %% [markdown]
# ## 4. What you should see
#
# Summaries of the curves, computed here: the norm's growth from first to last sublayer, the
# range of the successive cosine, and the median per-unit $r$ over depth, per model and
# condition.

# %%
def summary(frame):
    norms = frame[frame["quantity"] == "norms_mean"]["value"].to_numpy()
    cosine = frame[frame["quantity"] == "fig1e_cosine_similarity_mean"]["value"]
    r = frame[frame["quantity"] == "fig1h_unit_correlation_mean"]["value"]
    return pd.Series({"norm growth (last / first)": norms[-1] / norms[0], "cosine min": cosine.min(),
                      "cosine max": cosine.max(), "median of mean r over depth": r.median()})


overview = curves.groupby(["model", "condition"])[["quantity", "value"]].apply(summary).round(3)
overview

# %% [markdown]
# The pre-normalised decoders let the stream grow by more than a hundred-fold; the
# post-LayerNorm encoder, every state of which is a LayerNorm output (so its size is set by
# the LayerNorm's learnt gains), by less than ten-fold. The cell checks that statement, and
# your prediction, on the numbers above:

# %%
growth = overview["norm growth (last / first)"].xs("original", level="condition")
print(growth.round(1).to_dict())
for decoder in ("SmolLM2-135M", "Gemma-3-270M"):
    assert growth[decoder] > 10 * growth["MiniLM"], "a pre-norm decoder's stream grows, the encoder's does not"
assert growth["MiniLM"] < 10 and min(growth["SmolLM2-135M"], growth["Gemma-3-270M"]) > 100
testing.check_prediction(prediction, list(PRESETS), outcome=growth.idxmax())

# %% [markdown]
# **Recap.** The decoders' streams grow by more than two orders of magnitude over depth; the
# encoder's by less than one.

# %% [markdown]
# ## 5. The paper's findings, side by side
#
# The Figure 1-2 findings of `tl_dynamics.findings`, one column per (model, condition):
# which of the paper's statements hold where. (The Figure 3-4 findings need the PCA and the
# teleports of a full report: section 6.)

# %%
verdicts = pd.DataFrame({column: {f.key: f.verdict for f in found} for column, found in findings.items()})
verdicts

# %%
(verdicts == "yes").sum().rename("findings that hold").to_frame().T

# %% [markdown]
# The same verdict in both conditions is not the same effect: "yes" in both can hide a larger
# effect in one. The paired contrast of notebook 02b, original minus shuffled on the same
# texts, says per model whether the original texts show more of a finding (`"higher"`: it
# depends on word order or, for a decoder, on the token read), less, the same within its
# minimum effect, or `"undecided"`:

# %%
order = pd.DataFrame({
    name: {c.key: c.verdict for c in contrasts(findings[(name, "original")], findings[(name, "shuffled")], "shuffled")}
    for name in PRESETS
})
order

# %% [markdown]
# Read the tables column against column: a finding that holds in both decoders and not in
# MiniLM points to something the decoders share and MiniLM lacks (the architecture, the
# training or the token read); one whose contrast is `"same"` does not depend on word order
# (nor, for a decoder, on the token read) beyond its minimum effect. With 48 texts a verdict
# can flip between samples of texts: the default report (below) uses more.
#
# **Recap.** One column per model and condition: a finding's verdict is read against the
# other family and against the control.
#
# ## 6. The full comparison from a shell
#
# `tl-dynamics report` runs everything above plus Figures 3-4 (autoencoder, PCA, teleports)
# and their findings, and writes `report.html`, `metrics.json` and the trajectories;
# `tl-dynamics compare` overlays the reports' curves on normalised depth, both conditions, in
# `compare.html` and `compare.json` (several minutes per decoder on a laptop CPU):
#
# ```bash
# tl-dynamics report --model smollm2-135m --out smollm2        # the default model
# tl-dynamics report --model gemma-3-270m --out gemma-3
# tl-dynamics report --model minilm --out minilm
# tl-dynamics compare smollm2 gemma-3 minilm --out comparison
# ```
#
# **Recap.** `tl-dynamics report` per model, then `tl-dynamics compare` over the reports.
#
# ## Bonus: normalised depth
#
# For those who finish early: place every sublayer of a model on normalised depth as
# `tl-dynamics compare` does, sublayer $s$ of $2L$ at $s / 2L$, from its labels alone.

# %% [exercise] title="Normalised depth from the labels" kind=compute bonus importance=1 difficulty=1 minutes=5
def my_normalised_depth(labels: list[str]) -> list[float]:
    """Depth of every sublayer as a fraction of the model's 2L sublayers."""
    # SOLUTION
    return [s / len(labels) for s in range(len(labels))]
    # STUB
    # return [s / (len(labels) - 1) for s in range(len(labels))]
    # END


testing.check_normalised_depth(my_normalised_depth(list(minilm_dyn.labels)), minilm_dyn.labels)

# %% [hint]
# Each label is one sublayer, in order; the first sits at 0 and the last one step short of 1
# (depth 1 is the model's output, after the last sublayer).

# %% [hint] code
# ```python
# [s / len(labels) for s in range(len(labels))]
# ```
