"""Lightweight Bottleneck Attention Module (LBAM), as the abstract of patent CN114118415A states.

    Mc(F) = conv1d_k(GAP(F)) + conv1d_k(GMP(F))            (C×1×1; cross-channel 1-D conv, no bias)
    Ms(F) = BAM's spatial branch                          (1×H×W; see ``SpatialBranch``)
    M(F)  = σ(Mc(F) + Ms(F))  (broadcast to C×H×W),   F' = F + F ⊗ M(F)   (residual=True)  or  F ⊗ M(F)

It replaces BAM's channel MLP (≈2C²/r parameters) by ECA-style 1-D convolutions (k parameters).
Options (defaults):
- ``kernel_size`` (None): odd k of the 1-D conv; None = ECA's adaptive k = |log2(C)/2 + 1/2|_odd.
- ``reduction`` (16), ``dilation`` (4): of the spatial branch, as BAM.
- ``shared_conv`` (True): one conv for both pooled vectors (k parameters); False: one per pooling (2k).
- ``residual`` (True): F + F⊗M as BAM; False: F⊗M.
- ``branches`` ("both"): "channel" or "spatial" drops the other branch (ablation).
- ``pool`` ("avgmax"): pooled vectors of the channel branch, "avg" (GAP only) or "max" (GMP only).
"""

import torch
from torch import nn

from ._common import check_choice, check_input, check_odd_kernel, check_positive, eca_kernel_size
from .bam import SpatialBranch

BRANCHES = ("both", "channel", "spatial")
POOLS = ("avgmax", "avg", "max")


class LBAM(nn.Module):
    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int | None = None,
        dilation: int = 4,
        shared_conv: bool = True,
        residual: bool = True,
        branches: str = "both",
        pool: str = "avgmax",
    ):
        super().__init__()
        self.channels = check_positive("channels", channels)
        check_positive("reduction", reduction)
        check_positive("dilation", dilation)
        self.branches = check_choice("branches", branches, BRANCHES)
        self.pool = check_choice("pool", pool, POOLS)
        self.residual = bool(residual)
        self.shared_conv = bool(shared_conv)
        k = eca_kernel_size(channels) if kernel_size is None else check_odd_kernel(kernel_size)
        self.conv = None
        if branches != "spatial":
            # Separate convs for GAP and GMP are one conv with two input channels: one weight, 1×2×k.
            n_in = 2 if pool == "avgmax" and not shared_conv else 1
            self.conv = nn.Conv1d(n_in, 1, k, padding=(k - 1) // 2, bias=False)
        self.spatial = SpatialBranch(channels, reduction, dilation) if branches != "channel" else None
        self.gate = nn.Sigmoid()

    def channel_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Mc(F), N×C×1×1: the 1-D conv across channels of GAP(F) and of GMP(F) (each N×1×C), summed."""
        gap = x.mean((2, 3)).unsqueeze(1) if self.pool != "max" else None
        gmp = x.amax((2, 3)).unsqueeze(1) if self.pool != "avg" else None
        if gmp is None or gap is None:
            mc = self.conv(gap if gmp is None else gmp)
        elif self.shared_conv:
            mc = self.conv(gap) + self.conv(gmp)
        else:  # a conv for each: one conv over the two as input channels (its output is the sum of the two)
            mc = self.conv(torch.cat((gap, gmp), dim=1))
        return mc.view(-1, self.channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        if self.spatial is None:
            logits = self.channel_logits(x)
        elif self.conv is None:
            logits = self.spatial(x)
        else:
            logits = self.channel_logits(x) + self.spatial(x)
        m = self.gate(logits)
        return x + x * m if self.residual else x * m
