"""cnn4+LBAM training step of this checkout (eager and compiled) against an older checkout's eager one.

Each measurement is a fresh process running ``step.py`` (this checkout's file) with PYTHONPATH set to one of the
two checkouts, so each side runs its own ``lbam``; the processes alternate (in shuffled order per round), and
the ratio of a round pairs its two measurements.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from lbam.bench.common import REPO_ROOT, load_avg
from lbam.results import git_commit

STEP_SCRIPT = Path(__file__).with_name("step.py")


def run_step(root: Path, mode: str, size: str, steps: int, threads: int) -> dict[str, float]:
    cmd = [sys.executable, str(STEP_SCRIPT), "--attention", "lbam", "--size", size, "--mode", mode]
    cmd += ["--steps", str(steps), "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"step.py in {root} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_against(old_root: Path, sizes, rounds: int, steps: int, threads: int, info: dict) -> list[dict]:
    """One row per (size, round, side); sides: old = ``old_root`` eager, new eager and new compiled."""
    old = Path(old_root).resolve()
    sides = {"old": (old, "eager"), "new": (REPO_ROOT, "eager"), "new_compiled": (REPO_ROOT, "compiled")}
    commits = {side: git_commit(root) for side, (root, _) in sides.items()}
    rows, rng = [], random.Random(0)
    for size in sizes:
        for r in range(rounds):
            for side in rng.sample(list(sides), len(sides)):
                root, mode = sides[side]
                result = run_step(root, mode, size, steps, threads)
                rows.append(
                    {**info, "load_avg_1m": load_avg(), "size": size, "round": r, "side": side}
                    | {"side_commit": commits[side], "mode": mode, **result}
                )
                print(
                    f"against {size} round {r} {side} ({mode}): {result['images_per_s']:.1f} img/s",
                    flush=True,
                )
    return rows
