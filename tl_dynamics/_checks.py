"""The one integer check every public function runs on its integer arguments, and the
one finite check of tensors handed in (private).

Counts, sizes, indices and seeds are all checked here, so that every bad one is refused
with the same words before any work starts: a non-integer (or a bool) raises
:class:`~tl_dynamics.errors.InputTypeError`, a value outside its range
:class:`~tl_dynamics.errors.DynamicsInputError`, both naming the argument, what it
got and what is expected. NumPy integers count as integers.

Example::

    from tl_dynamics._checks import check_int

    check_int(3, "n_components")                      # 3
    check_int(-1, "position", -4, 3, " (4 tokens)")   # -1
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tl_dynamics.errors import DynamicsInputError, InputTypeError

__all__ = ["check_int", "check_finite"]


def check_int(
    value: Any, name: str, minimum: int = 1, maximum: int | None = None, why: str = ""
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (``maximum=None``: no upper bound).

    ``why`` is appended to what is expected, e.g. ``" (the prompt has 9 tokens)"``.

    Raises:
        InputTypeError: ``value`` is not an integer (bools are refused).
        DynamicsInputError: ``value`` is outside ``[minimum, maximum]``.
    """
    expected = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(
            f"{name} must be an int {expected}{why}; got {type(value).__name__} {value!r}"
        )
    if value < minimum or (maximum is not None and value > maximum):
        raise DynamicsInputError(f"{name} must be an int {expected}{why}; got {value!r}")
    return int(value)


def check_finite(values: torch.Tensor, name: str) -> None:
    """Raise :class:`~tl_dynamics.errors.DynamicsInputError` naming ``name`` when
    ``values`` holds an infinity or a NaN."""
    if not bool(torch.isfinite(values).all()):
        raise DynamicsInputError(f"{name} holds non-finite values (inf or nan)")
