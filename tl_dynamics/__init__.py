"""tl-dynamics: the residual stream as a dynamical system over depth.

Fernando & Guitchounts (2025, arXiv 2502.12131) read a transformer's residual stream
before every attention and MLP sub-block and study the resulting trajectories with the
tools neuroscience uses for populations of neurons evolving in time: correlations,
mutual information, velocities, phase portraits, low-dimensional embeddings and
perturbations. This package does the same for any TransformerLens model.

Importing it registers two accessors: ``model.dynamics(texts, ...)`` on
``TransformerBridge`` (TransformerLens 3.x and 4.x) and ``HookedTransformer`` (3.x), the
same as :func:`collect`, and ``cache.dynamics()`` on ``ActivationCache``.

Example::

    import tl_dynamics as tld
    model = tld.models.load_model()                  # SmolLM2-135M, offline
    dyn = tld.collect(model, tld.data.python_docs()[:200])
    tld.metrics.velocity(dyn.resid).mean(0)          # mean step length per transition
"""

import importlib

from tl_dynamics import data, metrics, models, plot, presets, streaming
from tl_dynamics._version import __version__
from tl_dynamics.cache import DynamicsCache, DynamicsMetadata
from tl_dynamics.collect import CollectSettings, cache_dynamics, collect
from tl_dynamics.embed import (
    AutoencoderTrajectories,
    CompressingAutoencoder,
    PCATrajectories,
    TrainingHistory,
    pca_trajectories,
)
from tl_dynamics.errors import DynamicsInputError
from tl_dynamics.hooks import TLModel, sublayer_hook_name
from tl_dynamics.jpca import JPCAResult, jpca
from tl_dynamics.regimes import Regimes, regimes, token_trajectories
from tl_dynamics.similarity import DynamicalSimilarity, dynamical_similarity, random_weight_twin
from tl_dynamics.stability import JacobianSpectrum, JacobianSweep, jacobian_spectrum, jacobian_sweep
from tl_dynamics.store import DynamicsStore, collect_to_store
from tl_dynamics.streaming import MomentSummary
from tl_dynamics.interventions import (
    DEFAULT_PROMPT,
    Recovery,
    TeleportGrid,
    TeleportResult,
    TeleportSweep,
    inject_noise,
    noise_hook,
    pca_grid,
    swap_activations,
    swap_hook,
    teleport,
    teleport_hook,
    teleport_layers,
    teleport_sweep,
)


_MODEL_CLASSES = (
    ("transformer_lens.model_bridge", "TransformerBridge"),  # TransformerLens 3.x and 4.x
    ("transformer_lens", "HookedTransformer"),  # TransformerLens 3.x; 4.0 raises ImportError
)


def _register_accessors() -> None:
    """Attach ``.dynamics`` to TransformerLens's model and cache classes that exist."""
    from transformer_lens import ActivationCache

    for module, name in _MODEL_CLASSES:
        try:
            model_class = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        model_class.dynamics = collect
    ActivationCache.dynamics = cache_dynamics


_register_accessors()

__all__ = [
    "DEFAULT_PROMPT",
    "AutoencoderTrajectories",
    "CollectSettings",
    "CompressingAutoencoder",
    "DynamicalSimilarity",
    "DynamicsCache",
    "DynamicsInputError",
    "DynamicsMetadata",
    "DynamicsStore",
    "JacobianSpectrum",
    "JacobianSweep",
    "JPCAResult",
    "MomentSummary",
    "PCATrajectories",
    "Recovery",
    "Regimes",
    "TeleportGrid",
    "TeleportResult",
    "TeleportSweep",
    "TLModel",
    "TrainingHistory",
    "__version__",
    "cache_dynamics",
    "collect",
    "collect_to_store",
    "data",
    "dynamical_similarity",
    "inject_noise",
    "jacobian_spectrum",
    "jacobian_sweep",
    "jpca",
    "metrics",
    "models",
    "noise_hook",
    "pca_grid",
    "pca_trajectories",
    "plot",
    "presets",
    "random_weight_twin",
    "regimes",
    "streaming",
    "sublayer_hook_name",
    "swap_activations",
    "swap_hook",
    "teleport",
    "teleport_hook",
    "teleport_layers",
    "teleport_sweep",
    "token_trajectories",
]
