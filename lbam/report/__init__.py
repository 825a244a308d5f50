"""`python -m lbam.report [tables|figures|readme [--check]|attention-maps --experiment E]`: tables (mean ±
sample std over seeds, paired LBAM comparisons with Holm, non-inferiority and equivalence), figures, attention
maps and the README results block from the rows under results/runs (``lbam.results``); never trains. Every
row is checked and its metrics recomputed from its predictions (``lbam.report.validate``); only the runs of an
experiment's declared sweep (``lbam.report.declared``) reach the README block and the main tables.

Without a command: all of them, the attention maps of every experiment whose checkpoints are here. Every error
is one line (`lbam.report: error: …`) and exit 1; --verbose shows the traceback.

The comparisons follow the curve's analysis plan (``lbam.report.stats``: every module vs none as well, each
test twice, over seeds and over seeds and test smears); figures include the forest plot of those comparisons
(``lbam.report.forest``). `label-audit` (never run without a command) draws the crops of
results/label_audit/labels.csv from BCCD (``lbam.report.audit``)."""

from __future__ import annotations

import argparse
import sys

from lbam.report.rows import ReportError, load_results

COMMANDS = ("tables", "figures", "readme", "attention-maps", "label-audit")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lbam.report", description=__doc__)
    p.add_argument("command", nargs="?", choices=COMMANDS, help="one output only (default: all)")
    p.add_argument("--results-dir", default="results", help="folder with runs/ (default: results)")
    p.add_argument("--experiments-dir", default="experiments", help="with checkpoints (default: experiments)")
    p.add_argument("--readme", default="README.md", help="README with the results block (default: README.md)")
    p.add_argument("--check", action="store_true", help="readme: only compare; exit 1 with a diff when stale")
    p.add_argument("--experiment", help="attention-maps: the experiment (required)")
    p.add_argument("--seed", type=int, help="attention-maps: checkpoint seed (default: the lowest with both)")
    p.add_argument("--n-per-class", type=int, default=2, help="attention-maps: images per class (default: 2)")
    p.add_argument("--skip-invalid", action="store_true", help="leave invalid rows out with a warning")
    p.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    return p


def run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "attention-maps" and not args.experiment:
        raise ReportError("attention-maps needs --experiment NAME")
    if cmd == "label-audit":  # thumbnails from BCCD and the audit list: no rows needed
        from lbam.report.audit import write_thumbnails

        for path in write_thumbnails(args.results_dir):
            print(path)
        return 0
    res = load_results(args.results_dir, args.skip_invalid)
    if len(res.other):  # a trial sweep beside the official runs: say where it went
        print(f"{len(res.other)} run(s) outside the declared sweeps: in 'Other runs', never in the README")
    if cmd in (None, "tables"):
        from lbam.report.tables import write_tables

        print(*write_tables(res), sep="\n")
    if cmd in (None, "figures"):
        from lbam.report.figures import write_figures

        print(*write_figures(res), sep="\n")
        from lbam.report.forest import write_forest

        for path in write_forest(res):
            print(path)
        from lbam.report.bridge import bridges, plot_bridge

        for experiment in bridges(res):
            if path := plot_bridge(res, experiment):
                print(path)
    if cmd in (None, "attention-maps"):
        from lbam.report.maps import attention_maps

        for experiment in [args.experiment] if cmd else sorted(set(res.frame["experiment"])):
            if path := attention_maps(res, experiment, args.experiments_dir, args.n_per_class, args.seed):
                print(path)
    if cmd in (None, "readme"):
        from lbam.report.readme import update_readme

        up_to_date, diff = update_readme(args.readme, res, args.check)
        if args.check and not up_to_date:
            print(f"{args.readme}: results block is stale; run `python -m lbam.report readme`:\n{diff}")
            return 1
        print(f"{args.readme}: results block {'up to date' if up_to_date else 'updated'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (ReportError, OSError) as e:
        if args.verbose:
            raise
        print(f"lbam.report: error: {e}", file=sys.stderr)
        return 1
