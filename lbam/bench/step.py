"""The whole cnn4 training step (forward, cross-entropy, backward, AdamW), eager and compiled; ``--against``.

The embodiment-1 model (``cnn4``, 3 classes, attention at its paper's placement) on a fixed in-memory batch, at
the quick-profile size (48 px, width 0.5, batch 64) and the full size (128 px, width 1, batch 32). "compiled" is
``model.compile()`` in place, as a training run would do it; the optimiser step stays eager. ``compile_s`` is the
first step's wall time minus a timed step's: compilation, kept out of ``images_per_s``; the bench compiles in a
fresh inductor cache (``cold_compile``), so this is a first compile.

``bench_against`` times cnn4+LBAM's step of this checkout (eager and compiled) against an older checkout's eager
one: each figure is a fresh process running this file as a script with one checkout's ``lbam`` on PYTHONPATH
(its own modules and build_backbone; the script imports nothing else of ``lbam``), in shuffled order per round;
a round's ratio pairs its two measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

# image side, width_mult, batch: the quick and full profiles' sizes; "tiny" is for tests.
SIZES = {"quick": (48, 0.5, 64), "full": (128, 1.0, 32), "tiny": (16, 0.125, 4)}


@dataclass(frozen=True)
class StepConfig:
    sizes: tuple[str, ...] = ("quick", "full")
    attentions: tuple[str, ...] = ("none", "bam", "lbam")
    rounds: int = 7
    min_s: float = 0.5


QUICK = StepConfig(sizes=("tiny",), attentions=("lbam",), rounds=2, min_s=0.0)


def make_step(
    attention: str,
    size: str | tuple,
    compiled: bool,
    device: torch.device,
    backbone: str = "cnn4",
    backend: str = "inductor",
    compile_mode: str = "default",
    **model_kw,
):
    """(step function, wall seconds of its first call) for a fresh seeded model, batch and AdamW. ``size`` is a
    key of SIZES or (image side, width_mult, batch); ``model_kw`` go to build_backbone (placement: "auto");
    ``backend`` and ``compile_mode`` are torch.compile's when ``compiled`` ("reduce-overhead": CUDA graphs)."""
    from lbam.models import build_backbone

    image, width, batch = SIZES[size] if isinstance(size, str) else size
    torch.manual_seed(0)
    kw = {"placement": "auto", "width_mult": width, **model_kw}
    model = build_backbone(backbone, 3, attention=attention, **kw).to(device)
    if compiled:
        model.compile(backend=backend, mode=None if compile_mode == "default" else compile_mode)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, image, image, device=device)
    y = torch.randint(0, 3, (batch,), device=device)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()  # on the device: read only by a caller that checks it (no sync while timing)

    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


