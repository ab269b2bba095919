# %% [markdown]
# # 03 · Perturbations: teleporting the residual stream
#
# A dynamical system is known by what it does after a kick. Push a pendulum and it swings
# back; push a ball on a hilltop and it rolls away. If depth is time, we can kick the residual
# stream mid-flight, by writing a vector of our choosing into it at one layer, and watch what
# the remaining layers do with it.
#
# Fernando & Guitchounts (2025, Fig 4D) run one prompt, "I'm sorry, Dave. I'm afraid I can't
# do that.", through Llama 3.1 8B. At one layer they overwrite the stream at the last token
# with each point of a $10 \times 10$ grid in the plane of the first two principal components,
# then follow every run for the next 12 sublayers. Their abstract summarises the result as
# "attractor-like dynamics in the lower layers": in the figure, runs teleported at the middle
# layers (7, 15, 23 of 32) drift back towards the unperturbed path, and runs teleported at the
# first layer (0) or the last one shown (31) do not.
#
# **Learning objectives.** After this notebook you can
# 1. write a teleport yourself with a TransformerLens hook, and check it against `tld.teleport`;
# 2. verify that an intervention perturbs nothing when it writes the state already there;
# 3. measure recovery (distance, contraction, relative contraction) and read Fig 4D's quiver plots;
# 4. tell recovery learnt by the weights from recovery forced by normalisation (SmolLM2 vs MiniLM);
# 5. say what "attractor-like" can and cannot mean for a network of finite depth.
#
# **Time:** about 75 minutes (three exercises of 5-15 minutes and a bonus). The solved
# notebook runs in about 3 minutes on a laptop CPU.

# %% [setup]

# %% [contents]

# %%
import pandas as pd
import torch

import tl_dynamics as tld
from tl_dynamics import testing

model = tld.models.load_model("smollm2-135m", device=DEVICE)
texts = tld.data.python_docs()[:64]
dyn = tld.collect(model, texts, batch_size=16, progress=False)
print(dyn)
print(model.to_str_tokens(tld.DEFAULT_PROMPT))

# %% [markdown]
# ## 1. The plane and the grid
#
# The grid lives in the plane of the first two principal components of all states of all
# texts and sublayers (notebook 02b, Fig 4A). `tld.pca_grid` spaces $n$ values along each axis
# over the range the trajectories cover and maps each plane point $z$ back to the stream as
# $x = z V_{:2}^\top + \mu$: the PCA mean plus the two plane coordinates, every other component
# zero. So a grid point looks like a typical state in the plane's two directions and like the
# *average* state in all others.

# %%
pca = tld.pca_trajectories(dyn, n_components=20, seed=0)
grid = tld.pca_grid(pca, n=6)
print(grid.plane_points.shape, grid.points.shape)     # [36, 2] plane coordinates, [36, d_model] vectors

figure = tld.plot.pca_plane(pca)
figure.add_scatter(x=grid.plane_points[:, 0].tolist(), y=grid.plane_points[:, 1].tolist(), mode="markers",
                   marker={"symbol": "x", "color": "#d62728", "size": 6}, name="teleport grid")
figure

# %% [markdown]
# **Recap.** A grid point is a state of the PC1-PC2 plane, mapped back to the stream with
# every other principal component at its mean.

# %% [markdown]
# ## 2. One teleport, by hand
#
# A teleport is one forward pass with a hook. TransformerLens calls a hook function on the
# activation at a hook point and uses what it returns, so a hook on
# `blocks.{LAYER}.hook_resid_pre` that writes `POINT` at the last token position replaces the
# state before block `LAYER` reads it. Record the stream at the last token at every
# `hook_resid_pre` and `hook_resid_mid` (in the order `0_pre, 0_mid, 1_pre, ...`) and you have
# the teleported trajectory, `[sublayer, d_model]`.

# %%
LAYER = model.cfg.n_layers // 2
POINT = grid.points[0]                                   # a corner of the grid
print(f"teleport at layer {LAYER}, sublayer {2 * LAYER} of {2 * model.cfg.n_layers}")

