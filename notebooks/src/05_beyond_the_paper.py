# %% [markdown]
# # 05 · Beyond the paper: dynamics that do not depend on the basis, and local stability
#
# The paper's two headline dynamical claims rest on measures a careful reviewer questions.
#
# * **Rotations are counted unit by unit** (Fig 2), in the residual stream's coordinate axes. Nothing in a transformer's additive updates singles those axes out (the stream has no *privileged basis*), so a per-unit count may describe the axes rather than the dynamics. We count again after a random rotation of the axes and along the principal axes, and we ask the population-level question with **jPCA** (Churchland et al. 2012): is the flow over depth a rotation, $\dot z = z M$ with $M$ skew-symmetric?
# * **"Attractor-like"** is read off teleports in a 2-D PCA plane (Fig 4D) while the stream's norm grows with depth, so a shrinking distance may only be a growing state. We measure **local stability** directly: the singular values of the Jacobian from one sublayer to a later one, as finite-time Lyapunov exponents, raw and normalised by the state's own growth.
# * Finally, **Dynamical Similarity Analysis** (Ostrow et al. 2023) compares how two models' streams *move*, up to a change of coordinates, against two controls: the same model on shuffled text and a random-weight twin.
#
# Every verdict here is a test against a null, and every null is also run on noise.
#
# **Learning objectives.** After this notebook you can
# 1. design a permutation null for "rises with depth", check it on noise, and say what it
#    cannot tell apart from a trend;
# 2. test whether a per-unit rotation count survives a change of basis;
# 3. fit jPCA over depth and compare its rotational fit with a layer-shuffle null;
# 4. measure local stability with matrix-free Jacobian spectra, beside teleports;
# 5. compare dynamics across conditions with Dynamical Similarity Analysis.
#
# **Time:** about 60 minutes (two exercises of 5-20 minutes and a bonus). The solved notebook runs in about 11 minutes on a shared 2-core CPU (SmolLM2, with Gemma-3 where it is cheap); the others take 1-3 minutes.

# %% [setup] gemma dsa

# %% [contents]

# %% [markdown]
# ## Set-up
#
# SmolLM2-135M (Llama family, 30 layers, d_model 576) is the library's default model and a decoder like the paper's Llama 3.1 8B. Set `MODEL = "gemma-3-270m"` (Gemma family, 18 layers) or `"minilm"` (post-LayerNorm BERT, 6 layers, fastest) to ask the same questions of another family: every cell runs unchanged. The last section brings Gemma-3 in beside SmolLM2.

# %%
import torch
import pandas as pd

import tl_dynamics as tld
from tl_dynamics import testing
from tl_dynamics.metrics import rotation_null

MODEL = "smollm2-135m"                          # or "gemma-3-270m", "minilm"
model = tld.models.load_model(MODEL, device=DEVICE)
texts = tld.data.python_docs()[:64]
dyn = tld.collect(model, texts, batch_size=32, progress=False)
shuffled = tld.collect(model, texts, batch_size=32, shuffle=True, progress=False)
print(dyn)

# %% [markdown]
# ## 1. A null for "rises with depth", checked on noise
#
# Many of the paper's sentences say that a quantity rises (or falls) with depth. The simplest
# test of "rises" is a permutation test: the statistic is the covariance of the values with
# their position, and the null hypothesis, "the order does not matter", is drawn by putting
# the same values in random orders. The p-value counts the observed order as one of the
# orders: $p = (1 + \#\{\text{null} \ge \text{observed}\}) / (1 + n)$, never 0. Write it, then see
# what it does on noise.

# %% [exercise] title="A permutation null for a trend over depth" kind=control importance=3 difficulty=2 minutes=20
def my_order_p_value(values: torch.Tensor, n_shuffles: int, seed: int) -> float:
    """One-sided p-value that values [point] rise with their position, against random orders."""
    # SOLUTION
    generator = torch.Generator().manual_seed(seed)
    position = torch.arange(len(values), dtype=torch.float64)
    position = position - position.mean()
    values = values.double()

    def slope(v):                               # covariance with the position, for each row
        return (v - v.mean(-1, keepdim=True)) @ position

    orders = torch.stack([torch.randperm(len(values), generator=generator) for _ in range(n_shuffles)])
    null = slope(values[orders])                # [n_shuffles]
    return float((1 + (null >= slope(values)).sum()) / (1 + n_shuffles))
    # STUB
    # return 0.5
    # END


testing.check_order_null(my_order_p_value)

# %% [hint]
# Centre the positions; the statistic is then a dot product with the centred values. Draw the
# random orders from one generator seeded with `seed`, compute the statistic of every
# reordered copy, and count how many reach the observed one, plus one for the observed.

