"""The whole cnn4 training step (forward, cross-entropy, backward, AdamW), eager and compiled.

The embodiment-1 model (``cnn4``, 3 classes, attention at its paper's placement) on a fixed in-memory batch, at
the quick-profile size (48 px, width 0.5, batch 64) and the full size (128 px, width 1, batch 32). "compiled" is
``model.compile()`` in place, as a training run would do it; the optimiser step stays eager. ``compile_s`` is the
first step's wall time minus a timed step's: compilation, kept out of ``images_per_s``; the bench compiles in a
fresh inductor cache (``cold_compile``), so this is a first compile.

Run as a script, ``python lbam/bench/step.py --attention lbam --size full --mode eager``, it times one
configuration with whichever ``lbam`` is on PYTHONPATH and prints one JSON line: this is how ``--against``
measures an older checkout (its own modules, its own build_backbone) in alternation with this one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

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


def make_step(attention: str, size: str, compiled: bool, device: torch.device):
    """(step function, wall seconds of its first call) for a fresh seeded model, batch and AdamW."""
    from lbam.models import build_backbone

    image, width, batch = SIZES[size]
    torch.manual_seed(0)
    model = build_backbone("cnn4", 3, attention=attention, placement="auto", width_mult=width).to(device)
    if compiled:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, image, image, device=device)
    y = torch.randint(0, 3, (batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


@contextlib.contextmanager
def cold_compile():
    """A fresh, temporary inductor cache (read at each compile), so that compile times are those of a first run."""
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="lbam-bench-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            yield
        finally:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
            if before is not None:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def bench_step(cfg: StepConfig, device: torch.device, info: dict[str, object]) -> list[dict[str, object]]:
    """One row per (size, attention, mode); candidates of one size are timed in interleaved rounds."""
    # Imported here: run as a script in an older checkout, this file must need nothing but its lbam.models.
    from lbam.bench.common import interleaved_times, load_avg, paired_ratio

    rows = []
    for size in cfg.sizes:
        torch.compiler.reset()  # a new input shape: compile static graphs afresh (not Dynamo's dynamic retry)
        steps, first = {}, {}
        for attention in cfg.attentions:
            for mode in ("eager", "compiled"):
                steps[(attention, mode)], first[(attention, mode)] = make_step(
                    attention, size, mode == "compiled", device
                )
        times = interleaved_times(steps, cfg.rounds, cfg.min_s)
        image, width, batch = SIZES[size]
        for (attention, mode), t in times.items():
            step_s = statistics.median(t)
            rows.append(
                {
                    **info,
                    "load_avg_1m": load_avg(),
                    "size": size,
                    "image_size": image,
                    "width_mult": width,
                    "batch": batch,
                    "attention": attention,
                    "mode": mode,
                    "step_ms": 1e3 * step_s,
                    "images_per_s": batch / step_s,
                    "over_eager": paired_ratio(times[(attention, "eager")], t),  # speed-up: eager time / this
                    "compile_s": first[(attention, mode)] - step_s if mode == "compiled" else "",
                }
            )
        print(
            f"step {size}: "
            + "  ".join(f"{a}/{m}={batch / statistics.median(t):.0f} img/s" for (a, m), t in times.items()),
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Time one cnn4 training step configuration; prints JSON.")
    p.add_argument("--attention", default="lbam")
    p.add_argument("--size", choices=sorted(SIZES), default="quick")
    p.add_argument("--mode", choices=("eager", "compiled"), default="eager")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    step, first = make_step(args.attention, args.size, args.mode == "compiled", torch.device("cpu"))
    step()  # warm: allocator, oneDNN primitives (and an older checkout's lazily built kernel)
    timer = benchmark.Timer("step()", globals={"step": step}, num_threads=args.threads)
    step_s = timer.timeit(args.steps).mean
    batch = SIZES[args.size][2]
    print(json.dumps({"images_per_s": batch / step_s, "step_ms": 1e3 * step_s, "first_step_s": first}))


if __name__ == "__main__":
    main()
