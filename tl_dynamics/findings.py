"""The paper's findings as statistical tests, under their short public name.

Each qualitative sentence of the paper becomes an effect with a bootstrap interval over
texts, a p-value and a verdict; the tests live in :mod:`tl_dynamics.report.findings`
(with the report they serve) and every public name of that module is importable from
here.

Example::

    from tl_dynamics.findings import dynamics_findings
    for finding in dynamics_findings(dyn):         # dyn from tld.collect(...), >= 30 texts
        print(finding.verdict, finding.key, finding.effect, finding.ci, finding.p_adjusted)
"""

from tl_dynamics.report.findings import *  # noqa: F401,F403
from tl_dynamics.report.findings import __all__  # noqa: F401
