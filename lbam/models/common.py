"""Helpers shared by the backbones: width scaling, attention insertion, pretrained weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

import lbam.attention


class AdaptiveAvgPool(nn.AdaptiveAvgPool2d):
    """`nn.AdaptiveAvgPool2d` without its CUDA backward kernel where it is not needed: an identity when the input
    already has the output size (VGG's 7×7 at 224 px), a mean for a 1×1 output (global pooling). That kernel has
    no deterministic implementation, so `trainer.deterministic=true` failed on a GPU; the values are the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.output_size if isinstance(self.output_size, tuple) else (self.output_size,) * 2
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        if tuple(size) == (1, 1):
            return x.mean((-2, -1), keepdim=True)
        return super().forward(x)


def scale_width(channels: int, width_mult: float) -> int:
    """`channels × width_mult`; unchanged at 1.0, else rounded to a multiple of 8 when ≥ 8, else to an int ≥ 1.

    Multiples of 8 keep scaled convs friendly to vectorised kernels; tiny widths stay ≥ 1 so tests can go small.
    """
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    if width_mult == 1:
        return channels
    w = channels * width_mult
    return 8 * round(w / 8) if w >= 8 else max(1, round(w))


class AttentionInserter:
    """Builds the attention module for each insertion point through `lbam.attention.build_attention`.

    Keeps the inserted modules, in the order they are created, in `modules` (the model's `attention_modules`).
    """

    def __init__(self, name: str, kwargs: dict | None):
        self.name = name
        self.kwargs = dict(kwargs or {})
        self.modules: list[nn.Module] = []

    def __call__(self, channels: int) -> nn.Module | None:
        module = lbam.attention.build_attention(self.name, channels, **self.kwargs)
        if module is not None:
            self.modules.append(module)
        return module


def load_pretrained(builder: Callable[..., nn.Module], weights, width_mult: float, in_channels: int):
    """`builder(weights=weights)` (a torchvision model function) for the unscaled RGB model it was trained as;
    a failed download raises RuntimeError."""
    if width_mult != 1 or in_channels != 3:
        raise ValueError(
            f"pretrained weights need width_mult=1 and in_channels=3, got {width_mult} and {in_channels}"
        )
    try:
        return builder(weights=weights)
    except (OSError, RuntimeError) as err:  # URLError, HTTPError: OSError; a bad hash or file: RuntimeError
        raise RuntimeError(
            f"pretrained=True: could not load torchvision's {weights} ImageNet weights ({err}). They are downloaded "
            "once into the torch hub cache (torch.hub.get_dir()); on an offline machine place the file there "
            "first, or use pretrained=False. No fallback to random initialisation."
        ) from err
