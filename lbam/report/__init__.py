"""`python -m lbam.report [tables|figures|readme [--check]|attention-maps --experiment E|compare]`: tables (mean ±
sample std over seeds, paired LBAM comparisons with Holm, non-inferiority and equivalence), figures, attention
maps and the README results block from result rows (``lbam.results``); never trains. Every row is checked and
its metrics recomputed from its predictions (``lbam.report.validate``); only the runs of an experiment's declared
sweep (``lbam.report.declared``) reach the README block and the main tables.

Two results folders (``lbam.paths``): yours, results/local (git-ignored; runs write their rows there), and the
committed reference, results. By default the report reads yours, writes its tables and figures beside your rows
and prints your runs beside the reference (``lbam.report.reference``); it never touches a tracked file.
``--reference`` (make plots REFERENCE=1) is the maintainers' path: the reference's tables, figures and README block.
The README block is optional where no README.md is found (an installed wheel); `readme` works on the reference.

Without a command: all of them, the attention maps of every experiment whose checkpoints are here. Every error
is one line (`lbam.report: error: …`) and exit 1; --verbose shows the traceback.

The comparisons follow the curve's analysis plan (``lbam.report.stats``: every module vs none as well, each
test twice, over seeds and over seeds and test smears); figures include the forest plot of those comparisons
(``lbam.report.forest``). `label-audit` (never run without a command) draws the crops of
results/label_audit/labels.csv from BCCD (``lbam.report.audit``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lbam import paths
from lbam.report.rows import ReportError, load_results

COMMANDS = ("tables", "figures", "readme", "attention-maps", "label-audit", "compare")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lbam.report", description=__doc__)
    p.add_argument("command", nargs="?", choices=COMMANDS, help="one output only (default: all)")
    p.add_argument("--reference", action="store_true", help="report the committed reference (maintainers)")
    p.add_argument(
        "--results-dir", help="folder with runs/ (default: results/local, with --reference results)"
    )
    p.add_argument("--reference-dir", help="the reference to compare with (default: results)")
    p.add_argument("--experiments-dir", help="with checkpoints (default: experiments)")
    p.add_argument("--readme", help="README with the results block (default: README.md, with --reference)")
    p.add_argument("--check", action="store_true", help="readme: only compare; exit 1 with a diff when stale")
    p.add_argument("--experiment", help="attention-maps: the experiment (required)")
    p.add_argument("--seed", type=int, help="attention-maps: checkpoint seed (default: the lowest with both)")
    p.add_argument("--n-per-class", type=int, default=2, help="attention-maps: images per class (default: 2)")
    p.add_argument("--skip-invalid", action="store_true", help="leave invalid rows out with a warning")
    p.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    return p


def _folders(args: argparse.Namespace) -> tuple[Path, Path, bool]:
    """(results folder, reference folder, whether the results folder is the reference). `readme` and
    `label-audit` are about the reference unless told otherwise."""
    reference = Path(args.reference_dir) if args.reference_dir else paths.reference_dir()
    on_reference = args.reference or args.command in ("readme", "label-audit")
    results = (
        Path(args.results_dir) if args.results_dir else reference if on_reference else paths.results_dir()
    )
    return results, reference, results.resolve() == reference.resolve()


def _readme(args: argparse.Namespace, is_reference: bool) -> Path | None:
    """The README to fill: --readme, else the project root's with the reference; None (a line says so) where the
    reference has no README beside it (an installed wheel): the block is optional there."""
    if args.readme:
        return Path(args.readme)
    if not is_reference and args.command != "readme":
        return None
    readme = paths.project_root() / "README.md"
    if not readme.is_file():
        print(f"{readme}: not found, README results block skipped (--readme PATH names one)")
        return None
    return readme


def run(args: argparse.Namespace) -> int:
    cmd = args.command
    results, reference, is_reference = _folders(args)
    if cmd == "attention-maps" and not args.experiment:
        raise ReportError("attention-maps needs --experiment NAME")
    if cmd == "label-audit":  # thumbnails from BCCD and the audit list: no rows needed
        from lbam.report.audit import write_thumbnails

        for path in write_thumbnails(results):
            print(path)
        return 0
    if not is_reference and not args.results_dir and not any((results / "runs").glob("*/*.json")):
        print(
            f"no runs of yours under {results / 'runs'} yet (make quick, or lbam-train, writes them there); the "
            f"reference's tables and figures are under {reference} (make plots REFERENCE=1 regenerates them)"
        )
        return 0
    res = load_results(results, args.skip_invalid)
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

        experiments = args.experiments_dir or paths.project_root() / "experiments"
        for experiment in [args.experiment] if cmd else sorted(set(res.frame["experiment"])):
            if path := attention_maps(res, experiment, experiments, args.n_per_class, args.seed):
                print(path)
    if cmd in (None, "readme") and (readme := _readme(args, is_reference)):
        from lbam.report.readme import update_readme

        up_to_date, diff = update_readme(readme, res, args.check)
        if args.check and not up_to_date:
            print(f"{readme}: results block is stale; run `python -m lbam.report readme`:\n{diff}")
            return 1
        print(f"{readme}: results block {'up to date' if up_to_date else 'updated'}")
    if cmd in (None, "compare") and not is_reference:
        _compare(res, reference, args.skip_invalid)
    return 0


def _compare(res, reference: Path, skip_invalid: bool) -> None:
    """Your runs beside the reference: written under your tables/ and printed."""
    mine = sorted(set(res.frame["experiment"]) | set(res.other.get("experiment", ())))
    if not any(any((reference / "runs" / e).glob("*.json")) for e in mine):
        print(
            f"the reference ({reference / 'runs'}) has no runs of {', '.join(mine)}: nothing to compare with"
        )
        return
    from lbam.report.reference import write_comparison

    written, text = write_comparison(res, load_results(reference, skip_invalid))
    print(*written, sep="\n")
    print("\n" + text)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths.announce_root("lbam-report")
    try:
        return run(args)
    except (ReportError, OSError) as e:
        if args.verbose:
            raise
        print(f"lbam.report: error: {e}", file=sys.stderr)
        return 1
