"""Reports: Markdown + a self-contained HTML page with matplotlib plots and tables, from stored results.

>>> from xbarlab.reports import render_report
>>> report = render_report("xbarlab-results/p1-r1.sqlite", "reports/p1-r1")      # doctest: +SKIP
>>> report.html                                                                  # doctest: +SKIP

For every sweep: results are grouped by the swept keys (those whose value varies) and the mitigation, and
summarised over chip instances (mean, std, Student-t 95 % CI, :func:`xbarlab.stats.summarize`). Plots:

* accuracy vs the first numeric swept key (or the sweep file's ``report.x``), one line per mitigation with a
  95 % CI band, one panel per combination of the other swept keys; logarithmic x for drift time;
* grouped bar charts with 95 % CI error bars when no swept key is numeric (presets, devices, crossbar sizes);
* PC2 (and PC2-proj) vs the swept key when the trials recorded it;
* Pareto fronts when the sweep file asks for them (``report: {pareto: {x: COST, y: accuracy, by: KEY}}``:
  one front per value of the grid key ``by``, e.g. one per variation level).

Tables: the aggregated results and every trial. A ``trials.csv`` with the tidy per-trial table is written
next to ``report.md`` / ``report.html``; the figures are PNG files in ``plots/`` (embedded as base64 in the
HTML, so the HTML page alone is the complete report).
"""

from __future__ import annotations

from xbarlab.reports.aggregate import Row
from xbarlab.reports.report import Report, render_report
from xbarlab.reports.tables import MAX_TRIAL_ROWS

__all__ = ["MAX_TRIAL_ROWS", "Report", "Row", "render_report"]
