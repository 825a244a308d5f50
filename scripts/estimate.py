"""How long an experiment's remaining runs will train on this device, and on a GPU how many fit on it at once:
a probe, printed in the plan of `scripts/reproduce.py`.

The probe times one eager training step (forward, loss, backward, AdamW: lbam.bench.step.make_step) per distinct
model of the remaining runs, on the device the runs will use: on the CPU at batch 4 scaled to the run's batch (CPU
cost is about linear in the batch; a small model is timed at its own batch), on a GPU at the run's batch with bf16
autocast where the GPU has it natively. On a shared CPU the load at the time of the probe counts: the plan names it.
A run's steps follow its config (training-set size or subset, batch, epochs, max_steps, limit_train_batches).
Evaluation, data loading and compilation are not counted, and a compiled GPU run steps faster than the eager
probe: it is an estimate, and the plan says so.

The probe runs in a child process (`python scripts/estimate.py --probe`, JSON in and out): the process that plans
and then launches the runs holds no CUDA context and no cached GPU memory (the probes once kept 3-5 GB of it for a
whole protocol). On a GPU it also reads each model's peak memory (the eager step's reserved bytes) and the free
memory, from which :func:`jobs_for` chooses how many runs share the GPU.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

CPU_PROBE_BATCH = 4
GIB = 2**30
# Per run, beyond the probe's peak: the CUDA context, cuDNN/cuBLAS workspaces and compiled kernels (an allowance,
# not a measurement; `make device-check` reads each run's whole footprint), and a margin on the eager peak.
PROCESS_ALLOWANCE = 1.0 * GIB
PEAK_MARGIN = 1.25
FREE_SHARE = 0.9  # of the free memory: the rest for fragmentation and the parent


def device_for(cfg: DictConfig) -> torch.device:
    """The device a run of ``cfg`` trains on (trainer.accelerator, auto = the GPU when there is one); asking
    creates no CUDA context."""
    accelerator = str(cfg.trainer.accelerator)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if gpu else "cpu")


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"this CPU ({torch.get_num_threads()} threads)"


def _time_step(cfg: DictConfig, device: torch.device, batch: int) -> tuple[float, int]:
    """(seconds, peak reserved bytes on a GPU, else 0) of one training step of ``cfg``'s model at ``batch`` on
    ``device``: the fastest of two timed steps after three warm-up steps (allocator, oneDNN primitives, AdamW
    state, cuDNN autotuning)."""
    from lbam.bench.step import make_step

    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    attention = OmegaConf.to_container(cfg.attention, resolve=True)
    name, width = backbone.pop("name"), backbone.pop("width_mult")
    backbone.pop("_target_", None)
    size = (int(cfg.dataset.image_size), float(width), batch)
    cuda = device.type == "cuda"
    if cuda:  # this model's peak alone, not the previous model's cached blocks
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step, _ = make_step(
        attention.pop("name"), size, False, device, backbone=name, attention_kwargs=attention, **backbone
    )
    bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    for i in range(4):
        start = time.perf_counter()
        with autocast:
            step()
        if cuda:
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return min(times), torch.cuda.max_memory_reserved(device) if cuda else 0


def step_seconds(cfg: DictConfig, device: torch.device) -> tuple[float, int]:
    """(seconds, peak bytes) of one training step of ``cfg``'s model at its batch size on ``device`` (see the
    module doc); on the CPU a step that the batch-4 probe puts under a second is timed again at the run's batch
    (small models are dominated by per-operation overhead, which does not scale with the batch)."""
    batch = int(cfg.dataset.batch_size)
    if device.type == "cuda" or batch <= CPU_PROBE_BATCH:
        return _time_step(cfg, device, batch)
    scaled = _time_step(cfg, device, CPU_PROBE_BATCH)[0] * batch / CPU_PROBE_BATCH
    return _time_step(cfg, device, batch) if scaled < 1.0 else (scaled, 0)


def train_steps(cfg: DictConfig, n_train: int, n_train_split: int) -> int:
    """Optimiser steps of a run of ``cfg`` whose (full) training set has ``n_train`` samples."""
    subset = cfg.dataset.get("train_subset")
    n = min(int(subset), n_train_split) if subset else n_train
    batches = max(1, math.ceil(n / int(cfg.dataset.batch_size)))
    limit = cfg.trainer.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = max(1, int(batches * limit))
    steps = batches * int(cfg.trainer.max_epochs)
    max_steps = int(cfg.trainer.get("max_steps", -1))
    return min(steps, max_steps) if max_steps > 0 else steps


@dataclass
class Probe:
    """What the child measured for one experiment's remaining runs."""

    device: str  # its name, as the plan prints it
    gpu: bool
    seconds: float | None  # training summed over the runs; None when not timed
    models: int  # distinct models probed
    runs: int
    load: float | None  # the CPU's 1-min load average during the probe
    need_bytes: int = 0  # on a GPU: the most that one run needs (peak x margin + its data + the allowance)
    need_model: str = ""  # which model that is
    free_bytes: int = 0  # on a GPU: free memory when the probe started
    total_bytes: int = 0

    def line(self) -> str:
        """The plan's estimate, one line."""
        if self.seconds is None:
            return "not estimated (--no-estimate)"
        how = "eager, the run's batch" if self.gpu else "eager, batch 4 scaled to the run's batch"
        load = "" if self.gpu else f", load average {self.load:.1f} on {os.cpu_count()} cores"
        return (
            f"estimate ~{duration(self.seconds)} of training on {self.device}{load}, summed over {self.runs} "
            f"runs (probe: one step of each of {self.models} models, {how}; evaluation and compilation not "
            "counted)"
        )


