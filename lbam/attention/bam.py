"""Bottleneck Attention Module.

J. Park, S. Woo, J.-Y. Lee, I. S. Kweon, "BAM: Bottleneck Attention Module", BMVC 2018.

    M(F) = σ(Mc(F) + Ms(F)),   F' = F + F ⊗ M(F)          (Mc: C×1×1, Ms: 1×H×W, broadcast to C×H×W)
    Mc(F) = W1 ReLU(BN(W0 GAP(F) + b0)) + b1              (MLP C→h→C)
    Ms(F) = f1×1(g(g(ReLU(BN(f1×1(F))))))                 (C→h→1), g = ReLU∘BN∘(3×3 conv, dilation d)

h = max(1, C // r); defaults r = 16, d = 4. Layer placement and biases follow the official code
(Jongchan/attention-module): BN after the MLP's first layer and after every spatial conv except the last,
all convs/linears with bias. ``combine="add"`` is the paper's sum (default); ``combine="mul"`` is the
official code's product σ(Mc ⊗ Ms). BN layers fall back to running statistics when a channel holds a single
value in train mode (batch of one in the MLP; N=1 with a 1×1 map), instead of raising.

Set ``keep_maps = True`` to keep, after each forward, ``last_maps`` = {"channel": N×C×1×1 and "spatial":
N×1×H×W pre-sigmoid logits, "attention": N×C×H×W M after sigmoid}, detached.
"""

import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ._common import BatchNorm1d, BatchNorm2d, check_choice, check_input, check_positive, gate, maps
from ._fused import global_avg_pool

COMBINES = ("add", "mul")


class PointwiseToOne(nn.Conv2d):
    """``nn.Conv2d(channels, 1, 1)`` (same parameters, same result), computed on CPU as a matrix product.

    oneDNN spends about 0.1 ms forward and 0.3 ms backward per call on this tiny convolution, as much as the
    rest of a small attention module; the product and its backward take microseconds.
    """

    def __init__(self, channels: int):
        super().__init__(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not x.is_contiguous():
            return super().forward(x)
        n, c, h, w = x.shape
        y = torch.matmul(self.weight.view(1, c), x.view(n, c, h * w))
        return y.add_(self.bias.view(1, 1, 1)).view(n, 1, h, w)


class PointwiseReduce(nn.Conv2d):
    """``nn.Conv2d(channels, hidden, 1)`` (same parameters, same result), on CPU through the im2col kernel.

    On 2 CPU threads oneDNN's backward for this small 1×1 convolution costs 1.2-3× the im2col kernel's
    (``aten.thnn_conv2d``, which needs no unfolding for 1×1) and never less; at the small sizes it dominates
    the spatial branch. The GPU keeps the plain convolution, and so does a dispatch mode such as
    ``FlopCounterMode`` (torch's FLOP formula for the im2col op lacks an argument and raises).
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__(channels, hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or _get_current_dispatch_mode() is not None:
            return super().forward(x)
        return torch.ops.aten.thnn_conv2d(x, self.weight, [1, 1], self.bias)


class SpatialBranch(nn.Sequential):
    """BAM's spatial branch Ms: 1×1 reduce to C/r → BN → ReLU → 2 × (3×3 dilated conv → BN → ReLU) → 1×1 to 1.

    Also LBAM's spatial branch. Maps N×C×H×W to N×1×H×W logits.
    """

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4):
        hidden = max(1, channels // check_positive("reduction", reduction))
        check_positive("dilation", dilation)
        layers = [PointwiseReduce(channels, hidden), BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        for _ in range(2):
            layers += [
                nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers, PointwiseToOne(hidden))


class BAM(nn.Module):
    keep_maps: bool = False

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, combine: str = "add"):
        super().__init__()
        self.channels = check_positive("channels", channels)
        self.combine = check_choice("combine", combine, COMBINES)
        hidden = max(1, channels // check_positive("reduction", reduction))
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )
        self.spatial = SpatialBranch(channels, reduction, dilation)
        self.last_maps: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        channel = self.channel_mlp(global_avg_pool(x))[:, :, None, None]
        spatial = self.spatial(x)
        out, m = gate(x, channel, spatial, self.combine, residual=True, keep_map=self.keep_maps)
        self.last_maps = maps(x, channel, spatial, m) if self.keep_maps else None
        return out
