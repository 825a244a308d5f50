"""Bottleneck Attention Module.

J. Park, S. Woo, J.-Y. Lee, I. S. Kweon, "BAM: Bottleneck Attention Module", BMVC 2018.

    M(F) = σ(Mc(F) + Ms(F)),   F' = F + F ⊗ M(F)          (Mc: C×1×1, Ms: 1×H×W, broadcast to C×H×W)
    Mc(F) = W1 ReLU(BN(W0 GAP(F) + b0)) + b1              (MLP C→h→C)
    Ms(F) = f1×1(g(g(ReLU(BN(f1×1(F))))))                 (C→h→1), g = ReLU∘BN∘(3×3 conv, dilation d)

h = max(1, C // r); defaults r = 16, d = 4. Which BAM this is, exactly:
- the sum σ(Mc + Ms) is the paper's (eq. 1); ``combine="mul"`` is the official code's product σ(Mc ⊗ Ms);
- the batch norms are the official code's (Jongchan/attention-module): after the MLP's hidden layer and after
  every spatial conv but the last, all convs/linears with bias; ``output_bn=True`` adds the paper's BN on each
  branch's output, Mc = BN(MLP(GAP(F))) and Ms = BN(f1×1(…)), and keeps the hidden ones.
"""

import torch
from torch import nn

from ._common import check_choice, check_input, check_positive


def conv_bn_relu(cin: int, cout: int, k: int = 1, d: int = 1, **dd) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, k, padding=d * (k // 2), dilation=d, **dd)
    return [conv, nn.BatchNorm2d(cout, **dd), nn.ReLU(True)]


def spatial_branch(
    channels: int, reduction: int, dilation: int, output_bn: bool = False, **dd
) -> nn.Sequential:
    """Ms, BAM's spatial branch (also LBAM's): N×C×H×W → N×1×H×W logits, [+ the paper's output BN]; ``dd``:
    PyTorch's factory kwargs (device, dtype)."""
    h, d = max(1, channels // check_positive("reduction", reduction)), check_positive("dilation", dilation)
    layers = [
        *conv_bn_relu(channels, h, **dd),
        *conv_bn_relu(h, h, 3, d, **dd),
        *conv_bn_relu(h, h, 3, d, **dd),
    ]
    return nn.Sequential(*layers, nn.Conv2d(h, 1, 1, **dd), *([nn.BatchNorm2d(1, **dd)] if output_bn else []))


class BAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, combine="add", output_bn=False,
                 device=None, dtype=None):  # fmt: skip
        super().__init__()
        self.channels = check_positive("channels", channels)
        self.combine = check_choice("combine", combine, ("add", "mul"))
        h, dd = max(1, channels // check_positive("reduction", reduction)), {"device": device, "dtype": dtype}
        mlp = [
            nn.Linear(channels, h, **dd),
            nn.BatchNorm1d(h, **dd),
            nn.ReLU(True),
            nn.Linear(h, channels, **dd),
        ]
        self.channel_mlp = nn.Sequential(*mlp, *([nn.BatchNorm1d(channels, **dd)] if output_bn else []))
        self.spatial = spatial_branch(channels, reduction, dilation, output_bn, **dd)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        mc = self.channel_mlp(x.mean((2, 3)))[:, :, None, None]
        ms = self.spatial(x)
        m = self.gate(mc + ms if self.combine == "add" else mc * ms)
        return x + x * m
