# %% [markdown]
# # 02a · Figure 1: units, geometry and information (session 1 of 2)
#
# Fernando & Guitchounts (2025) read the residual stream of Llama 3.1 8B at the last token of
# 1000 WikiText-2 paragraphs, before every attention and every MLP sub-block (notebook 01 draws
# the two read points): 32 layers give 64 sublayers, and each text becomes a trajectory of 64
# points in $\mathbb{R}^{4096}$. Figure 1 asks the questions one asks of a recorded neural
# population: do units keep their identity from one step to the next, how much information
# passes, and how fast and in which direction does the state move. This session draws every
# panel of Figure 1 next to the paper's control, the same tokens in random order.
#
# **Learning objectives.** After this notebook you can
# 1. read panels 1B-1H and say what each would look like if the paper's claim held;
# 2. estimate the mutual information of one unit across one transition with Gaussian kernel
#    density estimates, as the paper does, and check it against the library;
# 3. use the shuffled-token control to ask which measures depend on word order;
# 4. state which of Figure 1's findings hold for SmolLM2, from numbers the notebook computes.
#
# **Time:** about 75 minutes (one exercise of 20 minutes). The solved notebook runs in about
# 2-3 minutes on a laptop CPU. Session 2 (`02b_figures2_4`) covers Figures 2-4.
#
# | | the paper | here |
# |---|---|---|
# | model | Llama 3.1 8B, pre-RMSNorm decoder | SmolLM2-135M-Instruct, the same Llama architecture, 4-bit weights |
# | depth | 32 layers, 64 sublayers | 30 layers, 60 sublayers |
# | width | 4096 units | 576 units |
# | texts | 1000 WikiText-2 paragraphs | 64 paragraphs of Python's documentation |
# | token read | the last one | the last one |

# %% [setup]

# %% [markdown]
# ## 1. Two conditions
#
# The paper's control keeps every token of a text but destroys its order: the tokens after the
# beginning-of-sequence token are permuted at random. Whatever survives the shuffle cannot
# depend on word order. `collect(..., shuffle=True, seed=0)` builds that control from the same
# texts, reproducibly.

# %%
import pandas as pd
import plotly.express as px
import torch

import tl_dynamics as tld
from tl_dynamics import testing

N_TEXTS = 64
model = tld.models.load_model("smollm2-135m", device=DEVICE)
texts = tld.data.python_docs()[:N_TEXTS]
dyn = tld.collect(model, texts, batch_size=16, corpus="python-docs", progress=False)
shuffled = tld.collect(model, texts, batch_size=16, corpus="python-docs", shuffle=True, seed=0, progress=False)
print(dyn)
first = model.to_tokens(texts[0])[0].cpu()  # what collect reads: BOS, then the text's tokens
print(model.to_str_tokens(first)[:12])
# The control: the same tokens in random order after BOS, as collect(shuffle=True, seed=0) sees them
generator = torch.Generator().manual_seed(0)
print(model.to_str_tokens(tld.data.shuffle_tokens(first, model.tokenizer.all_special_ids, generator))[:12])

# %% [markdown]
# ## 2. Units: 1B, 1C, 1D
#
# ### 1B · Mean activation of every unit
#
# For each unit and sublayer, the mean activation over the texts; units are sorted by their
# mean at the last sublayer, so each column is one unit at every depth. **Paper:** the picture
# grows "denser" with depth (magnitudes grow) while each unit keeps its sign. **Look for:**
# colour intensifying downwards, columns that keep their colour.

# %%
tld.plot.mean_activation(dyn)

# %% [markdown]
# ### 1C · Per-unit correlation between successive sublayers
#
# The $r_{t,i}$ you wrote in notebook 01: for unit $i$, Pearson's $r$ across texts between
# sublayer $t$ and $t+1$. **Paper:** $r > 0.8$ already in early layers and rising with depth;
# within-layer transitions correlate more than cross-layer ones. **Look for:** warm rows, and
# rows alternating between the two kinds.

# %%
tld.plot.unit_correlation(dyn)

