# %% [markdown]
# # 02b · Figures 2-4: rotations, low-dimensional views, teleports, and the findings (session 2 of 2)
#
# Session 1 (`02a_figure1`) measured how units and states change from one sublayer to the
# next. This session follows the paper's Figures 2-4: single units as oscillators in phase
# space (Fig 2), a two-dimensional squeeze of the trajectories (Fig 3, a compressing
# autoencoder; Fig 4A-C, PCA), and perturbations that "teleport" the state (Fig 4D). It ends
# with every finding of the paper tested on SmolLM2, for the original texts and the
# shuffled-token control.
#
# **Learning objectives.** After this notebook you can
# 1. draw a unit's phase portrait $(a_l, \mathrm{d}a_l/\mathrm{d}l)$ and count its rotations
#    yourself, checked against the library;
# 2. explain why the layer-shuffle null of the rotation count does not give "about zero", and
#    which choices of the count the paper leaves open;
# 3. read Figures 3 and 4 (what two dimensions keep, what a teleport measures);
# 4. read the findings table, and say which findings hold in which condition.
#
# **Time:** about 75 minutes (one exercise of 20 minutes). The solved notebook runs in about
# 2-3 minutes on a laptop CPU.

# %% [setup]

# %%
import math

import pandas as pd
import torch

import tl_dynamics as tld
from tl_dynamics import testing
from tl_dynamics.findings import decide, dynamics_findings, trajectory_findings

N_TEXTS = 64
model = tld.models.load_model("smollm2-135m", device=DEVICE)
texts = tld.data.python_docs()[:N_TEXTS]
dyn = tld.collect(model, texts, batch_size=16, corpus="python-docs", progress=False)
shuffled = tld.collect(model, texts, batch_size=16, corpus="python-docs", shuffle=True, seed=0, progress=False)
print(dyn)

# %% [markdown]
# ## 1. Figure 2: phase portraits and rotations
#
# A pendulum is drawn in phase space as position against velocity; an oscillation becomes a
# loop. The paper does the same for each unit with depth as time: the points
# $p_l = (a_l, \mathrm{d}a_l/\mathrm{d}l)$ over the sublayers, the derivative taken by central
# differences (one-sided at both ends, as `torch.gradient` does). The figure shows the mean
# trajectory of six units spread over the Fig 1B order. **Paper:** many units rotate, often
# spiralling outwards, around more than one centre.

# %%
tld.plot.phase_portrait(dyn)

# %% [markdown]
# **Counting rotations** (paper, section 2.6): take the tangent of the portrait at each step,
# $v_l = p_{l+1} - p_l$, its angle $\theta_l = \operatorname{atan2}(v_{l,y}, v_{l,x})$, the change
# of angle from one step to the next wrapped into $(-\pi, \pi]$, and
# $R = \sum_l \Delta\theta_l / 2\pi$ turns, positive counter-clockwise. You count the
# rotations of one unit of the **mean** trajectory (the mean over texts at each sublayer).

# %%
UNIT = int(dyn.unit_order()[-1])       # the unit with the largest mean at the last sublayer
print("unit", UNIT)

# %% [exercise] title="Rotation count of one unit" importance=2 difficulty=3 minutes=20
from torch import Tensor


def my_rotations(a: Tensor) -> float:
    """Signed turns of the phase portrait (a, da/dl) of one trajectory a: [sublayer]."""
    # SOLUTION
    a = a.double()
    (da,) = torch.gradient(a)                              # central differences, one-sided at the ends
    points = torch.stack([a, da], dim=-1)                  # [sublayer, 2]
    tangents = points[1:] - points[:-1]                    # [sublayer - 1, 2]
    theta = torch.atan2(tangents[:, 1], tangents[:, 0])
    change = theta[1:] - theta[:-1]
    wrapped = torch.remainder(change + math.pi, 2 * math.pi) - math.pi   # into [-pi, pi)
    return float(wrapped.sum() / (2 * math.pi))
    # STUB
    # return 0.0
    # END


