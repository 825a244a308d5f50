"""How long an experiment's remaining runs will train on this device: an estimate from a probe, printed in the plan
of `scripts/reproduce.py`.

The probe times one eager training step (forward, loss, backward, AdamW: lbam.bench.step.make_step) per distinct
model of the remaining runs, on the device the runs will use: on the CPU at batch 4 scaled to the run's batch (CPU
cost is about linear in the batch; a small model is timed at its own batch), on a GPU at the run's batch with bf16
autocast where the GPU has it natively. On a shared CPU the load at the time of the probe counts: the plan names it.
A run's steps follow its config (training-set size or subset, batch, epochs, max_steps, limit_train_batches).
Evaluation, data loading and compilation are not counted, and a compiled GPU run steps faster than the eager
probe: it is an estimate, and the plan says so.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings

import torch
from omegaconf import DictConfig, OmegaConf

CPU_PROBE_BATCH = 4


def device_for(cfg: DictConfig) -> torch.device:
    """The device a run of ``cfg`` trains on (trainer.accelerator, auto = the GPU when there is one)."""
    accelerator = str(cfg.trainer.accelerator)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if gpu else "cpu")


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"this CPU ({torch.get_num_threads()} threads)"


def _time_step(cfg: DictConfig, device: torch.device, batch: int) -> float:
    """Seconds of one training step of ``cfg``'s model at ``batch`` on ``device``: the fastest of two timed steps
    after three warm-up steps (allocator, oneDNN primitives, AdamW state, cuDNN autotuning)."""
    from lbam.bench.step import make_step

    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    attention = OmegaConf.to_container(cfg.attention, resolve=True)
    name, width = backbone.pop("name"), backbone.pop("width_mult")
    backbone.pop("_target_", None)
    size = (int(cfg.dataset.image_size), float(width), batch)
    step, _ = make_step(
        attention.pop("name"), size, False, device, backbone=name, attention_kwargs=attention, **backbone
    )
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    for i in range(4):
        start = time.perf_counter()
        with autocast:
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return min(times)


def step_seconds(cfg: DictConfig, device: torch.device) -> float:
    """Seconds of one training step of ``cfg``'s model at its batch size on ``device`` (see the module doc); on
    the CPU a step that the batch-4 probe puts under a second is timed again at the run's batch (small models
    are dominated by per-operation overhead, which does not scale with the batch)."""
    batch = int(cfg.dataset.batch_size)
    if device.type == "cuda" or batch <= CPU_PROBE_BATCH:
        return _time_step(cfg, device, batch)
    scaled = _time_step(cfg, device, CPU_PROBE_BATCH) * batch / CPU_PROBE_BATCH
    return _time_step(cfg, device, batch) if scaled < 1.0 else scaled


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


def estimate(plan, jobs) -> str:
    """One line: the estimated training time of ``jobs`` (of ``plan``, a sweep_plan.Plan) on their device."""
    from hydra.errors import HydraException
    from hydra.utils import instantiate
    from sweep_plan import PlanError

    from lbam.config import compose

    if not jobs:
        return "nothing to run"
    dm = instantiate(plan.cfg.dataset)
    with warnings.catch_warnings():  # skipped files are named when the runs set the data up
        warnings.simplefilter("ignore", UserWarning)
        dm.setup()
    n_train, n_split = (
        int(dm.metadata["n_train"]),
        int(dm.metadata.get("n_train_split", dm.metadata["n_train"])),
    )
    groups: dict[tuple[str, ...], int] = {}  # the runs that differ only by their seed train alike
    for job in jobs:
        key = tuple(o for o in job.overrides if not o.startswith("seed="))
        groups[key] = groups.get(key, 0) + 1
    probes: dict[str, float] = {}
    total, device = 0.0, torch.device("cpu")
    for overrides, count in groups.items():
        try:
            cfg = compose(list(overrides))
        except HydraException as e:  # the multirun would fail on this job too: say so before anything runs
            raise PlanError(
                f"{plan.experiment}: a run cannot be composed: {' '.join(str(e).split())}"
            ) from None
        device = device_for(cfg)
        key = json.dumps(
            [OmegaConf.to_container(cfg[k], resolve=True) for k in ("backbone", "attention")]
            + [cfg.dataset.image_size, cfg.dataset.batch_size, str(device)]
        )
        if key not in probes:
            probes[key] = step_seconds(cfg, device)
        total += count * train_steps(cfg, n_train, n_split) * probes[key]
    how = "eager, batch 4 scaled to the run's batch" if device.type == "cpu" else "eager, the run's batch"
    load = (
        f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if device.type == "cpu" else ""
    )
    return (
        f"estimate ~{duration(total)} of training on {device_label(device)}{load}, summed over {len(jobs)} runs "
        f"(probe: one step of each of {len(probes)} models, {how}; evaluation and compilation not counted)"
    )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
