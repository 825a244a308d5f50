"""Reporting from results/runs: tables (mean ± sample std over seeds, paired LBAM comparisons with Holm,
non-inferiority and equivalence), figures (learning curve), attention maps and the README results block.
Reads rows only (``lbam.results``); never trains."""

from lbam.report.cli import main
from lbam.report.rows import ReportError, load_results

__all__ = ["ReportError", "load_results", "main"]