def jobs_for(probe: Probe | None, runs: int, cores: int | None = None) -> tuple[int, str]:
    """(runs at once, why) for ``JOBS=auto``: one on the CPU (all its cores to one run); on a GPU as many as fit in
    the free memory at the largest model's need, at most cores - 2 (each run drives its GPU from one Python
    thread, and compiles), at most the runs left."""
    cores = cores or os.cpu_count() or 1
    if probe is None or not probe.gpu:
        return (
            1,
            "auto on the CPU: one run at a time with every core; JOBS=N: N at once, cores // N threads each",
        )
    fit = max(1, int(probe.free_bytes * FREE_SHARE // max(probe.need_bytes, 1)))
    n = max(1, min(fit, cores - 2, runs))
    return n, (
        f"auto: {probe.free_bytes / GIB:.0f} GiB free x {FREE_SHARE:.0%} / {probe.need_bytes / GIB:.1f} GiB a run "
        f"({probe.need_model}: probe peak x {PEAK_MARGIN} + its data + {PROCESS_ALLOWANCE / GIB:.0f} GiB) = {fit} "
        f"fit; at most {cores} cores - 2 and the {runs} runs left"
    )


def probe(plan, jobs, time_it: bool = True) -> Probe | None:
    """Probe ``jobs`` (runs of ``plan``, a sweep_plan.Plan) in a child process; None when there is nothing to
    learn (no runs, or nothing asked: no time wanted and the runs train on the CPU)."""
    from sweep_plan import PlanError

    if not jobs or (not time_it and device_for(plan.cfg).type != "cuda"):
        return None
    request = {"experiment": plan.experiment, "user": plan.user, "time": time_it}
    request["jobs"] = [list(j.overrides) for j in jobs]
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--probe"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if done.returncode == 2:  # the child's own one-line error (a run that cannot be composed)
            raise PlanError(last)
        raise PlanError(f"{plan.experiment}: the estimate's probe failed (exit {done.returncode}): {last}")
    return Probe(**json.loads(done.stdout.strip().splitlines()[-1]))


def _probe_here(request: dict) -> dict:
    """The child's side: compose, set up the data (its size), probe each distinct model once."""
    from hydra.errors import HydraException
    from hydra.utils import instantiate
    from sweep_plan import PlanError, compose_experiment

    from lbam.config import compose

    experiment = request["experiment"]
    dm = instantiate(compose_experiment(experiment, request["user"]).dataset)
    with warnings.catch_warnings():  # skipped files are named when the runs set the data up
        warnings.simplefilter("ignore", UserWarning)
        dm.setup()
    n_train, n_split = (
        int(dm.metadata["n_train"]),
        int(dm.metadata.get("n_train_split", dm.metadata["n_train"])),
    )
    groups: dict[tuple[str, ...], int] = {}  # the runs that differ only by their seed train alike
    for job in request["jobs"]:
        key = tuple(o for o in job if not o.startswith("seed="))
        groups[key] = groups.get(key, 0) + 1
    device = torch.device("cpu")
    free = total = 0
    probes: dict[str, tuple[float, int]] = {}
    seconds, need, need_model = 0.0, 0, ""
    for overrides, count in groups.items():
        try:
            cfg = compose(list(overrides))
        except HydraException as e:  # the runs would fail on this job too: say so before anything runs
            raise PlanError(f"{experiment}: a run cannot be composed: {' '.join(str(e).split())}") from None
        device = device_for(cfg)
        if device.type == "cuda" and not total:
            free, total = torch.cuda.mem_get_info(device)
        key = json.dumps(
            [OmegaConf.to_container(cfg[k], resolve=True) for k in ("backbone", "attention")]
            + [cfg.dataset.image_size, cfg.dataset.batch_size, str(device)]
        )
        if key not in probes and (request["time"] or device.type == "cuda"):
            probes[key] = step_seconds(cfg, device)
        step_s, peak = probes.get(key, (0.0, 0))
        seconds += count * train_steps(cfg, n_train, n_split) * step_s
        run_need = int(peak * PEAK_MARGIN) + dm.images.nbytes + int(PROCESS_ALLOWANCE)
        if device.type == "cuda" and run_need > need:
            need, need_model = run_need, f"{cfg.backbone.name}+{cfg.attention.name}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "device": device_label(device),
        "gpu": device.type == "cuda",
        "seconds": seconds if request["time"] else None,
        "models": len(probes),
        "runs": len(request["jobs"]),
        "load": load,
        "need_bytes": need,
        "need_model": need_model,
        "free_bytes": int(free),
        "total_bytes": int(total),
    }


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _main(argv: list[str]) -> int:
    """`--probe`: a request (JSON) on stdin, the Probe's fields (JSON) as the last line of stdout."""
    if argv != ["--probe"]:
        print(
            "estimate.py: run by scripts/reproduce.py as `estimate.py --probe` (a JSON request on stdin)",
            file=sys.stderr,
        )
        return 2
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "scripts")]  # this checkout's lbam, and the planning modules beside
    from sweep_plan import PlanError

    try:
        print(json.dumps(_probe_here(json.loads(sys.stdin.read()))))
    except PlanError as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