# %% [exercise] title="A teleport with a hook" kind=compute importance=3 difficulty=2 minutes=15
from torch import Tensor


def my_teleport(model, prompt: str, layer: int, point: Tensor) -> Tensor:
    """Trajectory [sublayer, d_model] at the last token when blocks.{layer}.hook_resid_pre is overwritten."""
    # SOLUTION
    names = [f"blocks.{l}.hook_resid_{site}" for l in range(model.cfg.n_layers) for site in ("pre", "mid")]

    def write(activation, hook):
        activation[:, -1] = point.to(activation.device, activation.dtype)
        return activation

    with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", write)]):
        _, cache = model.run_with_cache(prompt, names_filter=lambda name: name in names)
    return torch.stack([cache[name][0, -1] for name in names]).float().cpu()
    # STUB
    # return torch.zeros(2 * model.cfg.n_layers, model.cfg.d_model)
    # END


testing.check_teleport(my_teleport(model, tld.DEFAULT_PROMPT, LAYER, POINT), model, layer=LAYER, point=POINT)

# %% [hint]
# Two pieces: a hook function that overwrites the last position and returns the activation,
# and a run with that hook attached that also caches every read point; then pick the last
# token of each cached read point, in depth order.

# %% [hint] code
# ```python
# def write(activation, hook):
#     activation[:, -1] = point.to(activation.device, activation.dtype)
#     return activation
#
# with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", write)]):
#     _, cache = model.run_with_cache(prompt, names_filter=lambda name: name in names)
# torch.stack([cache[name][0, -1] for name in names])    # names: every hook_resid_pre / _mid
# ```

# %% [markdown]
# `tld.teleport` does the same for many points at once (each row of a batch is the prompt
# with a different point), runs the unperturbed control next to them, and keeps the logits.

# %%
result = tld.teleport(model, layer=LAYER, points=grid, pca=pca)
print(result.trajectories.shape, "runs x sublayers x d_model; control", tuple(result.control.shape))

# %% [markdown]
# **Recap.** A teleport is one hook that overwrites the stream at the last token; `tld.teleport`
# runs a batch of them beside the unperturbed control.

# %% [markdown]
# ## 3. The null teleport
#
# Before trusting any perturbation, check that the machinery perturbs nothing: write the
# control's *own* state at the injection point. The run must reproduce the control at every
# later sublayer and in the logits. (Its contraction is `nan`: a run never displaced has
# nothing to recover from.)

# %%
own_state = result.control[result.injection]
null_teleport = tld.teleport(model, layer=LAYER, points=own_state[None])
trajectory_error = float((null_teleport.trajectories[0] - null_teleport.control).abs().max())
logit_error = float((null_teleport.logits[0] - null_teleport.control_logits).abs().max())
print(f"max |trajectory - control| {trajectory_error:.2g} · max |logits - control logits| {logit_error:.2g}")
assert trajectory_error == 0 and logit_error == 0

# %% [markdown]
# **Recap.** Writing the state already there changes nothing, to the last bit: the machinery
# itself perturbs nothing.

# %% [markdown]
# ## 4. Measuring recovery
#
# `TeleportResult.recovery()` follows every run from the injection to the last sublayer and
# measures, at each step, its distance to the control: `distance` in the model's units,
# `normalised` (divided by the displacement at the injection: 1 at step 0, below 1 pulled
# back), the paper's `mse`, `relative` (divided by the control's own norm at that sublayer,
# which cancels the stream's growth with depth) and the same in the PC1-PC2 plane.
# `contraction` is the median over runs of `normalised` at the last sublayer;
# `relative_contraction` asks the same of `relative`.
#
# First the central one yourself: the distance of every run to the control at every sublayer
# from the injection on, divided by that run's distance at the injection.

