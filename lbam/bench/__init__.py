"""Benchmarks: attention module cost and the cnn4 training step, eager and compiled → results/local/bench/
(yours, git-ignored; --reference: results/bench/, the committed one).

    python -m lbam.bench [--quick] [--out DIR | --reference] [--parts modules,step] [--against OLD_CHECKOUT]
                         [--backend inductor]

Writes ``modules.csv`` (``modules.py``), ``step.csv`` and with ``--against`` ``against.csv`` (``step.py``), then
``README.md`` from every CSV in the folder (``readme.py``). Every row states the machine, threads, torch version,
date, commit and the 1-minute load average it was measured at. ``--quick`` runs a tiny configuration (seconds once
compiled; for tests), never a substitute for the real numbers. ``--backend`` is torch.compile's backend for the
"compiled" rows (default inductor, what training uses; the tests pass aot_eager, dynamo and AOT autograd without
inductor's minutes of C++ code generation); every row names it in ``compile_backend``.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

PARTS = ("modules", "step")


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m lbam.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configuration (for tests)")
    p.add_argument(
        "--out",
        type=Path,
        help="output folder (default: results/local/bench, git-ignored, beside the reference)",
    )
    p.add_argument(
        "--reference", action="store_true", help="maintainers: write the committed reference, results/bench"
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the reference machine has 2)")
    p.add_argument("--against", type=Path, help="an older checkout to time cnn4+LBAM's training step against")
    p.add_argument("--against-rounds", type=int, default=3, help="alternations of the --against processes")
    p.add_argument("--backend", default="inductor", help="torch.compile backend of the compiled rows")
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; valid: {', '.join(PARTS)}")
    if args.against is not None and not (args.against / "lbam" / "models").is_dir():
        p.error(f"--against {args.against}: not a checkout of this project (no lbam/models there)")
    if args.out is None:  # a user's benchmark never rewrites the committed one (make bench REFERENCE=1 does)
        from lbam import paths

        args.out = (paths.reference_dir() if args.reference else paths.results_dir()) / "bench"
    elif args.reference:
        p.error("--reference and --out exclude each other: --reference writes results/bench")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported after the arguments are checked: a bad command line answers without loading the benchmarks.
    from lbam.bench import modules, step
    from lbam.bench.common import machine_info, write_csv
    from lbam.bench.readme import write_readme

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine_info(device) | {"compile_backend": args.backend}
    if "modules" in args.parts:
        rows = modules.bench_modules(
            modules.QUICK if args.quick else modules.ModuleConfig(), device, info, args.backend
        )
        print(f"wrote {write_csv(args.out / 'modules.csv', rows)}")
    if "step" in args.parts:
        with contextlib.nullcontext() if args.quick else step.cold_compile():
            rows = step.bench_step(
                step.QUICK if args.quick else step.StepConfig(), device, info, args.backend
            )
        print(f"wrote {write_csv(args.out / 'step.csv', rows)}")
    if args.against is not None:
        sizes, steps = (("tiny",), 2) if args.quick else (("quick", "full"), 20)
        rows = step.bench_against(
            args.against, sizes, args.against_rounds, steps, args.threads, info, args.backend
        )
        print(f"wrote {write_csv(args.out / 'against.csv', rows)}")
    print(f"wrote {write_readme(args.out)}")
    return 0
