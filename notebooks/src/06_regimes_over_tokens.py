# %% [markdown]
# # 06 · Regimes over tokens: one linear rule, or several taking turns?
#
# Notebooks 01-05 follow one token's stream over *depth*. Here we fix the depth and follow
# the stream over *tokens*: at one sublayer, the state of token 1, token 2, ... of a text is a
# trajectory too. Carson & Reisizadeh (2025, *A statistical physics of language model
# reasoning*) model such trajectories as a **switching linear dynamical system**: a few
# linear rules $z_{t+1} = A_k z_t + b_k + \varepsilon$ that take turns, the active rule $k$
# following a Markov chain. They report four regimes on a rank-40 projection and a held-out
# $R^2$ of about 0.68, better than one linear system.
#
# `tld.regimes` fits that model (an autoregressive hidden Markov model) on a PCA projection
# fitted on training texts only, chooses the number of regimes by held-out likelihood, and
# scores a one-step-ahead forecast on held-out texts against one linear system, and against
# the same fit on the token-shuffled control.
#
# **Learning objectives.** After this notebook you can
# 1. turn a `collect(..., positions="all")` cache into token trajectories at one sublayer;
# 2. fit regimes and read their number, their transition matrix and each step's regime;
# 3. compute the held-out forecast $R^2$ of one linear system yourself, by least squares;
# 4. set a model's result against the shuffled-token control before believing it.
#
# **Time:** about 40 minutes (two exercises of 5-15 minutes and a bonus, the rest reading and
# running). The solved notebook runs in about 2-3 minutes on a laptop CPU.
#
# **Prerequisites:** notebook 01; least squares; what a hidden Markov model is.

# %% [setup]

# %% [contents]

# %% [markdown]
# ## 1. Token trajectories
#
# MiniLM (6 layers, $d_\text{model} = 384$) is fast enough to read every token of 64 texts in
# seconds. `positions="all"` keeps every token's stream; `token_trajectories` keeps one
# sublayer and the first 16 tokens after the first (the first token's stream is an outlier),
# dropping texts that are shorter. The shuffled control is the same texts with their tokens
# permuted (notebook 02a): the same words, no order.

# %%
import torch

import tl_dynamics as tld
from tl_dynamics import testing

SUBLAYER, N_TOKENS, RANK = "3_mid", 16, 8
model = tld.models.load_model("minilm", device=DEVICE)
texts = tld.data.python_docs()[:64]
dyn = tld.collect(model, texts, positions="all", batch_size=32, progress=False)
shuffled = tld.collect(model, texts, positions="all", batch_size=32, shuffle=True, seed=0, progress=False)
tokens = tld.token_trajectories(dyn, SUBLAYER, n_tokens=N_TOKENS)
control = tld.token_trajectories(shuffled, SUBLAYER, n_tokens=N_TOKENS)
print(f"{tokens.shape[0]} texts x {tokens.shape[1]} tokens x {tokens.shape[2]} units at {SUBLAYER}")

# %% [markdown]
# **Recap.** A token trajectory is `[text, token, d_model]`: one text's states at one depth,
# token after token, the same shape as a depth trajectory with tokens in place of sublayers.

# %% [markdown]
# ## 2. Fitting regimes
#
# Before you run the fit, predict: on the **shuffled** tokens, is a one-step forecast of the
# next token's state *better* or *worse* than on the original texts? Write `"better"` or
# `"worse"`; the cell after the fit tells you.

# %% [exercise] title="Order or no order?" kind=predict importance=3 difficulty=1 minutes=3
CHOICES = ("better", "worse")
# SOLUTION
prediction = "worse"    # without word order the next token's state is harder to foresee
# STUB
# prediction = ...      # "better" or "worse"
# END
testing.check_prediction(prediction, CHOICES)

# %% [hint]
# A forecast uses the current state to guess the next one. What does shuffling the tokens do
# to the relation between a token and the one after it?

# %% [hint] code
# ```python
# prediction = "worse"   # or "better"
# ```

# %%
result = tld.regimes(tokens, n_regimes=None, rank=RANK, seed=0, control=control)
print(result)
outcome = "better" if result.control.r2_heldout > result.r2_heldout else "worse"
testing.check_prediction(prediction, CHOICES, outcome=outcome)
summary = {
    "regimes chosen": result.n_regimes,
    "variance in the projection": round(result.explained_variance, 3),
    "held-out R2, regimes": round(result.r2_heldout, 3),
    "held-out R2, one linear system": round(result.r2_single, 3),
    "shuffled control, regimes": round(result.control.r2_heldout, 3),
}
summary

# %% [markdown]
# The shuffled control's forecast is far worse: what is predictable from one token to the
# next is word order, not the words themselves. The cell checks it on the numbers above:

# %%
assert result.control.r2_heldout < result.r2_heldout, "word order carries the forecast"

