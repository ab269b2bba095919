# %% [markdown]
# # 02b · Figures 2-4: rotations, low-dimensional views, teleports, and the findings (session 2 of 2)
#
# Session 1 (`02a_figure1`) measured how units and states change from one sublayer to the
# next. This session follows the paper's Figures 2-4: single units as oscillators in phase
# space (Fig 2), a two-dimensional squeeze of the trajectories (Fig 3, a compressing
# autoencoder; Fig 4A-C, PCA), and perturbations that "teleport" the state (Fig 4D). It ends
# with every finding of the paper tested on SmolLM2, for the original texts and two matched
# controls: the same tokens shuffled, and the same texts through a random-weight twin.
#
# **Learning objectives.** After this notebook you can
# 1. draw a unit's phase portrait $(a_l, \mathrm{d}a_l/\mathrm{d}l)$ and count its rotations
#    yourself, checked against the library;
# 2. explain why the layer-shuffle null of the rotation count does not give "about zero", and
#    which choices of the count the paper leaves open;
# 3. read Figures 3 and 4 (what two dimensions keep, what a teleport measures);
# 4. read the findings table, and say which findings hold in which condition;
# 5. tell a language-specific finding from a training-specific one, and from one any
#    untrained stack of the same blocks shows, with paired contrasts against two controls.
#
# **Time:** about 95 minutes (four exercises of 3-20 minutes and a bonus). The solved
# notebook runs in about 3-4 minutes on a laptop CPU.

# %% [setup]

# %% [contents]

# %%
import math

import pandas as pd
import torch

import tl_dynamics as tld
from tl_dynamics import testing
from tl_dynamics.findings import contrasts, decide, dynamics_findings, mid_layers_attract, trajectory_findings
from tl_dynamics.stability import DEFAULT_PROMPTS

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
# Follow one portrait from its first point to its last: do its loops run `"clockwise"` or
# `"counter-clockwise"`?

# %% [exercise] title="Read the phase portraits" kind=figure importance=2 difficulty=2 minutes=5
# SOLUTION
answer = "clockwise"    # above the axis (da/dl > 0) the point moves right, below it moves left
# STUB
# answer = ""           # "clockwise" or "counter-clockwise"
# END
testing.check_answer(answer, ["clockwise", "cw"], question="direction of the portraits' loops")

# %% [hint]
# The vertical axis is the derivative of the horizontal one: where the point is above zero,
# its horizontal coordinate must be growing. Which way does that make it go round?

# %% [hint] code
# ```python
# answer = "clockwise"   # or "counter-clockwise": decide from where the point goes when da/dl > 0
# ```

# %% [markdown]
# **Counting rotations** (paper, section 2.6): take the tangent of the portrait at each step,
# $v_l = p_{l+1} - p_l$, its angle $\theta_l = \operatorname{atan2}(v_{l,y}, v_{l,x})$, the change
# of angle from one step to the next wrapped into $(-\pi, \pi]$, and
# $R = \sum_l \Delta\theta_l / 2\pi$ turns, positive counter-clockwise. You count the
# rotations of one unit of the **mean** trajectory (the mean over texts at each sublayer).

# %%
UNIT = int(dyn.unit_order()[-1])       # the unit with the largest mean at the last sublayer
print("unit", UNIT)

# %% [exercise] title="Rotation count of one unit" kind=compute importance=2 difficulty=3 minutes=20
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
# Four steps: the derivative of the trajectory (torch has a central-difference one), the
# points of the portrait, the angle of each step between successive points, and the change
# of that angle, brought back into half a turn either way before you add them up.

# %% [hint] code
# ```python
# (da,) = torch.gradient(a)
# tangents = torch.stack([a, da], dim=-1).diff(dim=0)            # [sublayer - 1, 2]
# theta = torch.atan2(tangents[:, 1], tangents[:, 0])
# wrapped = torch.remainder(theta.diff() + math.pi, 2 * math.pi) - math.pi
# float(wrapped.sum() / (2 * math.pi))
# ```

# %% [markdown]
# The library counts every unit at once, per text (`dyn.rotations()`, `[sample, d_model]`) or
# for the mean trajectory (`trajectory="mean"`). The paper's null hypothesis is "depth order
# does not matter": shuffle each unit's sublayers (1000 times), recompute the derivative and
# count again. **Paper:** 10.74 rotations per unit on average, against about 0 for the null.
#
# **Predict before you run.** With the sublayers of each unit in random order, will the mean
# trajectory turn `"more"` than in the true order, `"fewer"` times, or `"about zero"` times?