mean_trajectory = dyn.resid[:, :, UNIT].mean(dim=0)       # [sublayer]
testing.check_rotations(my_rotations(mean_trajectory), dyn, unit=UNIT)

# %% [hint]
# `torch.gradient(a)` returns a tuple with the central-difference derivative. Stack
# `(a, da)` into points `[sublayer, 2]`, take differences of successive points, their angles
# with `torch.atan2(dy, dx)`, then differences of successive angles. Wrap a change of angle
# into $(-\pi, \pi]$ with `torch.remainder(change + pi, 2 * pi) - pi` (it gives $[-\pi, \pi)$;
# an exact $\pi$ never occurs in real data). Sum and divide by $2\pi$.

# %% [markdown]
# The library counts every unit at once, per text (`dyn.rotations()`, `[sample, d_model]`) or
# for the mean trajectory (`trajectory="mean"`). The paper's null hypothesis is "depth order
# does not matter": shuffle each unit's sublayers (1000 times), recompute the derivative and
# count again. **Paper:** 10.74 rotations per unit on average, against about 0 for the null.

# %%
null = dyn.rotation_null(n_shuffles=1000, seed=0)     # counts the mean trajectory by default
summary = null.summary()
print(f"observed {summary.mean_observed:+.2f} turns per unit, null {summary.mean_null:+.2f}; "
      f"{summary.fraction_significant:.0%} of units differ from their null at p < {summary.alpha}")
tld.plot.rotation_null(dyn, null=null)

# %% [markdown]
# ### A caution: what the rotation count measures
#
# Three facts about the formula itself, computed below rather than quoted:
#
# * **Portraits of the form $(x, \mathrm{d}x/\mathrm{d}l)$ circulate clockwise.** Where the
#   derivative is positive the point moves right, where negative it moves left, so an
#   oscillation is a clockwise loop and a signed count comes out negative: a sine with $k$
#   oscillations over depth turns about $-k$ times.
# * **Shuffling depth makes a sequence oscillate more, not less**: a random order goes up and
#   down from one sublayer to the next, so the null turns *more* often, not zero times.
# * **Depth caps the count.** With $S$ sublayers there are $S - 2$ changes of angle of at most
#   half a turn each, so $|R| \le (S - 2)/2$.

# %%
depth = torch.arange(64, dtype=torch.float64)
wave = torch.sin(2 * math.pi * 3 * depth / 63).reshape(1, 64, 1)     # 3 oscillations over 64 sublayers
sine = tld.metrics.rotation_null(wave, n_shuffles=200, seed=0)
cap = (dyn.resid.shape[1] - 2) / 2
print(f"sine, 3 oscillations: {float(sine.observed[0]):+.2f} turns; layer-shuffled: {float(sine.null.mean()):+.2f}")
print(f"SmolLM2 mean trajectory: {summary.mean_observed:+.2f} turns per unit; null {summary.mean_null:+.2f}; cap ±{cap:.0f}")
assert sine.observed[0] < 0 and sine.null.mean() < sine.observed[0], "clockwise, and the null turns more"
assert abs(summary.mean_observed) <= cap

# %% [markdown]
# The paper leaves three choices open, and `tl-dynamics` exposes each: signed or absolute
# turns (`signed=False` sums $|\Delta\theta|$), each text's trajectory or the mean one
# (`trajectory="sample"` / `"mean"`), and the derivative scheme (`gradient="central"` /
# `"forward"`). The four combinations of the first two on SmolLM2 (the per-sample null uses
# fewer shuffles: it costs one count per text):

