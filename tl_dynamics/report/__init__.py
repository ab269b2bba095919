"""The report layer: every measure of the paper on one model, tested, as a page and a record.

One concern per module, imports running one way (top to bottom here; nothing below
imports what is above it):

* :mod:`~tl_dynamics.report.pipeline`: the stages in order, timed, driven by
  :class:`ReportSettings` (:func:`run_report`);
* :mod:`~tl_dynamics.report.compare`: several reports' records overlaid
  (``tl-dynamics compare``);
* :mod:`~tl_dynamics.report.html` and :mod:`~tl_dynamics.report.figures`: the page's
  text and its figures per section;
* :mod:`~tl_dynamics.report.beyond`: the tests the paper does not run;
* :mod:`~tl_dynamics.report.findings`: the paper's claims, each a statistical test
  (also importable as :mod:`tl_dynamics.findings`), built on :mod:`tl_dynamics.stats`;
* :mod:`~tl_dynamics.report.measures`: the measures per condition;
* :mod:`~tl_dynamics.report.record`: ``metrics.json``: schema, writing, reading back.

Folder safety (markers, atomic folders, the overwrite rules) is :mod:`tl_dynamics._output`.

Example::

    import tl_dynamics as tld
    from tl_dynamics.report import ReportSettings, run_report
    model = tld.models.load_model("minilm")
    run_report(model, tld.data.python_docs()[:64], "minilm-report", ReportSettings(seed=0))
"""

from tl_dynamics.report.pipeline import ReportSettings, run_report

__all__ = ["ReportSettings", "run_report"]