# %% [exercise] title="What does the layer-shuffle null count?" kind=predict importance=3 difficulty=2 minutes=5
CHOICES = ("more", "fewer", "about zero")
# SOLUTION
prediction = "more"     # a random order goes up and down at every step: more loops, not none
# STUB
# prediction = ...      # one of CHOICES
# END
testing.check_prediction(prediction, CHOICES)

# %% [hint]
# Picture a smooth curve and the same values in random order: which of the two changes
# direction more often from one sublayer to the next?

# %% [hint] code
# ```python
# prediction = "about zero"   # or "more", "fewer"
# ```

# %%
null = dyn.rotation_null(n_shuffles=1000, seed=0)     # counts the mean trajectory by default
summary = null.summary()
print(f"observed {summary.mean_observed:+.2f} turns per unit, null {summary.mean_null:+.2f}; "
      f"{summary.fraction_significant:.0%} of units differ from their null at p < {summary.alpha}")
outcome = ("about zero" if abs(summary.mean_null) < 1
           else "more" if abs(summary.mean_null) > abs(summary.mean_observed) else "fewer")
testing.check_prediction(prediction, CHOICES, outcome=outcome)
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
clockwise = float((null.observed < 0).double().mean())
print(f"sine, 3 oscillations: {float(sine.observed[0]):+.2f} turns; layer-shuffled: {float(sine.null.mean()):+.2f}")
print(f"SmolLM2 mean trajectory: {summary.mean_observed:+.2f} turns per unit; null {summary.mean_null:+.2f}; cap ±{cap:.0f}")
print(f"units whose mean trajectory turns clockwise (negative count): {clockwise:.1%}")
assert sine.observed[0] < 0 and sine.null.mean() < sine.observed[0], "clockwise, and the null turns more"
assert abs(summary.mean_observed) <= cap and clockwise > 0.95

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
# **Recap.** A unit's phase portrait $(a, \mathrm{d}a/\mathrm{d}l)$ circulates clockwise by
# construction; its turn count is capped by depth, and a layer-shuffled order turns more, not
# zero times, so "rotations against a null" depends on choices the paper leaves open.
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
tld.plot.cae_step_distance(cae)         # 3C: the speed in the 2-D code

# %%
tld.plot.cae_explained_variance(cae)

# %% [markdown]
# **Recap.** The autoencoder squeezes every state to two numbers; 3B draws the paths there,
# 3C their speed, 3D how much of each sublayer two dimensions keep on held-out texts.

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
# by the distance at injection: below 1, pulled back. Later layers have fewer sublayers left,
# so layers are compared per sublayer, `contraction ** (1 / steps)`.
#
# One prompt is not enough to test the paper's pattern: the grid points of one prompt are
# neighbours whose runs move together, so 16 of them are not 16 measurements. The unit is
# the **prompt**. `tl_dynamics.stability.DEFAULT_PROMPTS` holds the paper's line and seven
# prompts of other kinds (prose, code, a list, a question, dialogue, numbers, a definition);
# each gets the same 4 x 4 grid (the paper's is 10 x 10) at the same layers. Notebook 03
# takes teleports apart.

# %%
GRID = 4


def prompt_sweeps(model, pca):
    """One teleport sweep per prompt of DEFAULT_PROMPTS: the same GRID x GRID points, the same layers."""
    return [tld.teleport_sweep(model, pca, n=GRID, prompt=prompt, progress=False) for prompt in DEFAULT_PROMPTS]


sweeps = prompt_sweeps(model, pca)
per_sublayer = pd.DataFrame(
    {prompt[:32]: (frame["contraction"] ** (1 / frame["steps"].clip(lower=1))).to_numpy()
     for prompt, frame in zip(DEFAULT_PROMPTS, (s.to_frame() for s in sweeps))},
    index=pd.Index(sweeps[0].layers, name="layer"),
).T
per_sublayer.round(3)        # contraction per sublayer: one row per prompt, one column per layer

# %%
tld.plot.teleport_quiver(sweeps[0], pca=pca)      # the paper's prompt