# %%
rows = []
for signed in (True, False):
    for trajectory in ("mean", "sample"):
        n_shuffles = 1000 if trajectory == "mean" else 20
        s = dyn.rotation_null(n_shuffles=n_shuffles, seed=0, signed=signed, trajectory=trajectory).summary()
        rows.append({"signed": signed, "trajectory": trajectory, "shuffles": n_shuffles,
                     "observed (turns/unit)": s.mean_observed, "null (turns/unit)": s.mean_null,
                     "units with p < 0.05": s.fraction_significant})
rotation_table = pd.DataFrame(rows)
rotation_table.round(3)

# %% [markdown]
# Read the table row by row: is the observed count larger or smaller in size than the null,
# and in what fraction of units does it differ significantly? None of the four need
# reproduce "many rotations against about zero"; the findings table at the end tests the
# paper's sentence as written.
#
# ## 2. Figure 3: a compressing autoencoder
#
# How much of a trajectory survives a squeeze to two dimensions? The paper trains an
# autoencoder on every residual-stream vector (any text, any sublayer): an encoder of
# $k = 10$ layers whose widths shrink geometrically from $d_\text{model}$ to a 2-D bottleneck
# (Linear → LayerNorm → ReLU, the last plain Linear), a mirrored decoder, Adam at
# $10^{-3}$, mean squared error. Each trajectory becomes a path in the 2-D code (3B), with a
# speed there (3C), and the reconstruction says how much of each sublayer two dimensions keep
# (3D, on held-out texts). The paper trained on 85k batches of 64 vectors; we run 3 epochs
# over about 4000 vectors (64 texts x 60 sublayers), a few seconds.

# %%
cae = tld.CompressingAutoencoder(epochs=3, random_state=0, progress=False).fit(dyn)
print(cae, "widths:", cae.widths)
tld.plot.cae_trajectory(cae)

# %%
tld.plot.cae_explained_variance(cae)

# %% [markdown]
# ## 3. Figure 4: principal components and teleports
#
# ### 4A-4C · PCA of all residual-stream vectors
#
# A linear squeeze: one PCA over all texts x sublayers, so one set of axes serves the whole
# depth. 4A draws trajectories in the PC1-PC2 plane, 4B the cumulative explained variance,
# 4C how well the first components reconstruct each sublayer. **Paper:** early layers spread
# their variance over more dimensions than late ones; trajectories curve early, then
# straighten and take longer steps.

# %%
pca = tld.pca_trajectories(dyn, n_components=20, seed=0)
print("cumulative variance of PC1, PC1-2, PC1-10, PC1-20:", pca.cumulative_variance[[0, 1, 9, 19]].numpy().round(3))
tld.plot.pca_plane(pca)

# %%
tld.plot.pca_variance_per_sublayer(pca)

# %% [markdown]
# ### 4D · Teleports
#
# Run one prompt (the paper's "I'm sorry, Dave. I'm afraid I can't do that."), and at one
# layer overwrite its residual stream at the last token with a point of a grid laid over the
# PC1-PC2 plane, mapped back to the stream by the inverse PCA; then let the remaining layers
# run. The unperturbed run is the control. The paper teleports at layers 0, 7, 15, 23 and 31
# of 32; `tld.teleport_layers` scales these to SmolLM2's 30 layers. The paper's abstract
# summarises what it saw as "attractor-like dynamics in the lower layers"; in Fig 4D,
# teleports at the middle layers drift back towards the control path, while those at the
# first layer (0) and the last one shown (31) do not.
#
# *Contraction* is the median over grid points of the final distance to the control divided
# by the distance at injection: below 1, pulled back. We use a 4 x 4 grid (the paper's is
# 10 x 10) to keep this fast; notebook 03 takes teleports apart.

# %%
sweep = tld.teleport_sweep(model, pca, n=4, progress=False)
sweep.to_frame().round(3)

# %%
tld.plot.teleport_quiver(sweep, pca=pca)

