"""Short ``repr`` for result dataclasses: tensors by shape and dtype, never their values.

A result such as a rotation null holds ``[1000, 4096]`` tensors; the default dataclass
``repr`` would print them in full. ``compact_repr`` shows each field as its shape
(``Tensor[1000, 4096] float64``), long sequences by their length, nested results by
their type, and anything else as its own (truncated) ``repr``.

Example::

    from tl_dynamics.metrics import rotation_null
    print(rotation_null(resid))   # RotationNull(observed=Tensor[384] float64, ...)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor

__all__ = ["MAX_FIELD_CHARS", "MAX_ITEMS", "compact_repr"]

MAX_FIELD_CHARS = 60  # longer plain values are cut, so a repr stays on a screen or two
MAX_ITEMS = 6  # sequences longer than this are shown by their length


def _field(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return f"{type(value).__name__}(...)"
    if isinstance(value, (list, tuple)) and len(value) > MAX_ITEMS:
        return f"<{type(value).__name__} of {len(value)}>"
    text = repr(value)
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 3] + "..."


def compact_repr(result: Any) -> str:
    """``Name(field=value, ...)`` of a dataclass instance with tensors shown by shape."""
    fields = (f for f in dataclasses.fields(result) if f.repr)
    body = ", ".join(f"{f.name}={_field(getattr(result, f.name))}" for f in fields)
    return f"{type(result).__name__}({body})"