# %% [hint] code
# ```python
# orders = torch.stack([torch.randperm(len(values), generator=generator) for _ in range(n_shuffles)])
# null = (values[orders] - values.mean()) @ position          # position: centred arange
# (1 + (null >= observed).sum()) / (1 + n_shuffles)
# ```

# %% [markdown]
# Now the null on three kinds of sequence of 60 points, as many as SmolLM2 has sublayers:
# iid noise (no order at all), random walks (each point the previous one plus noise: no
# trend, but strong order) and this model's mean norm over depth. The check above already
# showed that the test rejects noise at its nominal rate; the cell counts how often it
# calls each kind of sequence "rising" at $p < 0.05$.

# %%
generator = torch.Generator().manual_seed(1)
noise = torch.randn(200, 60, generator=generator, dtype=torch.float64)
walks = torch.randn(200, 60, generator=generator, dtype=torch.float64).cumsum(-1)
rising = {name: sum(my_order_p_value(v, 199, seed) < 0.05 for seed, v in enumerate(rows)) / len(rows)
          for name, rows in (("iid noise", noise), ("random walks", walks))}
norm_p = my_order_p_value(dyn.norms().mean(0), 199, 0)
print(f"called rising at p < 0.05: iid noise {rising['iid noise']:.0%}, random walks {rising['random walks']:.0%}; "
      f"{MODEL}'s mean norm over depth: p = {norm_p:.3f}")
assert rising["iid noise"] < 0.1 and rising["random walks"] > 3 * rising["iid noise"]

# %% [markdown]
# On iid noise the test says "rising" about as often as its level promises (5 %), as a null
# should. On random walks it says so far more often, although no walk has a trend: shuffling
# the order destroys the walk's memory, so the null is too narrow for any sequence whose
# neighbours resemble each other, and every residual-stream curve over depth is such a
# sequence. A shuffle null can reject "no order"; it cannot tell a trend from a wandering
# path. That is why the library also runs its trend claims on structured nulls (a random
# walk, an AR(1) process, pure growth), as the bonus at the end asks you to predict.
#
# **Recap.** A permutation null is a few lines; check it on noise (it must reject at its
# level), and remember what it shuffles away: the order's memory, not only its trend.
#
# ## 2. Does the per-unit rotation count survive a change of basis?
#
# `rotations` and `rotation_null` take `basis="units" | "random" | "pca"`. `"random"` rotates $\mathbb{R}^{d}$ by a Haar-random orthogonal matrix drawn from `seed`; `"pca"` uses the principal axes of all states. Counts ignore translations and axis flips, so only the rotation of the axes matters. Each null shuffles the sublayer order per axis (notebook 02b explains why the shuffled order turns *more* often than the true one: any $(x, \dot x)$ portrait circulates clockwise, and a shuffled sequence oscillates more).

# %%
nulls = [rotation_null(dyn.resid, 200, seed=0, basis=basis) for basis in tld.metrics.BASES]
bases = pd.DataFrame([{"basis": n.basis, **vars(n.summary())} for n in nulls]).set_index("basis")
gap = (bases["mean_observed"] - bases.loc["units", "mean_observed"]).abs()   # turns per axis, from the units'
print(f"distance of the mean count from the units': random basis {gap['random']:.2f}, principal axes {gap['pca']:.2f}")
assert gap["random"] < gap["pca"]
bases

# %%
tld.plot.rotation_bases(nulls)

# %% [markdown]
# If the per-unit result described the dynamics and not the coordinates, the three groups would agree. The signed mean count of a random basis stays closer to the units' than the principal axes' count does (printed and asserted above): any generic axis mixes the same smooth oscillations, while the principal axes, which separate directions by variance, give a different picture: the per-unit statistic is not a basis-free property of the stream.
#
# **Recap.** The per-unit rotation count depends on the coordinate axes it is counted in.
#
# ## 3. jPCA: is the population's flow a rotation?
#
# `tld.jpca` removes the mean over samples at each sublayer, projects onto the top $k$ principal components, and fits $dZ \approx Z_t M$ by least squares twice: with $M$ free, and with $M$ skew-symmetric (solved exactly in closed form: a Lyapunov equation in the eigenbasis of $Z_t^\top Z_t$). $r^2_{skew}$ is how much of the step-to-step change a pure rotation explains; each eigenvalue pair $\pm i\omega$ of $M_{skew}$ turns $\omega (S-1)/2\pi$ times over depth. The null shuffles the sublayer order (one permutation shared by all samples) and refits.

# %%
result = tld.jpca(dyn, k=6, n_shuffles=200, seed=0)
result.to_frame()

# %%
tld.plot.jpca_null(result)

# %%
tld.plot.jpca_plane(result, pair=0)