# %% [markdown]
# `mid_layers_attract` tests the paper's pattern on these prompts. Per prompt and layer, the
# *pull* is $-\log$ (final distance / distance at injection) per sublayer, averaged over the
# grid points (0: no pull; 0.1: about 10 % closer per sublayer; negative: pushed away). The
# effect is the middle layers' mean pull minus the stronger of the first and last layers'
# pulls, bootstrapped over the 8 prompts; the minimum effect that counts is
# `tl_dynamics.findings.MIN_LOG_PULL` per sublayer. Its verdict is "yes" (the middle layers
# pull back faster, by at least that much), "no" (they fall short of it) or "undecided"
# (the interval over prompts reaches both sides of it). The cell prints which, with the
# numbers it rests on. (Alone, it is corrected only for itself; in the findings table it is
# corrected together with the other findings, which can turn a narrow verdict into
# "undecided".)

# %%
attract = mid_layers_attract(sweeps)
print(f"mid_layers_attract over {len(sweeps)} prompts: {attract.verdict}")
print(attract.observed)
pulls = dict(zip(sweeps[0].layers, attract.numbers["pull_per_sublayer"]))
print("layers whose teleports end further from the control than they started (negative mean pull):",
      [layer for layer, pull in pulls.items() if pull < 0])

# %% [markdown]
# **Recap.** PCA gives one set of axes for the whole depth (4A-4C); a teleport writes a point
# of the PC1-PC2 plane into the stream at one layer and follows the run (4D). The prompt is
# the unit of the teleport test: 8 prompts, one grid each, and the verdict above is computed
# from them.

# %% [markdown]
# ## 4. The paper's findings on SmolLM2, both conditions
#
# **Bonus, before you run the next cell.** The shuffled control's units: will their mean
# trajectories turn `"more"` times than the original texts', `"fewer"` times, or `"about the
# same"` (within 5 %)? The cell after the findings table tells.

# %% [exercise] title="Rotations of the shuffled control" kind=predict bonus importance=1 difficulty=2 minutes=5
CONTROL_CHOICES = ("more", "fewer", "about the same")
# SOLUTION
control_prediction = "about the same"   # the count is set by the formula and the depth more than by the text
# STUB
# control_prediction = ...      # "more", "fewer" or "about the same"
# END
testing.check_prediction(control_prediction, CONTROL_CHOICES)

# %% [hint]
# The count is of the *mean* trajectory over texts. Does shuffling each text make the texts
# agree more or less with each other, and what does averaging disagreeing texts do to a curve?

# %% [hint] code
# ```python
# control_prediction = "more"   # or "fewer", "about the same"
# ```

# %% [markdown]
# `tl_dynamics.findings` turns each of the paper's qualitative statements into a test. Each
# finding is one number, the *effect* (its unit in `effect_unit`), and a minimum size in the
# paper's direction that counts as the finding (`min_effect`, a named constant with its
# reason). The texts are resampled (the bootstrap, `N_RESAMPLES` times; for the teleports,
# the prompts): the 95 % interval is the basic bootstrap interval, and two one-sided p-values ask
# whether the effect passes the minimum (`p_value`) or falls short of it (`p_short`). All
# these p-values of one condition are corrected together (Holm) at 0.01: "yes" when the first
# passes, "no" when the second does, "undecided" when neither does (or when there are too
# few texts or prompts; `observed` says why). Where a permutation null exists (layer orders
# for the rotations, sign flips of whole texts for the signs) the "yes" test must beat it
# too. Nothing is written by hand: where the data disagree with the paper, the table says
# so. The same table heads every `tl-dynamics report`.

# %%
def all_findings(dyn, null, pca, sweeps):
    """The paper's 15 findings in one condition, decided together (Holm), as a report does."""
    mi = dyn.mutual_information(method="binned")
    return decide(dynamics_findings(dyn, mi, null) + trajectory_findings(pca, sweeps, dyn))


null_shuffled = shuffled.rotation_null(n_shuffles=1000, seed=0)
pca_shuffled = tld.pca_trajectories(shuffled, n_components=20, seed=0)
# a control's teleports run the same prompts in the control's own PCA plane, as a report does
found = {
    "original": all_findings(dyn, null, pca, sweeps),
    "shuffled": all_findings(shuffled, null_shuffled, pca_shuffled, prompt_sweeps(model, pca_shuffled)),
}
table = pd.DataFrame(
    {
        "the paper's finding (Llama 3.1 8B)": [f.claim for f in found["original"]],
        "SmolLM2": [f.verdict for f in found["original"]],
        "effect [95% CI]": [f"{f.effect:+.3g} [{f.ci[0]:+.3g}, {f.ci[1]:+.3g}]" for f in found["original"]],
        "min effect": [f.min_effect for f in found["original"]],
        "Holm p: passes / falls short": [f"{f.p_adjusted:.2g} / {f.p_short_adjusted:.2g}" for f in found["original"]],
        "observed": [f.observed for f in found["original"]],
        "shuffled control": [f.verdict for f in found["shuffled"]],
        "observed (control)": [f.observed for f in found["shuffled"]],
    },
    index=[f.key for f in found["original"]],
)
pd.set_option("display.max_colwidth", None)
table

