"""Convolutional Block Attention Module.

S. Woo, J. Park, J.-Y. Lee, I. S. Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.

    Mc = σ(MLP(AvgPool(F)) + MLP(MaxPool(F))),         F1 = Mc ⊗ F     (pools over H×W)
    Ms = σ(BN(f7×7([AvgPool(F1); MaxPool(F1)]))),     F' = Ms ⊗ F1    (pools over C)

Shared MLP C→h→C with biases and ReLU, h = max(1, C // r), default r = 16; spatial kernel 7 (option
``spatial_kernel``, odd). The spatial conv has no bias and is followed by a BatchNorm on its single channel, as
in the official code (the paper's formula omits the BN): 2·C·h + h + C + 2·k² + 2 parameters.
"""

import torch
from torch import nn

from ._common import check_input, check_positive, max_over


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7, device=None, dtype=None):
        super().__init__()
        self.channels = check_positive("channels", channels)
        h, dd = max(1, channels // check_positive("reduction", reduction)), {"device": device, "dtype": dtype}
        k = check_positive("kernel_size", spatial_kernel, odd=True)
        self.mlp = nn.Sequential(
            nn.Linear(channels, h, **dd), nn.ReLU(inplace=True), nn.Linear(h, channels, **dd)
        )
        self.channel_gate = nn.Sigmoid()
        conv = nn.Conv2d(2, 1, k, padding=(k - 1) // 2, bias=False, **dd)
        self.spatial = nn.Sequential(conv, nn.BatchNorm2d(1, **dd))
        self.gate = nn.Sigmoid()  # the spatial gate Ms, applied last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        mc = self.channel_gate((self.mlp(x.mean((2, 3))) + self.mlp(max_over(x, "hw")))[:, :, None, None])
        x = x * mc
        ms = self.gate(self.spatial(torch.cat((x.mean(1, keepdim=True), max_over(x, "c")), dim=1)))
        return x * ms