# %% [markdown]
# The same test on the controls: the model on shuffled text, and iid Gaussian noise of the same shape, where the true order is just one more shuffle.
#
# **Predict before you run.** Will jPCA's p-value on the iid noise fall `"below 0.01"` or
# stay `"above 0.01"`?

# %% [exercise] title="jPCA on noise" kind=predict importance=2 difficulty=2 minutes=5
JPCA_CHOICES = ("below 0.01", "above 0.01")
# SOLUTION
prediction = "above 0.01"   # for noise the true order is one more shuffle: p is uniform, below 0.01 1 time in 100
# STUB
# prediction = ...          # one of JPCA_CHOICES
# END
testing.check_prediction(prediction, JPCA_CHOICES)

# %% [hint]
# For noise, is the true order of the sublayers any different from a shuffled one? What does
# that make the distribution of the p-value?

# %% [hint] code
# ```python
# prediction = "below 0.01"   # or "above 0.01"
# ```

# %%
noise = torch.randn(dyn.resid.shape[0], dyn.resid.shape[1], 64, generator=torch.Generator().manual_seed(0))
noise_jpca = tld.jpca(noise, k=6, n_shuffles=200, seed=0)
testing.check_prediction(prediction, JPCA_CHOICES, outcome="below 0.01" if noise_jpca.p_value < 0.01 else "above 0.01")
pd.DataFrame(
    [
        {"condition": name, "r2_skew": r.r2_skew, "r2_full": r.r2_full, "p_value": r.p_value,
         "top_rotations": float(r.rotations[0])}
        for name, r in [("text", result),
                        ("shuffled text", tld.jpca(shuffled, k=6, n_shuffles=200, seed=0)),
                        ("iid noise", noise_jpca)]
    ]
)

# %% [markdown]
# **Recap.** jPCA asks whether the population's flow is a rotation; its layer-shuffle null is
# run on the model, on shuffled text and on noise.

# %% [markdown]
# ## 4. Local stability: does the map between sublayers contract?
#
# `tld.jacobian_spectrum(model, prompt, start, stop)` differentiates the map from the stream at sublayer `start` to sublayer `stop` at one token (the rest of the sequence held fixed at `start`), without ever forming the $d \times d$ Jacobian: a randomised block Krylov SVD needs only forward-mode products $Jv$ and reverse-mode products $J^\top u$, a batch of vectors per forward pass. Finite-time Lyapunov exponents are $\log\sigma / n$ per sublayer step; the normalised ones use $\sigma\,\lVert x_{start}\rVert / \lVert x_{stop}\rVert$, a kick's growth *relative to the state's growth*.

# %%
middle = model.cfg.n_layers // 2
spectrum = tld.jacobian_spectrum(model, tld.DEFAULT_PROMPT, 2 * middle - 2, 2 * middle + 2, k=5)   # two layers around the middle
spectrum.to_frame()

# %% [markdown]
# A sweep from the input of each layer the paper teleports at to the last sublayer (the span a teleport at that layer is followed over), beside the teleports of notebook 03 on the same scale, $\log(\text{contraction})/\text{steps}$. Every product runs the model from its input, so a long span costs tens of seconds on a CPU: we take the paper's layers, not all 30 (`tl-dynamics report --jacobian` adds the same table to a report).

# %%
layers = tld.teleport_layers(model.cfg.n_layers)
sweep = tld.jacobian_sweep(model, layers=layers, to_end=True, k=5, progress=False)
pca = tld.pca_trajectories(dyn, n_components=2, seed=0)
teleports = tld.teleport_sweep(model, pca, layers=layers, n=4, progress=False)
tld.plot.jacobian_contraction(sweep, teleports)

# %%
sweep.to_frame().merge(teleports.to_frame()[["layer", "contraction", "relative_contraction"]], on="layer")

# %% [markdown]
# The top singular values tell what the *least* stable directions do. Where they exceed 1 (exponent above 0) small kicks along those directions grow, whatever large teleports do: a shrinking distance after a large teleport into a region the model never visits (and, in a post-LayerNorm model such as MiniLM, renormalised after every sub-block) is not by itself local attraction. The normalised exponents divide out the stream's own growth, which the cell prints:

# %%
norms = dyn.norms().mean(0)
print(f"{MODEL}: mean norm at the last token {norms[0]:.1f} at {dyn.labels[0]}, {norms[-1]:.1f} at "
      f"{dyn.labels[-1]} ({norms[-1] / norms[0]:.0f}-fold)")
assert norms[-1] > norms[0]

# %% [markdown]
# **Recap.** Jacobian spectra measure what small kicks do, without forming the Jacobian;
# normalised exponents measure them relative to the stream's growth.
#
# ## 5. Dynamical similarity between conditions
#
# `tld.dynamical_similarity` resamples every trajectory to points of normalised depth, keeps each condition's own principal axes, fits a linear operator to each flow and measures the angle between operators up to a change of basis (the authors' package `dsa-metric`). The controls: the same model on shuffled text, and a random-weight twin of the same architecture (`tld.random_weight_twin`). Two halves of the same texts give the scale of sampling noise.

