"""Lightweight Bottleneck Attention Module (LBAM), as the abstract of patent CN114118415A states.

    Mc(F) = conv1d_k(GAP(F)) + conv1d_k(GMP(F))            (C×1×1; cross-channel 1-D conv, no bias)
    Ms(F) = BAM's spatial branch                          (1×H×W; see ``bam.SpatialBranch``)
    M(F)  = σ(Mc(F) + Ms(F))  (broadcast to C×H×W),   F' = F + F ⊗ M(F)   (residual=True)  or  F ⊗ M(F)

It replaces BAM's channel MLP (≈2C²/r parameters) by ECA-style 1-D convolutions (k parameters).
Options (defaults):
- ``kernel_size`` (None): odd k of the 1-D conv; None = ECA's adaptive k = |log2(C)/2 + 1/2|_odd.
- ``reduction`` (16), ``dilation`` (4): of the spatial branch, as BAM.
- ``shared_conv`` (True): one conv for both pooled vectors (k parameters); False: one per pooling (2k).
- ``residual`` (True): F + F⊗M as BAM; False: F⊗M.
- ``branches`` ("both"): "channel" or "spatial" drops the other branch (ablation).
- ``pool`` ("avgmax"): pooled vectors of the channel branch, "avg" (GAP only) or "max" (GMP only).

Set ``keep_maps = True`` to keep ``last_maps`` after each forward (as BAM; the key of a dropped branch is None).
"""

import torch
from torch import nn

from ._common import check_choice, check_input, check_odd_kernel, check_positive, eca_kernel_size, gate, maps
from ._fused import lbam_gate
from .bam import SpatialBranch

BRANCHES = ("both", "channel", "spatial")
POOLS = ("avgmax", "avg", "max")


class LBAM(nn.Module):
    keep_maps: bool = False

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
            # Separate convs for the two pooled vectors are one conv with two input channels (its output is
            # the sum of the two convolutions), so both cases are a single conv1d call.
            n_in = 2 if pool == "avgmax" and not shared_conv else 1
            self.conv = nn.Conv1d(n_in, 1, k, padding=(k - 1) // 2, bias=False)
        self.spatial = SpatialBranch(channels, reduction, dilation) if branches != "channel" else None
        self.last_maps: dict[str, torch.Tensor] | None = None

    def _channel_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "avg":
            v = x.mean((2, 3)).unsqueeze(1)
        elif self.pool == "max":
            v = x.amax((2, 3)).unsqueeze(1)
        elif self.shared_conv:
            # The conv is linear without bias: conv(avg) + conv(max) = conv(avg + max).
            v = (x.mean((2, 3)) + x.amax((2, 3))).unsqueeze(1)
        else:
            v = torch.stack((x.mean((2, 3)), x.amax((2, 3))), dim=1)
        return self.conv(v).view(x.shape[0], self.channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        if self.conv is not None and self.spatial is not None and not self.keep_maps:
            # Both branches: pooling, 1-D conv and gate as one memory-lean Function (same values).
            self.last_maps = None
            return lbam_gate(x, self.spatial(x), self.conv.weight, self.pool, self.residual)
        channel = self._channel_logits(x) if self.conv is not None else None
        spatial = self.spatial(x) if self.spatial is not None else None
        out, m = gate(x, channel, spatial, "add", self.residual, keep_map=self.keep_maps)
        self.last_maps = maps(x, channel, spatial, m) if self.keep_maps else None
        return out
