"""Maximum-entropy surrogates that keep trajectories' smoothness and their units' covariance.

Is a population's flow over time rotational, or is any smooth, correlated population that
fit? Elsayed & Cunningham (2017, *Structure in neural population recordings: an expected
byproduct of simpler phenomena?*, Nature Neuroscience 20:1310) answer with surrogate data
that keep the simpler phenomena and nothing else: the covariance across time (how
smooth each trajectory is) and the covariance across units, with maximal entropy
otherwise (their "tensor maximum entropy", here with the time and unit marginals). For
centred data ``Z [text, time, unit]`` that is a Gaussian whose precision is a Kronecker
sum ``Lambda_T (+) Lambda_N``: in the eigenbases ``U_T``, ``U_N`` of the two target
covariances ``Sigma_T = mean_b Z_b Z_b^T`` and ``Sigma_N = mean_b Z_b^T Z_b``, the
coefficients ``c[t, n]`` are independent with variance ``1 / (lambda_t + mu_n)``, and
the eigenvalues solve ``sum_n 1 / (lambda_t + mu_n) = s_t`` and ``sum_t 1 / (lambda_t +
mu_n) = s_n`` (``s``: the targets' eigenvalues). :func:`fit_maximum_entropy` solves
those equations by alternating exact one-dimensional solves (coordinate descent on a
convex dual, so it converges); a surrogate text is ``U_T c U_N^T``.

Such a surrogate has no rotation: its lagged cross-covariance ``E[z_i(t) z_j(t + 1)] =
Sigma_T[t, t + 1] Sigma_N[i, j]`` is symmetric in the units, whereas a rotation makes it
antisymmetric.

Example::

    import numpy as np
    from tl_dynamics._surrogates import fit_maximum_entropy

    z = np.random.default_rng(0).standard_normal((100, 12, 4)).cumsum(axis=1)
    model = fit_maximum_entropy(z - z.mean(0))
    fake = model.sample(100, np.random.default_rng(1))     # [100, 12, 4]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

__all__ = ["MaximumEntropy", "fit_maximum_entropy"]

TOLERANCE = 1e-9  # largest relative error of a fitted marginal eigenvalue
MAX_SWEEPS = 2000  # alternating sweeps over both marginals
BISECTIONS = 80  # geometric bisections per one-dimensional solve (2^-80 of the bracket)
FLOOR = 1e-12  # eigenvalues below this fraction of the largest are raised to it


@dataclass(frozen=True)
class MaximumEntropy:
    """A separable maximum-entropy Gaussian over ``[time, unit]`` (module docstring).

    Attributes:
        time_basis: ``[time, time]`` eigenvectors ``U_T`` of the time covariance.
        unit_basis: ``[unit, unit]`` eigenvectors ``U_N`` of the unit covariance.
        variance: ``[time, unit]`` ``1 / (lambda_t + mu_n)``, each coefficient's variance.
    """

    time_basis: Float[np.ndarray, "time time"]
    unit_basis: Float[np.ndarray, "unit unit"]
    variance: Float[np.ndarray, "time unit"]

    def sample(self, n_texts: int, rng: np.random.Generator) -> Float[np.ndarray, "text time unit"]:
        """``n_texts`` surrogate trajectories, float64 ``[n_texts, time, unit]``."""
        coefficients = rng.standard_normal((n_texts, *self.variance.shape)) * np.sqrt(self.variance)
        return self.time_basis @ coefficients @ self.unit_basis.T


def _solve_rows(targets: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``x`` with ``sum_n 1 / (x_t + others_n) = targets_t`` for every ``t``.

    The sum falls from infinity at ``x = -min(others)`` to 0; with ``offset = x +
    min(others)`` the root lies in ``[1 / target, n / target]`` (the nearest term alone,
    and all terms as near), bisected geometrically.
    """
    shifted = others - others.min()
    low = 1.0 / targets
    high = len(others) / targets
    for _ in range(BISECTIONS):
        middle = np.sqrt(low * high)
        total = (1.0 / (middle[:, None] + shifted[None, :])).sum(1)
        above = total > targets
        low = np.where(above, middle, low)
        high = np.where(above, high, middle)
    return np.sqrt(low * high) - others.min()


def fit_maximum_entropy(z: Float[np.ndarray, "text time unit"]) -> MaximumEntropy:
    """The maximum-entropy Gaussian with ``z``'s time and unit covariances.

    ``z`` should be centred per time step (its mean over texts removed). Eigenvalues of
    either covariance below :data:`FLOOR` of the largest are raised to it (a rank-deficient
    target has no Gaussian with exactly that marginal).
    """
    time_cov = np.einsum("bsk,buk->su", z, z) / len(z)
    unit_cov = np.einsum("bsk,bsl->kl", z, z) / len(z)
    s_time, time_basis = np.linalg.eigh(time_cov)
    s_unit, unit_basis = np.linalg.eigh(unit_cov)
    s_time = np.maximum(s_time, FLOOR * s_time.max())
    s_unit = np.maximum(s_unit, FLOOR * s_unit.max())
    s_unit = s_unit * s_time.sum() / s_unit.sum()  # equal traces, as for exact targets
    lam = np.full(len(s_time), len(s_unit) / s_time.mean())
    mu = np.zeros(len(s_unit))
    for _ in range(MAX_SWEEPS):
        lam = _solve_rows(s_time, mu)
        mu = _solve_rows(s_unit, lam)
        fitted = (1.0 / (lam[:, None] + mu[None, :])).sum(1)
        if np.max(np.abs(fitted / s_time - 1)) < TOLERANCE:
            break
    return MaximumEntropy(time_basis, unit_basis, 1.0 / (lam[:, None] + mu[None, :]))
