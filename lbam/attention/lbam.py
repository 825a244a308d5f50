"""Lightweight Bottleneck Attention Module (LBAM), as the abstract of patent CN114118415A states.

    Mc(F) = conv1d_k(GAP(F)) + conv1d_k(GMP(F))            (C×1×1; cross-channel 1-D conv, no bias)
    Ms(F) = BAM's spatial branch                          (1×H×W; see ``bam.spatial_branch``)
    M(F)  = σ(Mc(F) + Ms(F))  (broadcast to C×H×W),   F' = F + F ⊗ M(F)   (residual=True)  or  F ⊗ M(F)

It replaces BAM's channel MLP (≈2C²/r parameters) by ECA-style 1-D convolutions (k parameters). Options:
``kernel_size`` (None: ECA's adaptive k = |log2(C)/2 + 1/2|_odd); ``reduction`` (16) and ``dilation`` (4) of the
spatial branch, as BAM; ``shared_conv`` (True: one conv for GAP and GMP, k parameters; False: one each, 2k);
``residual`` (True: F + F⊗M as BAM; False: F⊗M); ``branches`` ("both"; "channel" or "spatial" keeps one, for
ablations); ``pool`` ("avgmax"; "avg" or "max" keeps one pooled vector).
"""

import torch
from torch import nn

from ._common import check_choice, check_input, check_positive, eca_kernel_size, max_over
from .bam import spatial_branch


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
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.channels = check_positive("channels", channels)
        check_positive("reduction", reduction)
        check_positive("dilation", dilation)
        self.branches = check_choice("branches", branches, ("both", "channel", "spatial"))
        self.pool = check_choice("pool", pool, ("avgmax", "avg", "max"))
        self.residual, self.shared_conv = bool(residual), bool(shared_conv)
        k = eca_kernel_size(channels, kernel_size)
        # Separate convs for GAP and GMP are one conv over the two as input channels: one weight, 1×2×k.
        n_in = 2 if pool == "avgmax" and not shared_conv else 1
        dd = {"device": device, "dtype": dtype}
        self.conv = nn.Conv1d(n_in, 1, k, padding=k // 2, bias=False, **dd) if branches != "spatial" else None
        self.spatial = spatial_branch(channels, reduction, dilation, **dd) if branches != "channel" else None
        self.gate = nn.Sigmoid()

    def channel_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Mc(F), N×C×1×1: the 1-D conv across channels of GAP(F) and of GMP(F) (each N×1×C), summed."""
        pooled = [x.mean((2, 3))] if self.pool != "max" else []
        pooled += [max_over(x, "hw")] if self.pool != "avg" else []
        if len(pooled) == 2 and self.shared_conv:  # conv1d(GAP) + conv1d(GMP) as one call: linear, no bias
            pooled = [pooled[0] + pooled[1]]
        return self.conv(torch.stack(pooled, dim=1)).view(-1, self.channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        if self.branches == "both":
            logits = self.channel_logits(x) + self.spatial(x)
        else:
            logits = self.channel_logits(x) if self.branches == "channel" else self.spatial(x)
        m = self.gate(logits)
        return x + x * m if self.residual else x * m