# %% [markdown]
# Whether *several* rules beat *one* is the question of the paper by Carson & Reisizadeh.
# `candidates` and `validation_log_likelihood` show how the number of regimes was chosen
# (each extra regime must earn its keep in nats per step on texts kept out of the fit), and
# `r2_heldout` against `r2_single` says whether the regimes also forecast better. A higher
# likelihood need not mean a better forecast: the printed difference says which it is here.

# %%
print({k: round(v, 3) for k, v in zip(result.candidates, result.validation_log_likelihood)})
print(f"R2 regimes - one system: {result.r2_heldout - result.r2_single:+.3f}")

# %% [markdown]
# **Recap.** `tld.regimes` returns a frozen `Regimes`: `n_regimes`, the dynamics matrices,
# the transition matrix, each step's regime (`states`), and held-out forecasts against one
# system and against the control.

# %% [markdown]
# ## 3. One linear system, by hand
#
# `r2_single` is the simplest baseline: one rule $z_{t+1} = A z_t + b$ for every step. Compute
# it yourself: project every state with the fit's PCA (`(x - result.mean) @ result.components.T`),
# fit $[z_t, 1] W \approx z_{t+1}$ by least squares on the training texts (`~result.heldout`),
# forecast the held-out texts' next states, and score them with
# $R^2 = 1 - \sum \lVert z_{t+1} - \hat z_{t+1} \rVert^2 / \sum \lVert z_{t+1} - \bar z \rVert^2$,
# $\bar z$ the mean of the held-out targets.

# %% [exercise] title="Held-out R2 of one linear system" kind=compute importance=3 difficulty=2 minutes=15
def single_system_r2(trajectories, result):
    """Held-out one-step R2 of one least-squares linear system in the fit's projection."""
    z = (trajectories.double() - result.mean) @ result.components.T      # [text, token, rank]
    # SOLUTION
    def pairs(rows):
        inputs = torch.cat([rows[:, :-1], torch.ones_like(rows[:, :-1, :1])], dim=-1)
        return inputs.reshape(-1, inputs.shape[-1]), rows[:, 1:].reshape(-1, rows.shape[-1])

    x_train, y_train = pairs(z[~result.heldout])
    weights = torch.linalg.lstsq(x_train, y_train).solution
    x_test, y_test = pairs(z[result.heldout])
    residual = (y_test - x_test @ weights).square().sum()
    return float(1 - residual / (y_test - y_test.mean(0)).square().sum())
    # STUB
    # return 0.0
    # END


testing.check_regime_single_r2(single_system_r2(tokens, result), result)

# %% [hint]
# Each text gives `N_TOKENS - 1` pairs (state, next state). Stack the pairs of the training
# texts, add a column of ones for $b$, and solve one least-squares problem for all of them.

# %% [hint] code
# ```python
# inputs = torch.cat([z[:, :-1], torch.ones_like(z[:, :-1, :1])], dim=-1)   # [text, step, rank + 1]
# weights = torch.linalg.lstsq(train_inputs, train_targets).solution
# ```

# %% [markdown]
# **Recap.** A held-out $R^2$ is only honest when the projection and the rule are fitted on
# texts the score never sees; `result.heldout` marks those texts.

# %% [markdown]
# ## 4. Reading the regimes
#
# The strip shows each held-out and training text's regime at every step; the matrix shows
# how regimes follow each other (rows sum to 1: a heavy diagonal means a regime persists).

# %%
tld.plot.regime_strip(result)

# %%
tld.plot.regime_transitions(result)

# %% [markdown]
# **Recap.** `states` gives each step's regime, `transition` how regimes follow each other;
# both are read from the fit, never from the held-out scores.

# %% [markdown]
# ## Bonus: how long does a regime last?
#
# For those who finish early: a regime with self-transition probability $p$ lasts
# $1 / (1 - p)$ steps on average. Read the diagonal of the transition matrix above and answer:
# does the most persistent regime last *longer* than the whole 15-step trajectory, or
# *shorter*? Answer `"longer"` or `"shorter"`.

# %% [exercise] title="Read the transition matrix" kind=figure bonus importance=1 difficulty=1 minutes=5
# SOLUTION
answer = "longer" if float(1 / (1 - result.transition.diagonal().max())) > N_TOKENS - 1 else "shorter"
# STUB
# answer = ...   # "longer" or "shorter"
# END
expected = "longer" if float(1 / (1 - result.transition.diagonal().max())) > N_TOKENS - 1 else "shorter"
testing.check_answer(answer, [expected], question="the most persistent regime's mean duration")

# %% [hint]
# Find the largest number on the diagonal of the matrix and compute $1 / (1 - p)$.

# %% [hint] code
# ```python
# p = result.transition.diagonal().max()
# duration = 1 / (1 - p)
# ```

# %% [markdown]
# ## Where next
#
# * Over depth instead of tokens: `tld.regimes(dyn)` on a last-token cache fits the same model
#   with sublayers as steps.
# * Over training: `tl-dynamics series --checkpoints run/step0 run/step16 ... --out series`
#   runs the report's measures at every checkpoint of a model (README, "Over training and over
#   tokens"; `scripts/train_tiny_series.py` trains a small one on the CPU).
