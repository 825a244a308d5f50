"""Backbone cost: each backbone with each attention at its embodiment's input size."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from lbam.attention import ATTENTIONS
from lbam.bench.common import interleaved_times, machine_info, paired_ratio
from lbam.complexity import profile_model
from lbam.models import build_backbone


@dataclass(frozen=True)
class BackboneConfig:
    # (backbone, num_classes, input size): cnn4 on BCCD (3 classes), vgg16 on pets (2), resnet50 on ImageNet.
    backbones: tuple[tuple[str, int, int], ...] = (
        ("cnn4", 3, 128),
        ("vgg16", 2, 224),
        ("resnet50", 1000, 224),
    )
    batch: int = 1
    width_mult: float = 1.0
    warmup: int = 2
    repeats: int = 7


QUICK = BackboneConfig(backbones=(("cnn4", 3, 32),), width_mult=0.25, warmup=1, repeats=3)


def bench_backbones(cfg: BackboneConfig, device: torch.device) -> list[dict[str, object]]:
    """One row per (backbone, attention): params, MACs, FLOPs and eval forward latency per image."""
    info = machine_info(device)
    rows: list[dict[str, object]] = []
    for backbone, num_classes, size in cfg.backbones:
        models = {}
        for name in ATTENTIONS:
            torch.manual_seed(0)
            models[name] = (
                build_backbone(backbone, num_classes, attention=name, width_mult=cfg.width_mult)
                .to(device)
                .eval()
            )
        x = torch.randn(cfg.batch, 3, size, size, device=device)

        def forward(model, x=x):
            def run() -> None:
                with torch.inference_mode():
                    model(x)

            return run

        times = interleaved_times({n: forward(m) for n, m in models.items()}, device, cfg.warmup, cfg.repeats)
        block = {}
        for name, model in models.items():
            cost = profile_model(model, input_size=(1, 3, size, size))
            block[name] = {**cost, "latency_ms_per_image": 1e3 * statistics.median(times[name]) / cfg.batch}
        for name, r in block.items():
            row = {**info, "backbone": backbone, "width_mult": cfg.width_mult, "input_size": size}
            row |= {"batch": cfg.batch, "attention": name, **r}
            for key in ("params", "macs", "flops"):
                row[f"{key}_over_none"] = r[key] / block["none"][key]
            row["latency_over_none"] = paired_ratio(times[name], times["none"])
            rows.append(row)
        print(
            f"{backbone}@{size}  "
            + "  ".join(f"{n}={r['latency_ms_per_image']:.1f}ms" for n, r in block.items()),
            flush=True,
        )
    return rows
