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
# the special `[SEP]` token. (The tiny Llama / Gemma / GPT-2 models of the test suite have
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
# **Time:** about 45 minutes, no exercises. The solved notebook runs in about 2-3 minutes on
# a laptop CPU.

# %% [setup] gemma

# %%
import pandas as pd
import plotly.express as px

import tl_dynamics as tld
from tl_dynamics.report.compare import depth_curves
from tl_dynamics.findings import dynamics_findings

PRESETS = {"SmolLM2-135M": "smollm2-135m", "Gemma-3-270M": "gemma-3-270m", "MiniLM": "minilm"}
N_TEXTS = 48
texts = tld.data.python_docs()[:N_TEXTS]

# %% [markdown]
# ## 1. Both conditions, three models
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
# ## 2. Every per-depth curve, both conditions
#
# `tl_dynamics.report.compare.depth_curves` places each quantity on normalised depth exactly as
# `tl-dynamics compare` does (and adds the velocity divided by the mean norm).

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
figure

# %% [markdown]
# ## 3. What you should see
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
# The pre-normalised decoders let the stream grow, the post-LayerNorm encoder cannot (every
# state it has is a LayerNorm output). The cell checks that statement on the numbers above:

# %%
growth = overview["norm growth (last / first)"].xs("original", level="condition")
print(growth.round(1).to_dict())
for decoder in ("SmolLM2-135M", "Gemma-3-270M"):
    assert growth[decoder] > 10 * growth["MiniLM"], "a pre-norm decoder's stream grows, the encoder's does not"

# %% [markdown]
# ## 4. The paper's findings, side by side
#
# The Figure 1-2 findings of `tl_dynamics.findings`, one column per (model, condition):
# which of the paper's statements hold where. (The Figure 3-4 findings need the PCA and the
# teleports of a full report: section 5.)

# %%
verdicts = pd.DataFrame({column: {f.key: f.verdict for f in found} for column, found in findings.items()})
verdicts

# %%
(verdicts == "yes").sum().rename("findings that hold").to_frame().T

# %% [markdown]
# Read it column against column: a finding that holds in both decoders and not in MiniLM points
# to the architecture (or the token read); one that holds equally on shuffled tokens does not
# depend on word order. With 48 texts a verdict can flip between samples of texts: the
# default report (below) uses more.
#
# ## 5. The full comparison from a shell
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
