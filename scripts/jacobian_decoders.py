"""The decoders' Jacobian spectra at their middle teleport layer, over the report's 8 prompts.

The report's full Jacobian sweep (``--jacobian``: every teleported layer, 8 prompts, two
positions, the whole spectrum) costs up to about 70 s per map on SmolLM2-135M on a 2-core CPU,
some 90 minutes a model; this script measures the part the README states for the two
decoders: the map from the middle teleport layer's input to the end of the stream (what a
teleport there is followed through), at the last token of each of
:data:`~tl_dynamics.interventions.DEFAULT_PROMPTS`, with ``k = d_model``. It prints, per
model, the mean over prompts and its Student t 95 % interval of the top singular value,
the number of expanding directions, the log-volume change (both also above the robust
floor), and the causal check: the root mean square growth of 64 small random kicks
(:func:`tl_dynamics.kick_growth`) beside the spectrum's prediction
``sqrt(mean sigma^2)`` on the first prompt. About 4 minutes per model here (about 30 s a
map from the middle layer)::

    python scripts/jacobian_decoders.py smollm2-135m gemma-3-270m
"""

from __future__ import annotations

import argparse
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tl_dynamics.interventions import DEFAULT_PROMPTS, teleport_layers
from tl_dynamics.models import load_model
from tl_dynamics.stability import jacobian_sweep, kick_growth

MEASURES = ("top_singular_value", "n_expanding", "n_expanding_robust", "log_volume", "log_volume_robust")


def measure(preset: str) -> None:
    """Print the middle teleport layer's spectrum measures of ``preset``, over the prompts."""
    model = load_model(preset, progress=False)
    n_layers, width = int(model.cfg.n_layers), int(model.cfg.d_model)
    layers = teleport_layers(n_layers)
    layer = layers[len(layers) // 2]
    sweep = jacobian_sweep(model, DEFAULT_PROMPTS, layers=[layer], to_end=True, k=width)
    row = sweep.to_frame().iloc[0]
    print(f"{preset}: layer {layer} ({row['start']} -> {row['stop']}, {row['steps']} sublayers), "
          f"{row['n_prompts']} prompts, last token, d_model {width}")
    for name in MEASURES:
        print(f"  {name:<22} {row[name]:10.4g}  [{row[name + '_ci_low']:.4g}, {row[name + '_ci_high']:.4g}]")
    first = next(s for s in sweep.spectra if s.prompt == DEFAULT_PROMPTS[0])
    predicted = math.sqrt(float(first.singular_values.double().square().mean()))
    kicks = kick_growth(model, DEFAULT_PROMPTS[0], first.start, first.stop)
    print(f"  kicks: rms growth {float(kicks.square().mean().sqrt()):.4g} vs spectrum's "
          f"sqrt(mean sigma^2) {predicted:.4g} (prompt 0, 64 kicks of 1e-3 |x|)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+", help="model presets, e.g. smollm2-135m gemma-3-270m")
    for preset in parser.parse_args().presets:
        measure(preset)


if __name__ == "__main__":
    main()
