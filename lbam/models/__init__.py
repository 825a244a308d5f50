"""Backbones of the patent's embodiments (`cnn4`, `vgg16`) and ResNets for checks against published tables.

`build_backbone` inserts attention modules built by `lbam.attention.build_attention` at the positions named
by `placement` (each backbone's module docstring lists them):
- `stage`: one module at the end of each stage, before its down-sampling (BAM's "bottleneck" positions);
- `block`: one inside every block (SE/CBAM/ECA style);
- `auto`: each module's own paper's choice: `stage` for bam/lbam, `block` for se/cbam/eca (`stage` otherwise).
Every model has `attention_modules` (the inserted modules, in forward order) and `default_input_size` (H, W).
"""

from __future__ import annotations

from functools import partial

import torch.nn as nn

from .cnn4 import CNN4
from .common import scale_width
from .resnet import build_resnet
from .vgg import build_vgg16

BACKBONES = ("cnn4", "vgg16", "resnet50", "resnet18")
PLACEMENTS = ("stage", "block", "auto")
AUTO_PLACEMENT = {"bam": "stage", "lbam": "stage", "se": "block", "cbam": "block", "eca": "block"}

_BUILDERS = {
    "cnn4": CNN4,
    "vgg16": build_vgg16,
    "resnet50": partial(build_resnet, "resnet50"),
    "resnet18": partial(build_resnet, "resnet18"),
}


def build_backbone(
    name: str,
    num_classes: int,
    attention: str = "none",
    attention_kwargs: dict | None = None,
    placement: str = "stage",
    width_mult: float = 1.0,
    **kw,
) -> nn.Module:
    """Backbone `name` for `num_classes` with `attention` at `placement`; `kw` goes to the backbone
    (`widths` for cnn4, `batch_norm`/`pretrained` for vgg16, `pretrained` for the ResNets, `in_channels`)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    if placement == "auto":
        placement = AUTO_PLACEMENT.get(attention, "stage")
    return _BUILDERS[name](
        num_classes,
        attention=attention,
        attention_kwargs=attention_kwargs,
        placement=placement,
        width_mult=width_mult,
        **kw,
    )


__all__ = ["AUTO_PLACEMENT", "BACKBONES", "PLACEMENTS", "build_backbone", "scale_width"]
