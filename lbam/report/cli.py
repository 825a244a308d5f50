"""Command line: `python -m lbam.report [tables|figures|readme|attention-maps]` (no subcommand = all but maps)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from lbam.report.rows import NoResultsError, group_rows, load_rows


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--results-dir", default=argparse.SUPPRESS, help="folder with runs/ (default: results)"
    )
    common.add_argument("--readme", default=argparse.SUPPRESS, help="README to update (default: README.md)")
    parser = argparse.ArgumentParser(
        prog="python -m lbam.report",
        description="Tables, figures and the README results block from results/runs (never retrains). "
        "Without a subcommand: tables + figures + README block.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("tables", parents=[common], help="results/tables/<experiment>.{md,csv,tex}")
    sub.add_parser("figures", parents=[common], help="results/figures/<experiment>_*.png")
    readme = sub.add_parser("readme", parents=[common], help="fill the README results block")
    readme.add_argument("--check", action="store_true", help="only compare; exit 1 and print a diff if stale")
    maps = sub.add_parser("attention-maps", parents=[common], help="LBAM vs BAM maps from checkpoints")
    maps.add_argument("--experiment", required=True)
    maps.add_argument("--n-per-class", type=int, default=2)
    maps.add_argument("--seed", type=int, default=None, help="checkpoint seed (default: lowest available)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    results_dir = Path(getattr(args, "results_dir", "results"))
    readme = Path(getattr(args, "readme", "README.md"))
    # Warnings (skipped files) go to stderr, each once per file.
    warnings.simplefilter("default")
    try:
        rows = load_rows(results_dir)
        if args.command == "attention-maps":
            from lbam.report.maps import experiment_attention_maps

            print(experiment_attention_maps(rows, args.experiment, results_dir, args.n_per_class, args.seed))
            return 0
        if args.command == "readme":
            return _readme(readme, results_dir, args.check)
        groups = group_rows(rows)
        if args.command in (None, "tables"):
            from lbam.report.tables import write_tables

            for path in write_tables(groups, results_dir):
                print(path)
        if args.command in (None, "figures"):
            from lbam.report.figures import write_figures

            for path in write_figures(groups, results_dir):
                print(path)
        if args.command is None:
            from lbam.report.readme import ReadmeMarkersError

            try:
                return _readme(readme, results_dir, check=False)
            except (FileNotFoundError, ReadmeMarkersError) as err:
                print(f"note: README block not updated: {err}", file=sys.stderr)
        return 0
    except (NoResultsError, FileNotFoundError, ValueError) as err:
        print(f"lbam.report: error: {err}", file=sys.stderr)
        return 1


def _readme(readme: Path, results_dir: Path, check: bool) -> int:
    from lbam.report.readme import update_readme

    up_to_date, diff = update_readme(readme, results_dir, check=check)
    if check and not up_to_date:
        print(f"{readme} results block is stale; run `python -m lbam.report readme`:\n{diff}")
        return 1
    print(f"{readme}: results block {'up to date' if up_to_date else 'updated'}")
    return 0
