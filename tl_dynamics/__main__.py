"""``python -m tl_dynamics``: the ``tl-dynamics`` command, also under ``torchrun``.

``torchrun --nproc_per_node K -m tl_dynamics collect --out STORE ...`` splits the texts
across K processes that write one resumable store (see :mod:`tl_dynamics.distributed`);
every command and option is that of :mod:`tl_dynamics.cli`.
"""

import sys

from tl_dynamics.cli import main

if __name__ == "__main__":
    sys.exit(main())
