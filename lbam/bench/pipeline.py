"""Pipeline efficiency: training throughput of the real Lightning loop against the compute-only bound.

The loop is ``lbam.train.train`` itself (the runner's LitClassifier, datamodule and Trainer, with its
metrics, logging and checkpointing) on the embodiment-1 model; a callback timestamps every training batch.
The bound repeats forward, loss, backward and optimiser step of the same module with the same optimiser on
real training batches already in memory (no data loading, no Lightning). Both are measured in the same
process, interleaved: the callback runs a bound segment at the end of every epoch, so drifts of the machine
hit both alike. Loop throughput counts the gaps between consecutive batches of one epoch (the steady-state
training step, data waits included); epoch boundaries (iterator reset, checkpoint) are reported apart.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from lbam.bench.common import machine_info, synchronize


@dataclass(frozen=True)
class PipelineConfig:
    # The embodiment-1 quick profile (cnn4, width_mult 0.5, 64×64 crops, batch 64) on the real BCCD.
    overrides: tuple[str, ...] = ("experiment=embodiment1_quick",)
    synthetic_overrides: tuple[str, ...] = ("experiment=embodiment1_quick", "dataset=synthetic_bccd")
    attentions: tuple[str, ...] = ("none", "lbam")
    # Loop and bound alternate once per epoch: 8 short epochs rather than 3 long ones, so that the machine's
    # drift (±10 % over a minute on the 2-core VM) hits both alike (3 × 24 gave ratios from 0.89 to 1.12).
    epochs: int = 8
    batches_per_epoch: int | None = 12  # trainer.limit_train_batches (None: the whole train split)
    warmup_batches: int = 3  # of the first epoch, not timed (lazy init, allocator warm-up)
    bound_steps: int = 12  # per epoch
    bound_batches: int = 8  # distinct in-memory batches the bound cycles through


QUICK = PipelineConfig(
    overrides=(
        "dataset=synthetic_bccd",
        "dataset.image_size=16",
        "dataset.batch_size=8",
        "backbone.width_mult=0.125",
    ),
    synthetic_overrides=(),
    attentions=("lbam",),
    epochs=2,
    batches_per_epoch=None,
    warmup_batches=1,
    bound_steps=3,
    bound_batches=2,
)


class LoopAndBound(pl.Callback):
    """Timestamps every training batch, and runs a compute-only segment at the end of every epoch."""

    def __init__(self, cfg: PipelineConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.ends: list[tuple[int, float, int]] = []  # (epoch, time, batch size) of each training batch
        self.bound: list[tuple[float, int]] = []  # (seconds, batch size) of each bound step
        self.segments: list[float] = []  # wall seconds of each bound segment (not part of the loop)
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        # Real training batches (augmented, collated) from the run's own datamodule, held on the device.
        loader = trainer.datamodule.train_dataloader()
        self.batches = [
            tuple(t.to(self.device) for t in b) for b in itertools.islice(loader, self.cfg.bound_batches)
        ]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self.ends.append((trainer.current_epoch, time.perf_counter(), len(batch[1])))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        start, optimizer = time.perf_counter(), trainer.optimizers[0]
        warm = 2 if not self.bound else 0  # untimed steps before the first segment
        for i in range(warm + self.cfg.bound_steps):
            x, y = self.batches[i % len(self.batches)]
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with trainer.precision_plugin.train_step_context():  # the loop's autocast (bf16-mixed on GPU)
                loss = F.cross_entropy(pl_module(x).float(), y)
            loss.backward()
            optimizer.step()
            synchronize(self.device)
            if i >= warm:
                self.bound.append((time.perf_counter() - t0, len(y)))
        optimizer.zero_grad(set_to_none=True)
        self.segments.append(time.perf_counter() - start)


def loop_throughput(
    ends: list[tuple[int, float, int]], warmup: int, excluded: tuple[float, ...] | list[float] = ()
) -> tuple[float, float]:
    """(in-epoch images/s, seconds per epoch boundary) after ``warmup`` batches. In-epoch sums only the gaps
    between consecutive batches of one epoch; a boundary is the gap from an epoch's last batch to the next
    epoch's first, minus the ``excluded`` time spent there (the bound segments)."""
    timed = ends[warmup:]
    gaps = [(b[1] - a[1], b[2]) for a, b in itertools.pairwise(timed) if a[0] == b[0]]
    in_epoch = sum(n for _, n in gaps) / sum(t for t, _ in gaps)
    crossings = [b[1] - a[1] for a, b in itertools.pairwise(timed) if a[0] != b[0]]
    boundaries = [c - skip for c, skip in zip(crossings, [*excluded, *[0.0] * len(crossings)])]
    return in_epoch, (sum(boundaries) / len(boundaries) if boundaries else 0.0)


def _has_bccd(cfg) -> bool:
    return (Path(cfg.paths.data_dir) / "BCCD" / "Annotations").is_dir()


def bench_pipeline(cfg: PipelineConfig, device: torch.device) -> list[dict[str, object]]:
    """One row per attention: loop and bound images/s and their ratio, with the data it ran on."""
    from lbam.train import compose_config, train

    info = machine_info(device)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    rows = []
    with tempfile.TemporaryDirectory(prefix="lbam-bench-") as tmp:
        base = [
            f"paths.results_dir={tmp}/results",
            f"paths.experiments_dir={tmp}/experiments",
            f"trainer.max_epochs={cfg.epochs}",
            f"trainer.limit_train_batches={cfg.batches_per_epoch or 'null'}",
            f"trainer.accelerator={accelerator}",
            "force=true",
        ]
        overrides = list(cfg.overrides)
        if cfg.synthetic_overrides and not _has_bccd(compose_config(overrides)):
            print(
                "bench pipeline: no BCCD under LBAM_DATA_DIR; running on synthetic BCCD instead", flush=True
            )
            overrides = list(cfg.synthetic_overrides)
        for attention in cfg.attentions:
            run_overrides = [*overrides, f"attention={attention}", *base]
            probe = LoopAndBound(cfg, device)
            row = train(compose_config(run_overrides), overrides=run_overrides, callbacks=[probe])
            if row["status"] != "ok":
                raise RuntimeError(f"bench pipeline: training failed: {row['error']}")
            loop, boundary = loop_throughput(probe.ends, cfg.warmup_batches, probe.segments)
            bound = sum(n for _, n in probe.bound) / sum(t for t, _ in probe.bound)
            rows.append(
                {
                    **info,
                    "dataset": row["dataset"],
                    "synthetic": row["synthetic"],
                    "backbone": row["backbone"],
                    "attention": attention,
                    "width_mult": row["width_mult"],
                    "image_size": row["image_size"],
                    "batch": len(probe.batches[0][1]),
                    "n_train": row["n_train"],
                    "epochs": cfg.epochs,
                    "batches_per_epoch": len(probe.ends) // cfg.epochs,
                    "precision": row["precision"],
                    "loop_images_per_s": loop,
                    "bound_images_per_s": bound,
                    "loop_over_bound": loop / bound,
                    "epoch_boundary_s": boundary,
                }
            )
            print(
                f"pipeline {row['dataset']} {row['backbone']}+{attention}: loop {loop:.0f} img/s, "
                f"bound {bound:.0f} img/s, ratio {loop / bound:.3f}; {boundary:.2f} s per epoch boundary",
                flush=True,
            )
    return rows