# %% [markdown]
# ### 1D · Distribution of $r$ over all pairs of sublayers
#
# Not only successive steps: for every unit, $r$ between every pair of sublayers $l < m$
# (1770 pairs here, 2016 for Llama 3.1 8B), histogrammed on $[0, 1]$; each column is one
# unit's histogram. **Paper:** most mass above 0.8: units are correlated with themselves
# across the whole depth. **Look for:** where the bright band sits.

# %%
tld.plot.correlation_distribution(dyn)

# %% [markdown]
# ## 3. Geometry: 1E, 1F
#
# The cosine similarity and the velocity you wrote in notebook 01, averaged over texts and
# split by kind. **Paper:** the cosine rises with depth, within-layer above cross-layer; the
# velocity is flat through most of the depth and accelerates in the last third, cross-layer
# steps faster.

# %%
tld.plot.cosine_similarity(dyn)

# %%
tld.plot.velocity(dyn)

# %% [markdown]
# ## 4. Information: 1G, 1H
#
# Correlation sees only linear dependence. Mutual information (MI) counts every kind:
# $I(X;Y) = \mathbb{E}\left[\log \dfrac{p(x, y)}{p(x)\,p(y)}\right]$ in nats, zero exactly when
# $X$ and $Y$ are independent. The paper estimates the three densities with Gaussian kernel
# density estimates (KDE) and averages the log ratio over the samples themselves:
#
# $$\hat I = \frac{1}{N} \sum_{n=1}^{N} \log \frac{\hat p(x_n, y_n) + 10^{-10}}{\hat p(x_n)\,\hat p(y_n) + 10^{-10}},$$
#
# where $x_n$ is the unit's value for text $n$ at sublayer $t$ and $y_n$ at $t+1$. The
# bandwidth is Scott's rule, the default of `scipy.stats.gaussian_kde`, with a full
# covariance for the joint. The library computes this for every (transition, unit); you do it
# for one.

# %%
UNIT = int(dyn.unit_order()[-1])        # the unit with the largest mean at the last sublayer
TRANSITION = 1                          # 0_mid -> 1_pre, a cross-layer step
print(f"unit {UNIT}, transition {TRANSITION}: {dyn.labels[TRANSITION]} -> {dyn.labels[TRANSITION + 1]}")

# %% [exercise] title="Mutual information of one unit across one transition" importance=2 difficulty=3 minutes=20
import numpy as np
from scipy.stats import gaussian_kde


def my_mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI in nats between samples x and y (1-D, same length), Gaussian KDE, Scott's bandwidth."""
    # SOLUTION
    joint = np.vstack([x, y])                      # [2, sample]
    p_xy = gaussian_kde(joint)(joint)              # densities at the samples themselves
    p_x = gaussian_kde(x)(x)
    p_y = gaussian_kde(y)(y)
    return float(np.mean(np.log((p_xy + 1e-10) / (p_x * p_y + 1e-10))))
    # STUB
    # return 0.0
    # END


x = dyn.resid[:, TRANSITION, UNIT].double().numpy()
y = dyn.resid[:, TRANSITION + 1, UNIT].double().numpy()
testing.check_mutual_information(my_mutual_information(x, y), dyn, unit=UNIT, transition=TRANSITION)

# %% [hint]
# `gaussian_kde(data)` fits a KDE to `data` of shape `[dims, samples]` (a 1-D array is one
# dimension); calling the fitted object on points of the same shape returns the density at
# each point. Fit three KDEs: on `np.vstack([x, y])`, on `x` and on `y`, evaluate each at the
# data it was fitted on, then average the log ratio with `1e-10` added to both sides.

# %% [markdown]
# The library does the same for all 59 x 576 (transition, unit) pairs, vectorised. We
# compute it once and hand it to both plots: 1G per unit and transition, 1H its mean over
# units next to the mean $r$. **Paper:** MI drops sharply in the early layers, most steeply at
# cross-layer transitions, *while* linear correlation rises.

# %%
mi = dyn.mutual_information()           # [transition, d_model], nats
tld.plot.mutual_information(dyn, values=mi)