# %%
shuffled_turns = null_shuffled.summary().mean_observed
ratio = abs(shuffled_turns) / abs(summary.mean_observed)
control_outcome = "about the same" if abs(ratio - 1) < 0.05 else "more" if ratio > 1 else "fewer"
print(f"mean turns per unit: original {summary.mean_observed:+.2f}, shuffled {shuffled_turns:+.2f}")
testing.check_prediction(control_prediction, CONTROL_CHOICES, outcome=control_outcome)

# %%
counts = table[["SmolLM2", "shuffled control"]].apply(pd.Series.value_counts).fillna(0).astype(int)
for column in counts:
    print(f"{column}: {counts[column].get('yes', 0)} of {len(table)} findings hold, "
          f"{counts[column].get('no', 0)} do not, {counts[column].get('undecided', 0)} undecided")
print("hold on the original texts:", list(table.index[table["SmolLM2"] == "yes"]))
print("teleports, in the table:", table.loc["mid_layers_attract", "SmolLM2"])
counts

# %% [markdown]
# How to read it. A "no" is a result, not a failure: the paper's statements are about a
# 32-layer, 8-billion-parameter model; SmolLM2 shares its architecture at 135 million
# parameters and 4-bit weights. The designs keep an order over depth from passing for the
# paper's structure: a trend compares the last third of depth with the first third (so a curve
# that is low only at its first few steps, as 02a found the cosine, can pass it); a
# within-layer step is compared with the mean of *both* neighbouring cross-layer steps (so a
# steady trend cancels); the PCA findings fit their axes on half of the texts and measure the
# other half. The `numbers` field of each `Finding` holds everything behind a verdict.
#
# **Recap.** Each of the paper's statements is a test with an effect, an interval, a minimum
# effect and two Holm-corrected p-values, run on the original texts and on the shuffled
# control; the counts above are computed from the table, not written down.
#
# ## 5. Two controls: language-specific or training-specific?
#
# A finding that holds on SmolLM2 can hold for three different reasons, and each control
# rules one out:
#
# * **language-specific**: it needs the text in its order. The shuffled control keeps the
#   model and the tokens but not their order (nor, 02a showed, the token read); if the
#   original texts show *more* of a finding than the shuffled ones, it depends on them.
# * **training-specific**: it needs the learnt weights. A *random-weight twin*
#   (`tld.random_weight_twin(model, seed=0)`) has SmolLM2's architecture with every weight
#   drawn afresh, as before training; the same texts through it show what the architecture
#   alone does.
# * **any depth ordering gives it**: any stack of these blocks, run in depth order, shows it,
#   trained or not. Then the finding, however true, says nothing about what the model learnt.
#
# Verdicts per condition cannot tell these apart: "yes" in both can hide a much larger effect
# in one. `tl_dynamics.findings.contrasts(original, control, name)` takes the paired difference
# original minus control, finding by finding. Both conditions run the same texts with the same
# bootstrap draws, so each resampled difference is paired. Its verdict is "higher" (the
# original shows more of the finding), "lower", "same" (the interval lies within the finding's
# minimum effect either side) or "undecided", Holm-corrected over the findings of one control.
#
# **Predict before you run the twin.** Figure 1E has two findings: the cosine of successive
# sublayers rises with depth (`cosine_rises`), and within-layer steps are more aligned than
# cross-layer ones (`cosine_within_above_cross`). Which will the untrained twin also show
# (verdict "yes"): `"cosine rises"`, `"within above cross"`, `"both"` or `"neither"`?

# %% [exercise] title="What does an untrained twin show?" kind=predict importance=3 difficulty=2 minutes=5
TWIN_CHOICES = ("cosine rises", "within above cross", "both", "neither")
# SOLUTION
twin_prediction = "cosine rises"    # a stream that keeps growing aligns successive states; the kinds need trained updates
# STUB
# twin_prediction = ...             # one of TWIN_CHOICES
# END
testing.check_prediction(twin_prediction, TWIN_CHOICES)

