"""Sublayer labels: the names the trajectories give the residual stream's sites.

A trajectory visits, per layer ``l``, the input of its attention sub-block (``"l_pre"``)
and of its MLP (``"l_mid"``), and ends after the last block at :data:`FINAL_LABEL`.
:mod:`tl_dynamics.hooks` names the sites so; :mod:`tl_dynamics.metrics` reads the names
back to tell within-layer from cross-layer steps. Both import the label from here, so
neither imports the other.

Example::

    from tl_dynamics.labels import FINAL_LABEL
    FINAL_LABEL                                  # 'final_post'
"""

__all__ = ["FINAL_LABEL"]

FINAL_LABEL = "final_post"
"""TransformerLens's label for the residual stream after the last block."""
