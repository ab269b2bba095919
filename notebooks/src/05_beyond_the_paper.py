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
# 1. test whether a per-unit rotation count survives a change of basis;
# 2. fit jPCA over depth and compare its rotational fit with a layer-shuffle null;
# 3. measure local stability with matrix-free Jacobian spectra, beside teleports;
# 4. compare dynamics across conditions with Dynamical Similarity Analysis.
#
# **Time:** about 45 minutes, no exercises. The solved notebook runs in a few minutes on a laptop CPU (SmolLM2, with Gemma-3 where it is cheap).

# %% [setup] gemma dsa

# %% [markdown]
# ## Set-up
#
# SmolLM2-135M (Llama family, 30 layers, d_model 576) is the library's default model and a decoder like the paper's Llama 3.1 8B. Set `MODEL = "gemma-3-270m"` (Gemma family, 18 layers) or `"minilm"` (post-LayerNorm BERT, 6 layers, fastest) to ask the same questions of another family: every cell runs unchanged. The last section brings Gemma-3 in beside SmolLM2.

# %%
import torch
import pandas as pd

import tl_dynamics as tld
from tl_dynamics.metrics import rotation_null

MODEL = "smollm2-135m"                          # or "gemma-3-270m", "minilm"
model = tld.models.load_model(MODEL, device=DEVICE)
texts = tld.data.python_docs()[:64]
dyn = tld.collect(model, texts, batch_size=32, progress=False)
shuffled = tld.collect(model, texts, batch_size=32, shuffle=True, progress=False)
print(dyn)

# %% [markdown]
# ## 1. Does the per-unit rotation count survive a change of basis?
#
# `rotations` and `rotation_null` take `basis="units" | "random" | "pca"`. `"random"` rotates $\mathbb{R}^{d}$ by a Haar-random orthogonal matrix drawn from `seed`; `"pca"` uses the principal axes of all states. Counts ignore translations and axis flips, so only the rotation of the axes matters. Each null shuffles the sublayer order per axis (notebook 02 explains why the shuffled order turns *more* often than the true one: any $(x, \dot x)$ portrait circulates clockwise, and a shuffled sequence oscillates more).

# %%
nulls = [rotation_null(dyn.resid, 200, seed=0, basis=basis) for basis in tld.metrics.BASES]
pd.DataFrame([{"basis": n.basis, **vars(n.summary())} for n in nulls])

# %%
tld.plot.rotation_bases(nulls)

# %% [markdown]
# If the per-unit result described the dynamics and not the coordinates, the three groups would agree. The signed mean count of a random basis stays close to the units' (any generic axis mixes the same smooth oscillations), while the principal axes, which separate directions by variance, give a different picture: the per-unit statistic is not a basis-free property of the stream.
#
# ## 2. jPCA: is the population's flow a rotation?
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
# The same test on the controls: the model on shuffled text, and iid Gaussian noise of the same shape, where the true order is just one more shuffle (its p-value is uniform, so it falls below 0.01 in about 1 of 100 seeds).

# %%
noise = torch.randn(dyn.resid.shape[0], dyn.resid.shape[1], 64, generator=torch.Generator().manual_seed(0))
pd.DataFrame(
    [
        {"condition": name, "r2_skew": r.r2_skew, "r2_full": r.r2_full, "p_value": r.p_value,
         "top_rotations": float(r.rotations[0])}
        for name, r in [("text", result),
                        ("shuffled text", tld.jpca(shuffled, k=6, n_shuffles=200, seed=0)),
                        ("iid noise", tld.jpca(noise, k=6, n_shuffles=200, seed=0))]
    ]
)

# %% [markdown]
# ## 3. Local stability: does the map between sublayers contract?
#
# `tld.jacobian_spectrum(model, prompt, start, stop)` differentiates the map from the stream at sublayer `start` to sublayer `stop` at one token (the rest of the sequence held fixed at `start`), without ever forming the $d \times d$ Jacobian: a randomised block Krylov SVD needs only forward-mode products $Jv$ and reverse-mode products $J^\top u$, a batch of vectors per forward pass. Finite-time Lyapunov exponents are $\log\sigma / n$ per sublayer step; the normalised ones use $\sigma\,\lVert x_{start}\rVert / \lVert x_{stop}\rVert$, a kick's growth *relative to the state's growth*.

# %%
spectrum = tld.jacobian_spectrum(model, tld.DEFAULT_PROMPT, 28, 32, k=5)       # layer 14 -> 16
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
# The top singular values tell what the *least* stable directions do. Where they exceed 1 (exponent above 0) small kicks along those directions grow, whatever large teleports do: a shrinking distance after a large teleport into a region the model never visits (and, in a post-LayerNorm model such as MiniLM, renormalised after every sub-block) is not by itself local attraction. The normalised exponents divide out the stream's own growth (SmolLM2's mean norm at the last token grows from about 3 to over 600 over depth, Gemma-3's from 26 to over 20,000).
#
# ## 4. Dynamical similarity between conditions
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
# ## 5. Two families: SmolLM2 (Llama) beside Gemma-3
#
# DSA compares flows up to a change of coordinates and resamples depth, so models of different width and depth can be compared directly. Gemma-3-270M (18 layers, d_model 640) on the same texts, with its own random twin; the basis test of section 1 and jPCA are cheap enough to repeat on it. If the two trained models share dynamics, they are closer to each other than either is to its random twin. (`tl-dynamics compare` draws the same matrix for saved reports: `tl-dynamics report --random-twin` saves a twin's trajectories.)

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
families = {MODEL: dyn, f"{MODEL} twin": twin, OTHER: other_dyn, f"{OTHER} twin": other_twin}
tld.plot.dsa_matrix(tld.dynamical_similarity(families, n_components=6, iters=500, seed=0))