# %% [markdown]
# ## 4. The paper's findings on SmolLM2, both conditions
#
# `tl_dynamics.findings` turns each of the paper's qualitative statements into a statistical
# test on the measured numbers: an effect, its 95 % bootstrap interval over texts, and a
# p-value against a null stated in words, Holm-corrected across the findings at 0.01. A
# finding is "yes" only if the test rejects the null in the paper's direction *and* the effect
# reaches a stated minimum size; "no" if it rejects the other way or the interval falls short;
# otherwise "undecided". Nothing is written by hand: where the data disagree with the paper,
# the table says so, in both conditions. The same table heads every `tl-dynamics report`.

# %%
mi, mi_shuffled = dyn.mutual_information(method="binned"), shuffled.mutual_information(method="binned")
null_shuffled = shuffled.rotation_null(n_shuffles=1000, seed=0)
pca_shuffled = tld.pca_trajectories(shuffled, n_components=20, seed=0)
sweep_shuffled = tld.teleport_sweep(model, pca_shuffled, n=4, progress=False)
# Every finding is a test; `decide` corrects their p-values together (Holm), as a report does.
found = {
    "original": decide(dynamics_findings(dyn, mi, null) + trajectory_findings(pca, sweep, dyn)),
    "shuffled": decide(
        dynamics_findings(shuffled, mi_shuffled, null_shuffled)
        + trajectory_findings(pca_shuffled, sweep_shuffled, shuffled)
    ),
}
table = pd.DataFrame(
    {
        "the paper's finding (Llama 3.1 8B)": [f.claim for f in found["original"]],
        "SmolLM2": [f.verdict for f in found["original"]],
        "effect [95% CI], Holm p": [
            f"{f.effect:+.3g} [{f.ci[0]:+.3g}, {f.ci[1]:+.3g}], p={f.p_adjusted:.2g}" for f in found["original"]
        ],
        "observed": [f.observed for f in found["original"]],
        "shuffled control": [f.verdict for f in found["shuffled"]],
        "observed (control)": [f.observed for f in found["shuffled"]],
    },
    index=[f.key for f in found["original"]],
)
pd.set_option("display.max_colwidth", None)
table

# %%
counts = table[["SmolLM2", "shuffled control"]].apply(pd.Series.value_counts).fillna(0).astype(int)
print(f"{counts.loc['yes', 'SmolLM2'] if 'yes' in counts.index else 0} of {len(table)} findings hold on the original texts")
counts

# %% [markdown]
# How to read it. A "no" is a result, not a failure: the paper's statements are about a
# 32-layer, 8-billion-parameter model; SmolLM2 shares its architecture at 135 million
# parameters and 4-bit weights. Two limits of the tests themselves: a per-layer comparison
# "holds" when it holds in more than half the layers, and a trend is Spearman's rank
# correlation with depth. The `numbers` field of each `Finding` holds everything behind a
# verdict.
#
# ## 5. The real thing on a GPU (not executed here)
#
# The same calls run on Llama 3.1 8B with the Hugging Face hub (gated: accept the licence and
# log in), a GPU with about 20 GB free, and `pip install "tl-dynamics[hub]"` for WikiText:
#
# ```python
# model = tld.models.load_model("meta-llama/Llama-3.1-8B", device="cuda", dtype="bfloat16")
# texts = tld.data.wikitext()[:1000]                  # WikiText-2, 100 < len < 500 characters
# dyn = tld.collect(model, texts, batch_size=32, corpus="wikitext")
# null = dyn.to("cuda").rotation_null(n_shuffles=1000, seed=0)
# ```
#
# or the whole notebook as one command, written as an HTML report plus `metrics.json`:
#
# ```bash
# tl-dynamics report --model meta-llama/Llama-3.1-8B --texts wikitext --n 1000 \
#     --device cuda --dtype bfloat16 --batch-size 32 --out llama-3.1-8b
# ```
#
# Next: `03_perturbations` takes the teleports apart; `04_comparing_models` puts SmolLM2,
# Gemma-3 and MiniLM on one depth axis.