# %%
half = len(texts) // 2
twin = tld.collect(tld.random_weight_twin(model, seed=0), texts, batch_size=32, progress=False)
conditions = {"text": dyn.resid[:half], "text, other half": dyn.resid[half:],
              "shuffled text": shuffled, "random twin": twin}
similarity = tld.dynamical_similarity(conditions, n_components=6, iters=500, seed=0)
tld.plot.dsa_matrix(similarity)

# %% [markdown]
# Read a distance against the other half of the same texts (sampling noise) and against the controls.
#
# **Recap.** DSA compares how streams move, up to a change of coordinates; two halves of the
# same texts give the scale of sampling noise.
#
# ## 6. Two families: SmolLM2 (Llama) beside Gemma-3
#
# DSA compares flows up to a change of coordinates and resamples depth, so models of different width and depth can be compared directly. Gemma-3-270M (18 layers, d_model 640) on the same texts, with its own random twin; the basis test of section 2 and jPCA are cheap enough to repeat on it. If the two trained models share dynamics, they are closer to each other than either is to its random twin. (`tl-dynamics compare` draws the same matrix for saved reports: `tl-dynamics report --random-twin` saves a twin's trajectories.)

# %%
OTHER = "gemma-3-270m" if MODEL != "gemma-3-270m" else "smollm2-135m"
other = tld.models.load_model(OTHER, device=DEVICE)
other_dyn = tld.collect(other, texts, batch_size=32, progress=False)
other_twin = tld.collect(tld.random_weight_twin(other, seed=0), texts, batch_size=32, progress=False)
other_jpca = tld.jpca(other_dyn, k=6, n_shuffles=200, seed=0)
pd.DataFrame(
    [
        {"model": name, "basis": basis, **vars(rotation_null(d.resid, 200, seed=0, basis=basis).summary()),
         "jpca_r2_skew": r.r2_skew, "jpca_p": r.p_value}
        for name, d, r in [(MODEL, dyn, result), (OTHER, other_dyn, other_jpca)]
        for basis in ("units", "random")
    ]
)

# %%
other_norms = other_dyn.norms().mean(0)
print(f"{OTHER}: mean norm at the last token {other_norms[0]:.1f} -> {other_norms[-1]:.1f} "
      f"({other_norms[-1] / other_norms[0]:.0f}-fold)")
families = {MODEL: dyn, f"{MODEL} twin": twin, OTHER: other_dyn, f"{OTHER} twin": other_twin}
tld.plot.dsa_matrix(tld.dynamical_similarity(families, n_components=6, iters=500, seed=0))

# %% [markdown]
# **Recap.** The same basis test, jPCA and DSA on a second family, each beside its random
# twin.
#
# ## Bonus: the order null on structured nulls
#
# For those who finish early. Section 1's null called random walks "rising" far more often
# than noise. What about an AR(1) process, $x_{t+1} = 0.5\,x_t + \varepsilon_t$, whose memory
# fades within a few steps? Predict: will your null call such sequences rising at $p < 0.05$
# `"about 5 %"` of the time (like noise), or `"over 10 %"`?

# %% [exercise] title="An AR(1) process through the order null" kind=predict bonus importance=1 difficulty=3 minutes=10
AR_CHOICES = ("about 5 %", "over 10 %")
# SOLUTION
ar_prediction = "over 10 %"     # a few steps of memory triple the statistic's variance, (1 + 0.5) / (1 - 0.5)
# STUB
# ar_prediction = ...           # one of AR_CHOICES
# END
testing.check_prediction(ar_prediction, AR_CHOICES)

# %% [hint]
# Neighbours of an AR(1) sequence resemble each other, so its covariance with the position
# varies more from sequence to sequence than a shuffled copy's does. By how much, for a
# correlation of 0.5 between neighbours?

# %% [hint] code
# ```python
# ar_prediction = "over 10 %"   # or "about 5 %"
# ```

# %%
ar = torch.zeros(200, 60, dtype=torch.float64)
innovations = torch.randn(200, 60, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
for t in range(1, 60):
    ar[:, t] = 0.5 * ar[:, t - 1] + innovations[:, t]
rising["AR(1), 0.5"] = sum(my_order_p_value(v, 199, seed) < 0.05 for seed, v in enumerate(ar)) / len(ar)
print({name: f"{share:.0%}" for name, share in rising.items()})
testing.check_prediction(ar_prediction, AR_CHOICES,
                         outcome="over 10 %" if rising["AR(1), 0.5"] > 0.1 else "about 5 %")
