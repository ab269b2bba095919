"""The paper's findings as statistical tests: :mod:`tl_dynamics.report.findings` under its
short, public name (every name of that module is importable from here).

Example::

    from tl_dynamics.findings import dynamics_findings
    for finding in dynamics_findings(dyn):         # dyn from tld.collect(...), >= 30 texts
        print(finding.verdict, finding.key, finding.effect, finding.ci, finding.p_adjusted)
"""

from tl_dynamics.report.findings import *  # noqa: F401,F403
from tl_dynamics.report.findings import __all__  # noqa: F401
