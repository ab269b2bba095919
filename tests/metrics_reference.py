"""Independent references and synthetic data for the tests of ``tl_dynamics.metrics``.

Nothing here imports ``tl_dynamics``: the references are written straight from docs/paper.md
with numpy and scipy, one unit at a time, so that the vectorised torch code is checked
against code that shares none of its tricks. Importable from any test module
(``from metrics_reference import kde_mutual_information_reference``), e.g. to compare
``mutual_information`` with scipy on real model activations.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import gaussian_kde

MI_LOG_EPSILON = 1e-10  # docs/paper.md, metric 5


def kde_mutual_information_reference(x: np.ndarray, y: np.ndarray) -> float:
    """docs/paper.md, metric 5, verbatim with scipy: MI in nats of one unit, samples ``x``, ``y``.

    Joint ``gaussian_kde(vstack([x, y]))`` and marginals ``gaussian_kde(x)``,
    ``gaussian_kde(y)`` (Scott's bandwidth), evaluated at the samples themselves.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    points = np.vstack([x, y])
    p_xy = gaussian_kde(points)(points)
    p_x = gaussian_kde(x)(x)
    p_y = gaussian_kde(y)(y)
    return float(np.mean(np.log((p_xy + MI_LOG_EPSILON) / (p_x * p_y + MI_LOG_EPSILON))))


def kde_mutual_information_table(resid: torch.Tensor) -> np.ndarray:
    """:func:`kde_mutual_information_reference` for every transition and unit of ``resid``.

    ``resid`` is ``[batch, sublayer, d_model]``; returns ``[sublayer - 1, d_model]``.
    A slow Python loop over units on purpose: it is the reference.
    """
    data = resid.detach().cpu().double().numpy()
    _, n_sublayers, d_model = data.shape
    return np.array(
        [
            [
                kde_mutual_information_reference(data[:, t, u], data[:, t + 1, u])
                for u in range(d_model)
            ]
            for t in range(n_sublayers - 1)
        ]
    )


def paper_rotations(
    activation: np.ndarray, gradient: str = "central", signed: bool = True
) -> float:
    """Rotation count of one trajectory ``a_l`` (1-D), exactly as docs/paper.md, metric 6 writes it.

    Points ``(a_l, da_l/dl)`` with ``numpy.gradient`` (``"central"``) or forward
    differences with the last repeated (``"forward"``); centre on the first point; tangent
    vectors between successive points; ``theta = arctan2(dy, dx)``; each change wrapped
    into ``(-pi, pi]``; ``R = sum(dtheta) / (2 pi)``. Zero-length tangents are dropped
    before taking angles (the behaviour the library documents).
    """
    a = np.asarray(activation, dtype=np.float64)
    if gradient == "central":
        da = np.gradient(a)
    else:
        step = np.diff(a)
        da = np.append(step, step[-1])
    points = np.stack([a, da], axis=1)
    points = points - points[0]
    tangents = np.diff(points, axis=0)
    tangents = tangents[np.any(tangents != 0, axis=1)]
    theta = np.arctan2(tangents[:, 1], tangents[:, 0])
    dtheta = np.diff(theta)
    wrapped = np.pi - np.mod(np.pi - dtheta, 2 * np.pi)  # into (-pi, pi]
    if not signed:
        wrapped = np.abs(wrapped)
    return float(wrapped.sum() / (2 * np.pi))


def make_resid(
    batch: int = 200,
    n_sublayers: int = 5,
    d_model: int = 40,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A residual-stream-like ``[batch, sublayer, d_model]`` tensor with non-linear coupling.

    Each sublayer adds a non-linear update of the previous state (tanh of a random mixing
    plus a squashed square) and fresh noise, so units are strongly but not linearly coupled
    across depth, with skewed and heavy-tailed marginals, as real activations are.
    """
    generator = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, d_model, generator=generator, dtype=torch.float64)
    h = h + 0.5 * torch.randn(batch, 1, generator=generator, dtype=torch.float64) * h.abs()
    states = [h]
    for _ in range(n_sublayers - 1):
        mixing = (
            torch.randn(d_model, d_model, generator=generator, dtype=torch.float64) / d_model**0.5
        )
        update = torch.tanh(h @ mixing) + 0.6 * (torch.tanh(h).square() - 0.5)
        h = (
            h
            + 0.7 * update
            + 0.4 * torch.randn(batch, d_model, generator=generator, dtype=torch.float64)
        )
        states.append(h)
    return torch.stack(states, dim=1).to(dtype)
