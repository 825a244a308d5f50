"""Reporting from results/runs: comparison tables with seed statistics and McNemar tests, figures,
attention maps and the README results block. Never retrains anything."""

from lbam.report.cli import main
from lbam.report.readme import render_readme_block
from lbam.report.rows import NoResultsError, ReportWarning, group_rows, load_rows
from lbam.report.stats import mcnemar_exact

__all__ = [
    "NoResultsError",
    "ReportWarning",
    "group_rows",
    "load_rows",
    "main",
    "mcnemar_exact",
    "render_readme_block",
]
