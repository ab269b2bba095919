"""Interactive plotly figures, one function per panel of the paper's Figures 1-4.

Every function takes a :class:`~tl_dynamics.DynamicsCache` (or a result object) and
returns a ``plotly.graph_objects.Figure`` (``beyond.py``: the measures past the paper) with labelled axes and units; call ``.show()``
in a notebook or ``.write_html(path)`` to keep it. Plots know nothing of models or hooks.

Example::

    import tl_dynamics as tld
    tld.plot.velocity(dyn).show()
"""

from tl_dynamics.plot.beyond import *  # noqa: F401,F403
from tl_dynamics.plot.beyond import __all__ as _beyond_all
from tl_dynamics.plot.regimes import *  # noqa: F401,F403
from tl_dynamics.plot.regimes import __all__ as _regimes_all
from tl_dynamics.plot.dynamics import *  # noqa: F401,F403
from tl_dynamics.plot.dynamics import __all__ as _dynamics_all
from tl_dynamics.plot.trajectories import *  # noqa: F401,F403
from tl_dynamics.plot.trajectories import __all__ as _trajectories_all

__all__ = [*_dynamics_all, *_trajectories_all, *_beyond_all, *_regimes_all]
