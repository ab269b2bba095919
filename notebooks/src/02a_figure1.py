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
# 4. check statements of Figure 1 against SmolLM2's numbers, computed and asserted in the
#    notebook (02b then tests every finding of the paper with an interval and a verdict);
# 5. say which token a trajectory is read at, and what the shuffled control does to it.
#
# **Time:** about 90 minutes (four exercises of 3-20 minutes and a bonus). The solved
# notebook runs in about 2-3 minutes on a laptop CPU. Session 2 (`02b_figures2_4`) covers
# Figures 2-4.
#
# | | the paper | here |
# |---|---|---|
# | model | Llama 3.1 8B, pre-RMSNorm decoder | SmolLM2-135M-Instruct, the same Llama architecture, 4-bit weights |
# | depth | 32 layers, 64 sublayers | 30 layers, 60 sublayers |
# | width | 4096 units | 576 units |
# | texts | 1000 WikiText-2 paragraphs | 64 paragraphs of Python's documentation |
# | token read | the last one | the last one |

# %% [setup]

# %% [contents]

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
# ### The token we read
#
# Every trajectory is the stream at one token: the text's **last**. Which token is that, text
# by text? Return it as a string, as `model.to_str_tokens` writes it.

# %% [exercise] title="The token each text is read at" kind=compute importance=2 difficulty=1 minutes=5
def my_read_tokens(model, texts: list[str]) -> list[str]:
    """The last token of every text as collect runs it (BOS prepended), as a string."""
    # SOLUTION
    return [model.to_str_tokens(text)[-1] for text in texts]
    # STUB
    # return ["." for text in texts]
    # END


read_tokens = my_read_tokens(model, texts)
testing.check_read_tokens(read_tokens, model, texts)

# %% [hint]
# The model's tokenizer turns a text into the tokens it runs (with BOS in front); the
# trajectory is read at the last one of them.

# %% [hint] code
# ```python
# model.to_str_tokens(text)[-1]
# ```

# %% [markdown]
# Python's documentation is written in sentences: most texts end in a full stop, so the
# original condition reads almost every text at the same token, `"."` (or a token ending in
# one, such as `")."`). Every trajectory is the state of the model *about to predict what
# follows a full stop*. The shuffled control permutes every token after BOS, the last one
# included: it reads each text at a random token of it. So the control changes two things at
# once, the order of the words and the token read; a difference between the conditions can
# come from either. The cell counts both:

# %%
from collections import Counter

generator = torch.Generator().manual_seed(0)     # one generator for all texts, in order, as collect does
shuffled_read = [
    model.to_str_tokens(tld.data.shuffle_tokens(model.to_tokens(text)[0].cpu(), model.tokenizer.all_special_ids,
                                                generator))[-1]
    for text in texts
]
testing.check_read_tokens(shuffled_read, model, texts, shuffle=True, seed=0)   # what collect runs
full_stops = sum(token.endswith(".") for token in read_tokens)
moved = sum(a != b for a, b in zip(read_tokens, shuffled_read))
print("most frequent read tokens, original:", Counter(read_tokens).most_common(4))
print("most frequent read tokens, shuffled:", Counter(shuffled_read).most_common(4))
print(f"{full_stops} of {N_TEXTS} texts are read at a token ending in '.'; "
      f"the shuffle changes the read token of {moved} of {N_TEXTS}")
assert full_stops > N_TEXTS / 2 and moved > N_TEXTS / 2
assert Counter(shuffled_read).most_common(1)[0][1] < Counter(read_tokens).most_common(1)[0][1]

# %% [markdown]
# **Recap.** Two conditions from the same texts: the original, read at the last token (most
# often a full stop), and the shuffled control, whose order *and* read token are random.

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
# **Recap.** 1B shows the units' means over depth, 1C the correlation of each unit with
# itself one step later, 1D with itself at every other depth.

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
# **Recap.** 1E and 1F are the cosine and the velocity of notebook 01, split by kind of
# transition; section 6 states what they show for SmolLM2 with the numbers.

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

# %% [exercise] title="Mutual information of one unit across one transition" kind=compute importance=2 difficulty=3 minutes=20
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
# Three densities, three KDEs: one of the pair $(x, y)$ in two dimensions, one of $x$, one
# of $y$. Each is evaluated at the very samples it was fitted on; the estimate is the mean
# of the log ratio, with $10^{-10}$ on both sides.

