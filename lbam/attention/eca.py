"""Efficient Channel Attention.

Q. Wang, B. Wu, P. Zhu, P. Li, W. Zuo, Q. Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional
Neural Networks", CVPR 2020.

    w = σ(conv1d_k(GAP(F))),   F' = F ⊗ w

One 1-D convolution across the channel axis, no bias, zero padding (k-1)/2: k parameters. Default kernel
(kernel_size=None) is the paper's adaptive k = |log2(C)/γ + b/γ|_odd with γ=2, b=1 (C=64 → 3, C=256 → 5).
ECA has no reduction ratio.
"""

import torch
from torch import nn

from ._common import check_input, check_odd_kernel, check_positive, eca_kernel_size


class ECA(nn.Module):
    def __init__(self, channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1):
        super().__init__()
        self.channels = check_positive("channels", channels)
        check_positive("gamma", gamma)
        k = eca_kernel_size(channels, gamma, b) if kernel_size is None else check_odd_kernel(kernel_size)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # N×1×C: the channels are the conv's length axis
        return x * self.gate(y.view(-1, self.channels, 1, 1))
