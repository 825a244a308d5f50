"""Efficient Channel Attention.

Q. Wang, B. Wu, P. Zhu, P. Li, W. Zuo, Q. Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional
Neural Networks", CVPR 2020.

    w = σ(conv1d_k(GAP(F))),   F' = F ⊗ w

One 1-D convolution across the channel axis, no bias, zero padding (k-1)/2: k parameters, no reduction ratio.
Default kernel (kernel_size=None): the paper's adaptive k = |log2(C)/γ + b/γ|_odd, γ=2, b=1 (C=64 → 3, 256 → 5).
"""

import torch
from torch import nn

from ._common import check_input, check_positive, eca_kernel_size


class ECA(nn.Module):
    def __init__(self, channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1, device=None,
                 dtype=None):  # fmt: skip
        super().__init__()
        self.channels = check_positive("channels", channels)
        k = eca_kernel_size(channels, kernel_size, check_positive("gamma", gamma), b)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False, device=device, dtype=dtype)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # N×1×C: the channels are the conv's length axis
        return x * self.gate(y.view(-1, self.channels, 1, 1))