# %% [hint] code
# ```python
# joint = np.vstack([x, y])                 # [2, sample]: gaussian_kde wants [dims, samples]
# p_xy = gaussian_kde(joint)(joint)         # fit, then evaluate at the samples themselves
# p_x, p_y = gaussian_kde(x)(x), gaussian_kde(y)(y)
# np.mean(np.log((p_xy + 1e-10) / (p_x * p_y + 1e-10)))
# ```

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
# Read the figure above: over the depth of SmolLM2, does the mean MI across a transition
# `"rise"` or `"fall"`?

# %% [exercise] title="Read Fig 1H" kind=figure importance=2 difficulty=1 minutes=3
# SOLUTION
answer = "rise"         # the MI curve ends well above where it starts
# STUB
# answer = ""           # "rise" or "fall"
# END
testing.check_answer(answer, ["rise", "rises", "it rises", "increase", "increases"], question="mean MI over depth")

# %% [hint]
# Look at the MI curve only (not the correlation), and compare its level over the first few
# transitions with its level over the last few.

# %% [hint] code
# ```python
# answer = "rise"   # or "fall"
# ```

# %% [markdown]
# **Not the paper's result.** In Llama 3.1 8B the mean MI *drops* sharply over the early
# layers. In SmolLM2 on these texts it rises: the cell computes Spearman's rank correlation of
# the mean MI with depth and the means over the first and last third of the transitions.
# (The model, the texts and their read token all differ from the paper's; this notebook does
# not say which of them makes the difference.)

# %%
from scipy.stats import spearmanr

mean_mi = mi.nanmean(-1)                     # [transition], nats
third = len(mean_mi) // 3
mi_rho = spearmanr(range(len(mean_mi)), mean_mi).statistic
print(f"mean MI: first third {mean_mi[:third].mean():.2f} nats, last third {mean_mi[-third:].mean():.2f} nats; "
      f"Spearman with depth {mi_rho:+.2f}")
assert mi_rho > 0 and mean_mi[-third:].mean() > mean_mi[:third].mean()

# %% [markdown]
# **Recap.** MI counts any dependence, not only linear; you estimated it for one unit with
# three Gaussian KDEs, the library for all of them. In SmolLM2 it rises with depth, in the
# paper's Llama it falls.

# %% [markdown]
# ## 5. The shuffled control
#
# The same four per-transition measures in both conditions. Where a curve is the same in both,
# that measure depends neither on word order nor on the token read.
#
# **Predict before you look.** Of the four measures, which will the shuffle change the most,
# relative to its own size: `"cosine"`, `"velocity"`, `"median r"` or `"mean MI (nats)"`?

# %% [exercise] title="Which measure does the shuffle change most?" kind=predict importance=2 difficulty=2 minutes=5
MEASURES = ["cosine", "velocity", "median r", "mean MI (nats)"]
# SOLUTION
prediction = "mean MI (nats)"   # MI and r depend on how texts differ, which the shuffle changes most
# STUB
# prediction = ...              # one of MEASURES
# END
testing.check_prediction(prediction, MEASURES)

# %% [hint]
# Ask what each measure compares: a state with the next one of the same text (cosine,
# velocity), or one unit across texts (r, MI). Which of those does a random order and a random
# read token disturb more?

# %% [hint] code
# ```python
# prediction = "velocity"   # or "cosine", "median r", "mean MI (nats)"
# ```

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
tld.plot.dynamics.log_facets(figure)                  # a log axis for a measure that spans decades

# %% [markdown]
# **Recap.** Whatever is the same in both conditions depends neither on word order nor on the
# token read; section 6 measures how far apart the conditions are.

# %% [markdown]
# ## 6. What you should see
#
# The paper's Figure 1 claims, measured here. Every number below is computed from this run,
# and the cell asserts what it prints, so that if a change of model, corpus or library made a
# statement false, the notebook would say so rather than keep it:
#
# * the norm grows more than ten-fold over depth;
# * within-layer transitions correlate more than cross-layer ones (median $r$ by kind);
# * the cosine does **not** rise steadily with depth: it is low only at the first three
#   transitions, then stays high, and the last third is no more aligned than the middle one
#   (means within 0.01); the paper's "rises with depth" holds here only for those first steps.

