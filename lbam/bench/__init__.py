"""Benchmarks: attention module cost, backbone cost and training-pipeline efficiency → results/bench/.

    python -m lbam.bench [--quick] [--out results/bench] [--parts module,pipeline,backbone] [--device cpu]

Writes ``modules.csv`` (+ ``modules.png``), ``pipeline.csv`` and ``backbones.csv``; every row states the
machine, threads, GPU, torch version, date, 1-minute load average and git commit it was measured with,
and whether the C++ pooling kernel was on (``cpp_kernel``: on, off, unavailable, or n/a off the CPU).
``--quick`` runs a tiny configuration (seconds; for tests), never a substitute for the real numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lbam.bench.common import write_csv

PARTS = ("module", "pipeline", "backbone")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lbam.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configuration (for tests)")
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="output folder")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the reference machine has 2)")
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; valid: {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    written = []
    if "module" in args.parts:
        from lbam.bench import modules

        rows = modules.bench_modules(modules.QUICK if args.quick else modules.ModuleConfig(), device)
        written.append(write_csv(args.out / "modules.csv", rows))
        modules.plot_modules(rows, args.out / "modules.png")
        written.append(args.out / "modules.png")
    if "pipeline" in args.parts:
        from lbam.bench import pipeline

        rows = pipeline.bench_pipeline(pipeline.QUICK if args.quick else pipeline.PipelineConfig(), device)
        written.append(write_csv(args.out / "pipeline.csv", rows))
    if "backbone" in args.parts:
        from lbam.bench import backbones

        cfg = backbones.QUICK if args.quick else backbones.BackboneConfig()
        written.append(write_csv(args.out / "backbones.csv", backbones.bench_backbones(cfg, device)))
    for path in written:
        print(f"wrote {path}")
    return 0
