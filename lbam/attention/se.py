"""Squeeze-and-Excitation.

J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018.

    s = σ(W2 δ(W1 GAP(F) + b1) + b2),   F' = F ⊗ s

W1: C→h, W2: h→C with h = max(1, C // r), δ = ReLU; default r = 16. Fully connected layers with biases,
as in the paper's Fig. 2 and its code: 2·C·h + h + C parameters.
"""

import torch
from torch import nn

from ._common import check_input, check_positive


class SE(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, device=None, dtype=None):
        super().__init__()
        self.channels = check_positive("channels", channels)
        h, dd = max(1, channels // check_positive("reduction", reduction)), {"device": device, "dtype": dtype}
        self.fc = nn.Sequential(
            nn.Linear(channels, h, **dd), nn.ReLU(inplace=True), nn.Linear(h, channels, **dd)
        )
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        return x * self.gate(self.fc(x.mean((2, 3)))[:, :, None, None])