# %% [exercise] title="Normalised distance to the control" kind=compute importance=3 difficulty=2 minutes=10
def my_normalised_distance(result) -> Tensor:
    """[run, step] distance to the control from the injection on, over the distance at step 0."""
    # SOLUTION
    runs = result.trajectories[:, result.injection:].double()       # [run, step, d_model]
    control = result.control[result.injection:].double()             # [step, d_model]
    distance = (runs - control).norm(dim=-1)                         # [run, step]
    return distance / distance[:, :1]
    # STUB
    # return torch.ones(result.trajectories.shape[0], len(result.labels) - result.injection)
    # END


testing.check_recovery(my_normalised_distance(result), result)

# %% [hint]
# `result.trajectories` is `[run, sublayer, d_model]`, `result.control` `[sublayer, d_model]`,
# and `result.injection` the sublayer written. Cut both from the injection on, measure the
# distance per step, and divide each run by its own first value.

# %% [hint] code
# ```python
# runs = result.trajectories[:, result.injection:].double()
# distance = (runs - result.control[result.injection:].double()).norm(dim=-1)   # [run, step]
# distance / distance[:, :1]
# ```

# %%
recovery = result.recovery()
print(f"contraction {recovery.contraction:.3f} · relative_contraction {recovery.relative_contraction:.3f}")
steps = recovery.to_frame().groupby(["step", "label"])[["distance", "normalised", "relative", "plane_normalised"]]
steps.median().round(3).iloc[::4]

# %% [markdown]
# **Recap.** Recovery is a distance to the control over the steps after the injection; below 1
# after normalising means pulled back, and `relative` cancels the stream's own growth.

# %% [markdown]
# ## 5. The sweep over layers, and reading Fig 4D
#
# `tld.teleport_sweep` teleports the same grid at the paper's layers scaled to the model's
# depth. In each quiver panel the grey path is the control in the PC1-PC2 plane, the dots are
# the grid points as written, and the arrows follow each run for up to 12 sublayers. Arrows
# converging on the grey path mean the layers pull states back; arrows that fan out or run in
# parallel mean the displacement is kept. Two cautions: the plane shows 2 of 576 dimensions
# (compare `plane_contraction` with `contraction`), and later injections have fewer steps
# left to recover, so layers are compared per sublayer: `contraction ** (1 / steps)`.

# %%
sweep = tld.teleport_sweep(model, pca, n=5, progress=False)
table = sweep.to_frame()
table["per sublayer"] = table["contraction"] ** (1 / table["steps"].clip(lower=1))
table.round(3)

# %%
tld.plot.teleport_quiver(sweep, pca=pca)

# %% [markdown]
# Is this the paper's pattern, middle layers pulling back faster than the first and the last?
# One prompt cannot say: its grid points are neighbours whose runs move together, so the
# `mid_layers_attract` finding (notebook 02b) needs at least `MIN_PROMPTS` prompts, and calls
# one prompt undecided (asserted below). Over the 8 prompts of `DEFAULT_PROMPTS`, the paper's
# line first (so the sweep above is reused), the same test decides; the cell prints the
# verdict with its numbers, and section 8 reads it.

# %%
from tl_dynamics.findings import MIN_PROMPTS, mid_layers_attract
from tl_dynamics.stability import DEFAULT_PROMPTS

one_prompt = mid_layers_attract(sweep)
print(f"one prompt: {one_prompt.verdict} ({one_prompt.observed})")
assert one_prompt.verdict == "undecided" and len(DEFAULT_PROMPTS) >= MIN_PROMPTS
assert DEFAULT_PROMPTS[0] == tld.DEFAULT_PROMPT
sweeps = [sweep] + [tld.teleport_sweep(model, pca, n=5, prompt=prompt, progress=False) for prompt in DEFAULT_PROMPTS[1:]]
attract = mid_layers_attract(sweeps)
print(f"{len(sweeps)} prompts: {attract.verdict}\n{attract.observed}")

# %% [markdown]
# **Recap.** Layers are compared per sublayer (`contraction ** (1 / steps)`), and the plane
# shows 2 of 576 dimensions: read the quivers beside the table. The prompt is the unit of the
# test: one prompt leaves it undecided, eight decide it or say why not.