# %%
tld.plot.mutual_information_depth(dyn, values=mi)

# %% [markdown]
# ## 5. The shuffled control
#
# The same four per-transition measures in both conditions. Where a curve is the same in both,
# that measure does not depend on word order.

# %%
def per_transition(d, mi, condition):
    frame = d.transition_frame(d.cosine_similarity().mean(0), "cosine")
    frame["velocity"] = d.velocity().mean(0).double().numpy()
    frame["median r"] = d.unit_correlation().nanmedian(-1).values.numpy()
    frame["mean MI (nats)"] = mi.nanmean(-1).numpy()
    frame["condition"] = condition
    return frame


mi_shuffled = shuffled.mutual_information()
both = pd.concat([per_transition(dyn, mi, "original"), per_transition(shuffled, mi_shuffled, "shuffled")])
long = both.melt(id_vars=["transition", "source", "target", "kind", "condition"],
                 value_vars=["cosine", "velocity", "median r", "mean MI (nats)"], var_name="measure")
figure = px.line(long, x="transition", y="value", color="condition", line_dash="kind", facet_col="measure",
                 facet_col_wrap=2, markers=True, hover_data=["source", "target"], template="plotly_white",
                 title="Original vs shuffled tokens, per transition (mean over texts, or median over units)")
figure.update_yaxes(matches=None, showticklabels=True)
figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
figure

# %% [markdown]
# ## 6. What you should see
#
# The paper's Figure 1 claims, measured here. Every number below is computed from this run;
# the cell asserts the claims that hold for SmolLM2 on these texts, so that if a change of
# model, corpus or library made one fail, the notebook would say so rather than keep a
# sentence that is no longer true.

# %%
original = both[both["condition"] == "original"]
by_kind = original.groupby("kind")[["cosine", "velocity", "median r", "mean MI (nats)"]].mean()
norms = dyn.norms().mean(0)
third = len(original) // 3
print(f"norm grows {norms[-1] / norms[0]:.0f}-fold from {dyn.labels[0]} to {dyn.labels[-1]}")
print(f"median r over all transitions and units: {float(dyn.unit_correlation().nanmedian()):.3f}")
print(f"cosine, last third of transitions: {original['cosine'].iloc[-third:].min():.3f} "
      f"to {original['cosine'].iloc[-third:].max():.3f}")
print(f"mean MI (nats), first vs last third: {original['mean MI (nats)'].iloc[:third].mean():.2f} "
      f"vs {original['mean MI (nats)'].iloc[-third:].mean():.2f}")
print(by_kind.round(3))
assert norms[-1] > 10 * norms[0], "magnitudes grow with depth"
assert by_kind.loc["within", "median r"] > by_kind.loc["cross", "median r"], "within-layer r above cross-layer"
assert original["cosine"].iloc[-third:].mean() > original["cosine"].iloc[:third].mean(), "cosine rises with depth"

# %% [markdown]
# And the control: how far apart are the two conditions, measure by measure (mean absolute
# difference over transitions, relative to the measure's mean)?

# %%
measures = ["cosine", "velocity", "median r", "mean MI (nats)"]
difference = (both[both["condition"] == "shuffled"][measures].to_numpy() - original[measures].to_numpy())
pd.Series(abs(difference).mean(0) / original[measures].abs().mean().to_numpy(), index=measures,
          name="relative difference, shuffled vs original").round(3).to_frame()

# %% [markdown]
# ## Summary
#
# * 1B-1D ask whether units keep their identity; 1E-1F how the state moves; 1G-1H how much
#   information passes, beyond linear correlation.
# * You estimated one unit's MI exactly as the paper does; the library's estimator is the same
#   computation, vectorised (and `method="binned"` is a fast approximation of it).
# * The table above says which of the paper's Figure 1 claims SmolLM2 shares; the assertions
#   are the ones that hold here.
#
# Next session: `02b_figures2_4` (phase portraits and rotations, the autoencoder, PCA,
# teleports, and the full findings table).
