"""The patent's comparison in one command: each experiment's Hydra sweep, then the report.

    python scripts/reproduce.py --profile quick    # embodiment{1,2}_quick, seed 0       (make quick)
    python scripts/reproduce.py --profile full     # embodiment{1,2}, seeds 0 1 2        (make reproduce)
    python scripts/reproduce.py --profile curve    # embodiment1_curve learning curve    (make curve)
    python scripts/reproduce.py --profile full --experiments embodiment1 -- trainer.max_epochs=10

Each experiment file holds its sweep (`hydra.sweeper.params`: attentions, seeds, sizes), so every run goes through
`python -m lbam.train -m experiment=<name>`; this script adds only what a multirun cannot do: the LBAM row without
the residual (F ⊗ M; a second sweep), a CPU time estimate for the full protocol, skipping an experiment whose
dataset is missing (with the reason), and the report at the end. Finished runs are skipped and interrupted ones
resume, so the command can be rerun.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILES = {
    "quick": ("embodiment1_quick", "embodiment2_quick"),
    "full": ("embodiment1", "embodiment2"),
    "curve": ("embodiment1_curve",),
}
# The gate form F ⊗ M of SE/CBAM/ECA, so that the reproduction separates it from the module (issue: BAM and LBAM
# apply F + F ⊗ M).
EXTRA = ["attention=lbam", "attention.residual=false"]


def dataset_problem(experiment: str, overrides: list[str]) -> str | None:
    """Why the experiment's dataset cannot be used here (None when it can): downloads it when missing."""
    from hydra.utils import instantiate

    from lbam.config import compose
    from lbam.data import DataError

    try:
        dm = instantiate(compose([f"experiment={experiment}", *overrides]).dataset)
        dm.prepare_data()
    except DataError as e:
        return str(e)
    return None


def step_seconds(experiment: str, attention: str, probe_batch: int = 4) -> float:
    """Seconds of one training step (forward, backward, optimiser) of the experiment's model on this CPU, timed on
    ``probe_batch`` images and scaled to the configured batch (CPU cost is about linear in the batch)."""
    import torch
    from omegaconf import OmegaConf

    from lbam.config import compose
    from lbam.models import build_backbone

    cfg = compose([f"experiment={experiment}", f"attention={attention}"])
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.attention).items() if k != "name"}
    backbone = {k: v for k, v in OmegaConf.to_container(cfg.backbone).items() if k != "_target_"}
    model = build_backbone(**backbone, num_classes=2, attention=attention, attention_kwargs=kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    size, batch = cfg.dataset.image_size, cfg.dataset.batch_size
    x, y = torch.randn(probe_batch, 3, size, size), torch.randint(0, 2, (probe_batch,))
    times = []
    for _ in range(3):  # the first step warms up the allocator
        t0 = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / 2 * batch / probe_batch


def print_cpu_estimate(experiment: str, n_train: int) -> None:
    from lbam.config import compose

    cfg = compose([f"experiment={experiment}"], with_hydra=True)
    params = cfg.hydra.sweeper.params or {}
    attentions = str(params.get("attention", "lbam")).split(",")
    seeds = len(str(params.get("seed", "0")).split(","))
    steps = math.ceil(n_train / cfg.dataset.batch_size) * cfg.trainer.max_epochs
    per_run = [steps * step_seconds(experiment, a) for a in attentions]
    hours = (sum(per_run) + per_run[-1]) * seeds / 3600  # + the lbam residual=false row, as costly as lbam
    print(
        f"[reproduce] {experiment}: no GPU; about {hours:.1f} h on this CPU ({min(per_run) / 60:.0f}-"
        f"{max(per_run) / 60:.0f} min per run, {len(attentions) + 1} settings x {seeds} seeds). Ctrl+C stops it "
        "at any point; rerunning resumes. `make quick` is the CPU-sized profile."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=tuple(PROFILES), default="quick")
    parser.add_argument("--experiments", nargs="+", help="a subset of the profile's experiments")
    parser.add_argument("--seeds", help="comma-separated seeds instead of the experiment's, e.g. 0,1")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the configs' relative paths (data/, results/, experiments/) are repo-relative
    sys.path.insert(0, str(ROOT))
    import torch

    extra = [*args.overrides, *([f"seed={args.seeds}"] if args.seeds else [])]
    summary, t0 = [], time.perf_counter()
    for experiment in args.experiments or PROFILES[args.profile]:
        problem = dataset_problem(experiment, args.overrides)
        if problem:
            print(f"[reproduce] {experiment}: skipped, its dataset is not available: {problem}")
            summary.append(f"{experiment}: skipped (dataset not available)")
            continue
        if args.profile == "full" and not torch.cuda.is_available():
            from hydra.utils import instantiate

            from lbam.config import compose

            dm = instantiate(compose([f"experiment={experiment}", *args.overrides]).dataset)
            dm.setup()
            print_cpu_estimate(experiment, dm.metadata["n_train"])
        for sweep in ([], EXTRA):
            cmd = [sys.executable, "-m", "lbam.train", "-m", f"experiment={experiment}", *sweep, *extra]
            print("[reproduce] " + " ".join(cmd[1:]), flush=True)
            code = subprocess.run(cmd, cwd=ROOT).returncode
            summary.append(f"{' '.join(cmd[4:])}: {'done' if code == 0 else f'exit {code}'}")
    print(f"\n[reproduce] {(time.perf_counter() - t0) / 60:.1f} min")
    print("\n".join(f"  {s}" for s in summary))
    return subprocess.run([sys.executable, "-m", "lbam.report"], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