# %%
original = both[both["condition"] == "original"]
by_kind = original.groupby("kind")[["cosine", "velocity", "median r", "mean MI (nats)"]].mean()
norms = dyn.norms().mean(0)
cosine = original["cosine"]
third = len(original) // 3
middle, late, settled = cosine.iloc[third:-third], cosine.iloc[-third:], cosine.iloc[3:]
print(f"norm grows {norms[-1] / norms[0]:.0f}-fold from {dyn.labels[0]} to {dyn.labels[-1]}")
print(f"median r over all transitions and units: {float(dyn.unit_correlation().nanmedian()):.3f}")
print(f"cosine: transitions 0-2 {', '.join(f'{c:.3f}' for c in cosine.iloc[:3])}, from 3 on {settled.min():.3f} to "
      f"{settled.max():.3f}; mean of the middle third {middle.mean():.3f}, of the last third {late.mean():.3f}")
print(by_kind.round(3))
assert norms[-1] > 10 * norms[0]
assert by_kind.loc["within", "median r"] > by_kind.loc["cross", "median r"]
assert cosine.iloc[:3].max() < settled.min() and abs(late.mean() - middle.mean()) < 0.01

# %% [markdown]
# And the control: how far apart are the two conditions, measure by measure (mean absolute
# difference over transitions, relative to the measure's mean)?

# %%
difference = (both[both["condition"] == "shuffled"][MEASURES].to_numpy() - original[MEASURES].to_numpy())
relative = pd.Series(abs(difference).mean(0) / original[MEASURES].abs().mean().to_numpy(), index=MEASURES,
                     name="relative difference, shuffled vs original")
testing.check_prediction(prediction, MEASURES, outcome=relative.idxmax())
relative.round(3).to_frame()

# %% [markdown]
# **Recap.** Every statement of this section is asserted on the numbers printed beside it;
# the relative differences say how much each measure depends on the order and the read token.
#
# ## Summary
#
# * 1B-1D ask whether units keep their identity; 1E-1F how the state moves; 1G-1H how much
#   information passes, beyond linear correlation.
# * You estimated one unit's MI exactly as the paper does; the library's estimator is the same
#   computation, vectorised (and `method="binned"` is a fast approximation of it).
# * Section 6 prints, and asserts, what SmolLM2 shares with the paper's Figure 1 and where
#   it differs (the cosine after the first steps; the MI, which rises); section 5 shows how far
#   the shuffled control moves each measure.
# * The read token matters: most texts are read at a full stop, and the control reads each at
#   a random token.
#
# Next session: `02b_figures2_4` (phase portraits and rotations, the autoencoder, PCA,
# teleports, and the full findings table).
#
# ## Bonus: a control that keeps the read token
#
# For those who finish early. Section 1 showed that the paper's control changes two things:
# the word order and the token read. Design a control that changes only the first: permute
# the tokens between BOS and the last token, and leave both of those in place. Then the
# read token is the same in both conditions, and a difference can only come from the order.

# %% [exercise] title="A shuffle that keeps the read token" kind=control bonus importance=1 difficulty=2 minutes=10
def my_order_only_shuffle(tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """tokens [pos] with those strictly between the first and the last permuted by generator."""
    # SOLUTION
    shuffled = tokens.clone()
    inner = torch.randperm(len(tokens) - 2, generator=generator) + 1
    shuffled[1:-1] = tokens[inner]
    return shuffled
    # STUB
    # return tld.data.shuffle_tokens(tokens, model.tokenizer.all_special_ids, generator)
    # END


testing.check_order_only_shuffle(my_order_only_shuffle)

# %% [hint]
# Draw a random order of the inner positions only (1 to the one before last) and write the
# inner tokens back in that order; the first and the last entries are never touched.

# %% [hint] code
# ```python
# inner = torch.randperm(len(tokens) - 2, generator=generator) + 1   # positions 1 .. len - 2
# shuffled = tokens.clone()
# shuffled[1:-1] = tokens[inner]
# ```