# %% [markdown]
# ## 6. Learnt or forced? A pre-norm and a post-norm model
#
# SmolLM2, like Llama, normalises only what each sub-block *reads*; the stream itself is never
# renormalised, and each block adds its output to it. Nothing in the architecture bounds a
# displacement, so any recovery is done by the trained weights. MiniLM (a BERT encoder) is
# **post**-LayerNorm: the stream itself is renormalised after every sub-block, so a point
# written far out is pulled back to the usual radius one sublayer later, whatever the weights
# learnt.
#
# **Predict before you run.** Teleport both models at their middle layer with a 6 x 6 grid,
# then compare the largest and the smallest norm among the runs, at the injection and one
# sublayer later. In which model does that spread collapse within one sublayer: `"SmolLM2"`,
# `"MiniLM"`, `"both"` or `"neither"`?

# %% [exercise] title="Learnt or forced?" kind=predict importance=3 difficulty=2 minutes=5
MODELS = ("SmolLM2", "MiniLM", "both", "neither")
# SOLUTION
prediction = "MiniLM"   # post-LayerNorm renormalises the stream itself after every sub-block
# STUB
# prediction = ...      # one of MODELS
# END
testing.check_prediction(prediction, MODELS)

# %% [hint]
# Which of the two architectures rescales the stream itself, rather than only the copy each
# sub-block reads?

# %% [hint] code
# ```python
# prediction = "SmolLM2"   # or "MiniLM", "both", "neither"
# ```

# %%
def norm_squeeze(result):
    norms = result.trajectories.norm(dim=-1)
    at, after = norms[:, result.injection], norms[:, result.injection + 1]
    return {"max/min norm at injection": float(at.max() / at.min()),
            "max/min norm one sublayer later": float(after.max() / after.min()),
            "contraction": result.recovery().contraction}


