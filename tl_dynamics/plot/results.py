"""Recognising result objects without importing the code that makes them.

Plots draw results; they never reach a module that runs a model. Some results are made
by such modules (a :class:`~tl_dynamics.TeleportSweep` by :mod:`tl_dynamics.interventions`,
a :class:`~tl_dynamics.JacobianSweep` by :mod:`tl_dynamics.stability`), so the plot
modules import those types only for type checkers (``TYPE_CHECKING``) and check what
they are given with :func:`is_result`, by the class's name among tl-dynamics classes.

Example::

    import torch
    from tl_dynamics.metrics import rotation_null
    from tl_dynamics.plot.results import is_result
    is_result(rotation_null(torch.randn(8, 5, 4), 10), "RotationNull")   # True
    is_result("a string", "TeleportSweep")                               # False
"""

from __future__ import annotations

__all__ = ["is_result"]


def is_result(value: object, name: str) -> bool:
    """Whether ``value`` is an instance of the tl-dynamics class called ``name`` (or of a
    subclass of it), without importing the module that defines it."""
    return any(
        kind.__name__ == name and kind.__module__.startswith("tl_dynamics.")
        for kind in type(value).__mro__
    )
