"""Shared pieces of the attention modules: validation, ECA's adaptive kernel, a batch-of-one-safe BN, gating."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _fused


def check_input(x: torch.Tensor, channels: int) -> None:
    """Raise ValueError unless ``x`` is N×C×H×W with C == ``channels``."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"expected a 4-D tensor N×C×H×W with C={channels}, got shape {tuple(x.shape)}")


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_odd_kernel(kernel_size: int) -> int:
    check_positive("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd (keeps the output aligned with the input), got {kernel_size}"
        )
    return kernel_size


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel k = |log2(C)/γ + b/γ|_odd (truncate, then round up to odd), as the ECA code does."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class _OneValueSafeBN:
    """BatchNorm that, in train mode, falls back to running statistics when each channel has a single value.

    Batch statistics of one value are undefined (PyTorch raises); this happens for a batch of one in a
    channel MLP, or N=1 with a 1×1 feature map. Then the layer normalises as in eval mode and leaves the
    running statistics untouched. The state dict is the same as PyTorch's BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() == x.shape[1]:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class BatchNorm1d(_OneValueSafeBN, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that accepts a batch of one in train mode (see ``_OneValueSafeBN``)."""


class BatchNorm2d(_OneValueSafeBN, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that accepts one value per channel in train mode (see ``_OneValueSafeBN``)."""


def gate(
    x: torch.Tensor,
    channel: torch.Tensor | None,
    spatial: torch.Tensor | None,
    combine: str = "add",
    residual: bool = True,
    keep_map: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fuse the branch logits into M = σ(channel ∘ spatial) (∘ = + or ×, broadcast) and apply it.

    Returns ``(F + F⊗M if residual else F⊗M, M if keep_map else None)``. A missing branch (None) is left out
    of the sum. Two branches added (BAM's default, LBAM) run as ``_fused.gate``, which keeps no full-size M for
    backward, unless M itself is asked for.
    """
    if channel is not None and spatial is not None and combine == "add" and not keep_map:
        return _fused.gate(x, channel, spatial, residual), None
    if spatial is None:
        m = torch.sigmoid(channel)
    elif channel is None:
        m = torch.sigmoid(spatial)
    else:
        # The broadcast sum/product is a fresh N×C×H×W tensor, so the sigmoid may overwrite it.
        m = (channel + spatial if combine == "add" else channel * spatial).sigmoid_()
    return (torch.addcmul(x, x, m) if residual else x * m), (m if keep_map else None)


def maps(
    x: torch.Tensor, channel: torch.Tensor | None, spatial: torch.Tensor | None, m: torch.Tensor
) -> dict[str, torch.Tensor | None]:
    """The detached maps kept for visualisation (a missing branch is None; M broadcast to N×C×H×W)."""
    return {
        "channel": None if channel is None else channel.detach(),
        "spatial": None if spatial is None else spatial.detach(),
        "attention": m.detach().expand(x.shape),
    }