minilm = tld.models.load_model("minilm", device=DEVICE)
minilm_pca = tld.pca_trajectories(tld.collect(minilm, texts, batch_size=16, progress=False), n_components=20, seed=0)
minilm_result = tld.teleport(minilm, layer=minilm.cfg.n_layers // 2, points=tld.pca_grid(minilm_pca, n=6))
squeeze = pd.DataFrame({"SmolLM2": norm_squeeze(result), "MiniLM": norm_squeeze(minilm_result)})
# "collapses": one sublayer later the spread (max/min) is less than a quarter of what was written
collapsed = [name for name in squeeze
             if squeeze.loc["max/min norm one sublayer later", name] < squeeze.loc["max/min norm at injection", name] / 4]
outcome = collapsed[0] if len(collapsed) == 1 else "both" if collapsed else "neither"
testing.check_prediction(prediction, MODELS, outcome=outcome)
assert collapsed == ["MiniLM"]
squeeze.round(3)

# %% [markdown]
# In the post-LayerNorm model the spread of norms collapses within one sublayer (to less than
# a quarter, asserted above); in SmolLM2 it does not. So a contraction below 1 in MiniLM says little
# about learnt dynamics, and the same number in SmolLM2 says more.
#
# **Recap.** Recovery can be learnt (pre-norm: nothing but the weights can pull a state back)
# or forced (post-norm: every sub-block renormalises the stream).
#
# ## 7. Subtler kicks: noise and swapped activations
#
# The paper names these as future work. `tld.inject_noise` adds to the control's state a
# random direction scaled to a fraction of its norm (here 10%); `tld.swap_activations` writes
# the state that *other texts* have at the same point, a realistic off-path state rather than
# a synthetic one. Both return a `TeleportResult`, measured the same way. The grid's points are
# written far from the path (the cell prints how far, relative to the control's own norm),
# where a run has much room to come back; a 10 % kick starts close, so it asks whether the
# flow contracts *around* the path.
#
# **Bonus, predict before you run:** at most of the paper's layers, will a 10 % noise kick
# contract `"more"` or `"less"` than a grid teleport (a lower contraction is more)?

# %% [exercise] title="Large and small kicks" kind=predict bonus importance=1 difficulty=2 minutes=5
# SOLUTION
kick_prediction = "less"    # a small kick has less to recover from than a point written far away
# STUB
# kick_prediction = ...     # "more" or "less"
# END
testing.check_prediction(kick_prediction, ("more", "less"))

# %% [hint]
# Think of where each run starts: how far from the control, relative to the control's own
# norm, and how much room that leaves to come back.

# %% [hint] code
# ```python
# kick_prediction = "more"   # or "less"
# ```

# %%
displacement = float(recovery.relative[:, 0].median())
print(f"grid teleport at layer {LAYER}: median displacement {displacement:.2f} x the control's norm; noise: 0.10")
assert displacement > 0.1
kicks = pd.DataFrame([
    {"layer": layer, "contraction (10% noise)": tld.inject_noise(model, layer=layer, scale=0.1, n=16, seed=0).recovery().contraction}
    for layer in sweep.layers
]).merge(table[["layer", "steps", "contraction"]].rename(columns={"contraction": "contraction (grid)"}), on="layer")
kick_outcome = "more" if (kicks["contraction (10% noise)"] < kicks["contraction (grid)"]).mean() > 0.5 else "less"
testing.check_prediction(kick_prediction, ("more", "less"), outcome=kick_outcome)
kicks.round(3)

# %%
swap = tld.swap_activations(model, layer=LAYER, donors=texts[:16], pca=pca)
figure = tld.plot.teleport_recovery([result, swap])
for trace, name in zip(figure.data, ["PCA-grid teleport", "swapped-in donor states"]):
    trace.name = f"{name} · layer {LAYER}"
figure

# %% [markdown]
# **Recap.** A small random kick and a realistic swapped-in state are measured like a
# teleport; beside the grid they ask whether the flow contracts around the path, not only
# from far away.
#
# ## 8. What "attractor-like" does and does not mean
#
# An attractor is a set of states that nearby states approach and then stay in, for all
# future time, under a fixed rule. A transformer's depth offers neither: it ends after $2L$
# steps, and every layer applies a different function. What a teleport can show is narrower:
# whether runs started off the control path end up closer to it.
#
# * **Contraction towards the control path is not a fixed point.** The control itself moves
#   at every sublayer; runs converging onto it are trajectories converging onto each other.
# * **Contraction from far away can be forced by the architecture** (section 6).
# * **Large and small kicks can disagree** (section 7): compare the two contraction columns.
# * **Two dimensions can flatter**: `plane_contraction` against `contraction` (section 5).
# * **The stream is not the output.** A run can return near the control path and still change
#   the prediction; compare `result.logits` with `result.control_logits`.
#
# Do SmolLM2's teleports fit the paper's pattern at all? Section 5's verdict over 8 prompts,
# in words:

# %%
READING = {
    "yes": "SmolLM2's middle layers pull teleported states back faster per sublayer than its first and "
           "last layers, across prompts: the paper's pattern, within the cautions above.",
    "no": "SmolLM2's middle layers do not pull teleported states back faster per sublayer than its first "
          "and last layers by the minimum effect, across prompts: the paper's pattern is not seen here.",
    "undecided": "8 prompts do not decide whether SmolLM2's middle layers pull teleported states back faster "
                 "per sublayer than its first and last layers: the interval reaches both sides of the minimum effect.",
}
print(f"mid_layers_attract: {attract.verdict}. {READING[attract.verdict]}")
print(f"middle minus stronger edge pull {attract.effect:+.4f} [{attract.ci[0]:+.4f}, {attract.ci[1]:+.4f}] "
      f"per sublayer; minimum effect {attract.min_effect}")

# %% [markdown]
# **Recap.** A teleport shows whether runs end up closer to the control path, no more: read
# it beside the architecture, the size of the kick, the plane and the logits.