# %% [hint]
# An untrained block still adds its output to the stream. What happens to the angle between
# successive states when every update is about the same size and the stream keeps growing?
# And is there anything in random weights that makes an attention update smaller than an MLP
# update?

# %% [hint] code
# ```python
# twin_prediction = "both"   # or "cosine rises", "within above cross", "neither"
# ```

# %%
twin = tld.random_weight_twin(model, seed=0)
dyn_twin = tld.collect(twin, texts, batch_size=16, corpus="python-docs", progress=False)
pca_twin = tld.pca_trajectories(dyn_twin, n_components=20, seed=0)
found["random twin"] = all_findings(dyn_twin, dyn_twin.rotation_null(n_shuffles=1000, seed=0), pca_twin,
                                    prompt_sweeps(twin, pca_twin))
del twin
verdicts = pd.DataFrame({condition: {f.key: f.verdict for f in fs} for condition, fs in found.items()})
FIG_1E = {"cosine rises": "cosine_rises", "within above cross": "cosine_within_above_cross"}
shown = [name for name, key in FIG_1E.items() if verdicts.loc[key, "random twin"] == "yes"]
twin_outcome = "both" if len(shown) == 2 else shown[0] if shown else "neither"
print("Fig 1E on the random-weight twin:", {name: verdicts.loc[key, "random twin"] for name, key in FIG_1E.items()})
testing.check_prediction(twin_prediction, TWIN_CHOICES, outcome=twin_outcome)

# %%
contrast = {
    control: contrasts(found["original"], found[condition], control)
    for control, condition in (("shuffled", "shuffled"), ("random_twin", "random twin"))
}
contrast_table = verdicts.copy()
for control, rows in contrast.items():
    contrast_table[f"vs {control}"] = [c.verdict for c in rows]
    contrast_table[f"vs {control}: difference [95% CI]"] = [
        f"{c.effect:+.3g} [{c.ci[0]:+.3g}, {c.ci[1]:+.3g}]" for c in rows
    ]
contrast_table

# %% [markdown]
# Read the contrasts of the findings that hold on the original texts, in three groups:
# **language-specific** ("higher" than on shuffled text), **training-specific** ("higher"
# than on the twin), and **any depth ordering gives it** (the twin shows it too, and its
# contrast is "same" or "lower": the untrained stack shows as much of it or more). The
# groups overlap: a finding can be language- and training-specific at once, or
# language-specific while an untrained twin shows as much of it (the text's order then sets
# its size, the training does not); one in no group is not separated by these controls. The cell sorts them from the table and asserts two cases of Figure 1E: the
# cosine's rise with depth is given by any depth ordering, so on its own it says nothing
# about what SmolLM2 learnt, while the within-layer over cross-layer cosine is
# training-specific.

# %%
holds = [key for key in verdicts.index if verdicts.loc[key, "original"] == "yes"]
column = {control: {c.key: c.verdict for c in rows} for control, rows in contrast.items()}
groups = {
    "language-specific": [k for k in holds if column["shuffled"][k] == "higher"],
    "training-specific": [k for k in holds if column["random_twin"][k] == "higher"],
    "any depth ordering gives it": [
        k for k in holds if verdicts.loc[k, "random twin"] == "yes" and column["random_twin"][k] in ("same", "lower")
    ],
}
groups["not separated"] = [k for k in holds if not any(k in keys for keys in groups.values())]
for group, keys in groups.items():
    print(f"{group}: {keys}")
assert "cosine_rises" in groups["any depth ordering gives it"]
assert "cosine_within_above_cross" in groups["training-specific"]

# %% [markdown]
# A finding that an untrained twin shows as well is something this architecture does to any
# input, not something it learnt; the matched controls, not the verdicts alone, are what
# separate the three readings. `tl-dynamics report` runs both
# controls and prints the same contrasts beside its findings table.
#
# **Recap.** The shuffled control asks "language-specific?", the random-weight twin
# "training-specific?"; a paired contrast, original minus control, answers each per finding,
# and a finding the twin shows as strongly is one any depth ordering gives.
#
# ## 6. The real thing on a GPU (not executed here)
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
# **Recap.** Everything above scales to the paper's model by changing the model's name, the
# corpus and the device.
#
# Next: `03_perturbations` takes the teleports apart; `04_comparing_models` puts SmolLM2,
# Gemma-3 and MiniLM on one depth axis.
