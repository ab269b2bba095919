"""Checks and chunking shared by every metric module (private).

Every public metric validates its input once, here, so that all of them reject bad input
with the same words: the argument's name, what it got, what was expected. The
chunking helper bounds the memory of the large temporaries (kernel matrices, shuffled
trajectories) by splitting one axis into slices.

Example::

    import torch
    from tl_dynamics.metrics._validation import check_resid, chunk_slices

    check_resid(torch.randn(8, 6, 4), min_sublayers=2, min_batch=2)   # passes silently
    [s.stop for s in chunk_slices(10, bytes_per_item=1, chunk_size=4)]  # [4, 8, 10]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics.errors import DynamicsInputError, InputTypeError

__all__ = [
    "CHUNK_BYTES",
    "STAT_DTYPE",
    "RESID_SHAPE",
    "working_dtype",
    "check_resid",
    "check_choice",
    "chunk_slices",
]

# Memory budget for the temporaries of one chunk (brief: keep blocks near 256 MB).
CHUNK_BYTES = 256 * 2**20

# Statistics (correlation, mutual information, rotations, streamed sums) are computed in float64.
STAT_DTYPE = torch.float64

RESID_SHAPE = "[batch, sublayer, d_model]"


def working_dtype(resid: Tensor) -> torch.dtype:
    """Dtype for cheap geometry: float32 for half types, the input's own dtype otherwise."""
    return torch.promote_types(resid.dtype, torch.float32)


def check_resid(
    resid: object,
    *,
    min_sublayers: int = 1,
    min_batch: int = 1,
    name: str = "resid",
) -> None:
    """Raise unless ``resid`` is a finite floating tensor ``[batch, sublayer, d_model]``.

    Raises ``TypeError`` for a non-tensor or a non-floating dtype and ``ValueError`` for
    a wrong number of dims, too few sublayers or samples, an empty ``d_model`` axis, or
    non-finite values (the message lists the sublayer indices that hold them).
    """
    if not isinstance(resid, Tensor):
        raise InputTypeError(
            f"{name} must be a torch.Tensor {RESID_SHAPE}; got {type(resid).__name__}"
        )
    if not resid.is_floating_point():
        raise InputTypeError(
            f"{name} must be a floating tensor (float16, bfloat16, float32 or float64); "
            f"got dtype {resid.dtype}"
        )
    if resid.ndim != 3:
        raise DynamicsInputError(
            f"{name} must have 3 dims {RESID_SHAPE}; got shape {tuple(resid.shape)}"
        )
    batch, n_sublayers, d_model = resid.shape
    if n_sublayers < min_sublayers:
        raise DynamicsInputError(
            f"{name} needs at least {min_sublayers} sublayers (dim 1) for this metric; "
            f"got {n_sublayers} (shape {tuple(resid.shape)})"
        )
    if batch < min_batch:
        raise DynamicsInputError(
            f"{name} needs at least {min_batch} samples (batch, dim 0) for this metric; "
            f"got {batch} (shape {tuple(resid.shape)})"
        )
    if d_model < 1:
        raise DynamicsInputError(
            f"{name} needs at least 1 unit (d_model, dim 2); got shape {tuple(resid.shape)}"
        )
    finite = torch.isfinite(resid).all(dim=2).all(dim=0)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise DynamicsInputError(
            f"{name} has non-finite values (NaN or inf) at sublayer index {bad}; "
            "expected finite values everywhere"
        )


def check_choice(value: object, name: str, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise DynamicsInputError(f"{name} must be one of {list(choices)}; got {value!r}")


def chunk_slices(
    total: int,
    bytes_per_item: int,
    chunk_size: int | None = None,
    budget: int | None = None,
) -> Iterator[slice]:
    """Slices covering ``range(total)``, ``chunk_size`` items each.

    With ``chunk_size=None`` the size is chosen so one chunk's temporaries take about
    ``budget`` bytes (default :data:`CHUNK_BYTES`), at least one item per chunk.
    """
    if chunk_size is None:
        budget = CHUNK_BYTES if budget is None else budget
        chunk_size = max(1, budget // max(1, bytes_per_item))
    else:
        check_int(chunk_size, "chunk_size")
    for start in range(0, total, chunk_size):
        yield slice(start, min(start + chunk_size, total))
