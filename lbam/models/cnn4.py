"""`cnn4`: the 4-stage CNN of the patent's embodiment 1 (128×128×3 inputs).

Layout: 4 × (3×3 conv → BN → ReLU → 2×2 max-pool), one residual unit (3×3 conv → BN → ReLU → 3×3 conv → BN,
identity shortcut, ReLU), global average pool, FC. The patent gives no widths; the default 32-64-128-256
(doubling per stage, as VGG/ResNet do) keeps the model small enough for BCCD's 364 images.

Attention positions:
- `stage`: after each conv stage's ReLU, before its max-pool (BAM's "bottleneck" positions): 4 modules. The
  residual unit gets none: it is followed by the global pool, and BAM likewise puts no module before a
  network's final global pool (ResNet: after layer1..3 only).
- `block`: inside every block: the 4 stage positions (each stage is a single conv block) plus one inside the
  residual unit, after its last BN and before the addition (SE/CBAM/ECA style): 5 modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .common import AdaptiveAvgPool, AttentionInserter, scale_width

DEFAULT_WIDTHS = (32, 64, 128, 256)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]


class ResidualUnit(nn.Module):
    """relu(x + bn(conv(relu(bn(conv(x))))) [→ attention before the addition]) with an identity shortcut."""

    def __init__(self, channels: int, attention: nn.Module | None = None):
        super().__init__()
        layers = [*_conv_bn(channels, channels), nn.ReLU(inplace=True), *_conv_bn(channels, channels)]
        if attention is not None:
            layers.append(attention)
        self.body = nn.Sequential(*layers)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class CNN4(nn.Module):
    """Embodiment 1's CNN; `placement` is `stage` or `block` (see the module docstring)."""

    default_input_size = (128, 128)

    def __init__(
        self,
        num_classes: int,
        attention: str = "none",
        attention_kwargs: dict | None = None,
        placement: str = "stage",
        width_mult: float = 1.0,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        in_channels: int = 3,
    ):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"cnn4 needs 4 stage widths, got {list(widths)}")
        widths = [scale_width(w, width_mult) for w in widths]
        insert = AttentionInserter(attention, attention_kwargs)
        stages = []
        for cin, cout in zip([in_channels, *widths[:-1]], widths):
            layers = [*_conv_bn(cin, cout), nn.ReLU(inplace=True)]
            attn = insert(cout)
            if attn is not None:
                layers.append(attn)
            stages.append(nn.Sequential(*layers, nn.MaxPool2d(2)))
        self.stages = nn.Sequential(*stages)
        self.residual = ResidualUnit(widths[-1], insert(widths[-1]) if placement == "block" else None)
        self.pool = AdaptiveAvgPool(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        self.attention_modules = insert.modules
        self.widths = widths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.residual(self.stages(x))), 1))
