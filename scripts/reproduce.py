"""Run the patent's comparison: embodiments 1 and 2 x {none, se, cbam, bam, eca, lbam} x seeds, then the report.

    python scripts/reproduce.py --profile quick          # *_quick experiments, seed 0 (make quick)
    python scripts/reproduce.py --profile full           # seeds 0 1 2 (make reproduce)
    python scripts/reproduce.py --profile full --experiments embodiment1 --attentions none lbam --seeds 0

Finished runs (row with status ok) are skipped and interrupted ones resume, so the command can be rerun.
A missing dataset skips its experiment with a message; the others still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lbam.train import DataUnavailableError, compose_config, setup_data, train  # noqa: E402

ATTENTIONS = ("none", "se", "cbam", "bam", "eca", "lbam")
EXPERIMENTS = ("embodiment1", "embodiment2")


def _step_seconds(cfg, probe_batch: int = 4) -> float:
    """Seconds per training step of `cfg` on this CPU (forward + backward + optimiser step).

    Timed on `probe_batch` images and scaled to the configured batch (CPU cost is about linear in the batch), so
    the estimate of the full protocol takes about a minute rather than the minutes of full-size steps."""
    from lbam.models import build_backbone
    from lbam.train import model_kwargs

    model = build_backbone(**model_kwargs(cfg, 2))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    size, batch = cfg.dataset.image_size, cfg.dataset.batch_size
    n = min(batch, probe_batch)
    x, y = torch.randn(n, 3, size, size), torch.randint(0, 2, (n,))
    times = []
    for _ in range(3):  # the first step warms up the allocator
        t0 = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / 2 * batch / n


def print_cpu_estimate(experiments, attentions, seeds) -> None:
    """Measure a few training steps per experiment on this CPU and extrapolate to the whole matrix."""
    total = 0.0
    for exp in experiments:
        cfg = compose_config([f"experiment={exp}"])
        try:
            n_train = setup_data(cfg).metadata["n_train"]
        except Exception:
            print(f"[estimate] {exp}: dataset not available, not counted")
            continue
        steps = math.ceil(n_train / cfg.dataset.batch_size) * cfg.trainer.max_epochs
        # Each attention with its own config group: its kwargs differ (cbam has no kernel_size, ...).
        per_run = [
            steps * _step_seconds(compose_config([f"experiment={exp}", f"attention={a}"])) for a in attentions
        ]
        hours = sum(per_run) * len(seeds) / 3600
        total += hours
        print(
            f"[estimate] {exp}: {n_train} training images, {cfg.trainer.max_epochs} epochs, "
            f"{min(per_run) / 60:.0f}-{max(per_run) / 60:.0f} min per run on this CPU -> {hours:.1f} h "
            f"for {len(attentions)} attentions x {len(seeds)} seeds"
        )
    print(
        f"[estimate] no GPU: the full protocol needs about {total:.1f} h here (already finished runs are skipped). "
        "Ctrl+C stops it at any point; rerunning resumes. `make quick` is the CPU-sized profile."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 (quick), 0 1 2 (full)")
    parser.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    parser.add_argument("--attentions", nargs="+", choices=ATTENTIONS, default=list(ATTENTIONS))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. trainer=cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    os.chdir(ROOT)  # the configs' relative paths (data/, results/, experiments/) are repo-relative
    seeds = args.seeds or ([0] if args.profile == "quick" else [0, 1, 2])
    experiments = [f"{e}_quick" if args.profile == "quick" else e for e in args.experiments]

    if args.profile == "full" and not torch.cuda.is_available():
        print_cpu_estimate(experiments, args.attentions, seeds)

    summary, t0 = [], time.perf_counter()
    for exp in experiments:
        try:
            setup_data(compose_config([f"experiment={exp}", *args.overrides]))
        except DataUnavailableError as e:
            print(f"[reproduce] {exp}: skipped, its dataset is missing (`make data` downloads it):\n  {e}")
            summary.append((exp, "all", "-", "skipped: dataset missing"))
            continue
        for attention in args.attentions:
            for seed in seeds:
                overrides = [f"experiment={exp}", f"attention={attention}", f"seed={seed}", *args.overrides]
                row = train(compose_config(overrides), overrides)
                bal = row.get("test_balanced_acc")
                summary.append((exp, attention, seed, row["status"] + (f" bal_acc={bal:.4f}" if bal else "")))

    print(f"\n[reproduce] {len(summary)} entries in {(time.perf_counter() - t0) / 60:.1f} min")
    for exp, attention, seed, status in summary:
        print(f"  {exp:20s} {attention:5s} seed={seed}  {status}")
    if importlib.util.find_spec("lbam.report") is not None:
        # Attention maps first (they need this machine's checkpoints), so the README block links them.
        ok = {(exp, attention) for exp, attention, _, status in summary if status.startswith("ok")}
        for exp in sorted({exp for exp, attention in ok if attention == "lbam" and (exp, "bam") in ok}):
            cmd = [sys.executable, "-m", "lbam.report", "attention-maps", "--experiment", exp]
            if subprocess.run(cmd, cwd=ROOT).returncode:
                print(f"[reproduce] {exp}: attention maps failed (see above); tables and plots follow anyway")
        return subprocess.run([sys.executable, "-m", "lbam.report"], cwd=ROOT).returncode
    print("[reproduce] lbam.report is not available: rows are in results/runs/, no tables or plots made")
    return 1 if any(s[3].startswith("failed") for s in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