def profile_step(step, steps: int, device: torch.device) -> dict[str, float | None]:
    """Per step of ``step`` (already warm), over ``steps`` calls: wall ms, GPU-busy ms (the kernels' summed time,
    torch.profiler: a launch-bound step is busy for a fraction of its wall time) and peak GPU memory (GiB, since
    the caller's last reset); busy and memory are None on the CPU."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    if not cuda:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return {"wall_ms": 1e3 * (time.perf_counter() - start) / steps, "busy_ms": None, "peak_gib": None}
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    wall = (time.perf_counter() - start) / steps  # timed apart: the profiler's own overhead is not in it
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
    busy_us = sum(e.self_device_time_total for e in prof.key_averages())  # the table's "Self CUDA time total"
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    return {"wall_ms": 1e3 * wall, "busy_ms": busy_us / 1e3 / steps, "peak_gib": peak}


@contextlib.contextmanager
def cold_compile():
    """A fresh, temporary inductor cache (read at each compile), so that compile times are those of a first run."""
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="lbam-bench-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            yield
        finally:  # the caller's cache again, or none
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
            if before is not None:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def bench_step(
    cfg: StepConfig, device: torch.device, info: dict[str, object], backend: str = "inductor"
) -> list[dict[str, object]]:
    """One row per (size, attention, mode); candidates of one size are timed in interleaved rounds."""
    # Imported here: run as a script in an older checkout, this file must need nothing but its lbam.models.
    from lbam.bench.common import interleaved_times, load_avg, paired_ratio

    rows = []
    for size in cfg.sizes:
        torch.compiler.reset()  # a new input shape: compile static graphs afresh (not Dynamo's dynamic retry)
        kinds = [(a, m) for a in cfg.attentions for m in ("eager", "compiled")]
        # (attention, mode) -> (step function, wall seconds of its first call)
        made = {(a, m): make_step(a, size, m == "compiled", device, backend=backend) for a, m in kinds}
        times = interleaved_times({k: step for k, (step, _) in made.items()}, cfg.rounds, cfg.min_s)
        image, width, batch = SIZES[size]
        for (attention, mode), t in times.items():
            step_s = statistics.median(t)
            rows.append(
                {**info, "load_avg_1m": load_avg(), "size": size, "image_size": image, "width_mult": width}
                | {"batch": batch, "attention": attention, "mode": mode, "step_ms": 1e3 * step_s}
                | {"images_per_s": batch / step_s, "over_eager": paired_ratio(times[(attention, "eager")], t)}
                | {"compile_s": made[(attention, mode)][1] - step_s if mode == "compiled" else ""}
            )
        rates = "  ".join(f"{a}/{m}={batch / statistics.median(t):.0f} img/s" for (a, m), t in times.items())
        print(f"step {size}: {rates}", flush=True)
    return rows


def _run_script(root: Path, mode: str, size: str, steps: int, threads: int, backend: str) -> dict[str, float]:
    """This file as a script, in a fresh process, with ``root``'s ``lbam`` on PYTHONPATH."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--attention", "lbam", "--size", size]
    cmd += ["--mode", mode, "--steps", str(steps), "--threads", str(threads), "--backend", backend]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"step.py in {root} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_against(
    old_root: Path, sizes, rounds: int, steps: int, threads: int, info: dict, backend: str = "inductor"
) -> list[dict]:
    """One row per (size, round, side); sides: old = ``old_root`` eager, new eager and new compiled."""
    from lbam.bench.common import REPO_ROOT, load_avg
    from lbam.results import git_commit

    old, new = Path(old_root).resolve(), REPO_ROOT
    sides = {"old": (old, "eager"), "new": (new, "eager"), "new_compiled": (new, "compiled")}
    commits = {side: git_commit(root) for side, (root, _) in sides.items()}
    rows, rng = [], random.Random(0)
    for size in sizes:
        for r in range(rounds):
            for side in rng.sample(list(sides), len(sides)):
                root, mode = sides[side]
                result = _run_script(root, mode, size, steps, threads, backend)
                rows.append(
                    {**info, "load_avg_1m": load_avg(), "size": size, "round": r, "side": side}
                    | {"side_commit": commits[side], "mode": mode, **result}
                )
                print(
                    f"against {size} round {r} {side} ({mode}): {result['images_per_s']:.1f} img/s",
                    flush=True,
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Script mode: time one configuration with whichever ``lbam`` is on PYTHONPATH; print one JSON line."""
    p = argparse.ArgumentParser(description="Time one cnn4 training step configuration; prints JSON.")
    p.add_argument("--attention", default="lbam")
    p.add_argument("--size", choices=sorted(SIZES), default="quick")
    p.add_argument("--mode", choices=("eager", "compiled"), default="eager")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="inductor")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    step, first = make_step(
        args.attention, args.size, args.mode == "compiled", torch.device("cpu"), backend=args.backend
    )
    step()  # warm: allocator, oneDNN primitives (and an older checkout's lazily built kernel)
    timer = benchmark.Timer("step()", globals={"step": step}, num_threads=args.threads)
    step_s = timer.timeit(args.steps).mean
    batch = SIZES[args.size][2]
    print(json.dumps({"images_per_s": batch / step_s, "step_ms": 1e3 * step_s, "first_step_s": first}))


if __name__ == "__main__":
    main()
