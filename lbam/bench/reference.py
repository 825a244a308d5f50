"""A straightforward eager implementation of the LBAM formula: the bench's reference for speed and correctness.

    F' = F + F ⊗ σ(conv1d(mean_HW F) + conv1d(amax_HW F) + Ms(F))

written the plain way (``mean``/``amax`` pooling, one conv1d per pooled vector, the spatial branch layer by
layer with functional ops, broadcast add, sigmoid, multiply, add), reading the parameters of an
``lbam.attention.LBAM`` so both compute the same function. BN uses batch statistics in train mode and
running statistics in eval mode, without updating them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lbam.attention import LBAM


def _spatial(layers: nn.Sequential, x: torch.Tensor, training: bool) -> torch.Tensor:
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            x = F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation)
        elif isinstance(layer, nn.BatchNorm2d):
            x = (
                F.batch_norm(
                    x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps
                )
                if not training
                else F.batch_norm(x, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
            )
        elif isinstance(layer, nn.ReLU):
            x = F.relu(x)
        else:
            raise TypeError(f"reference spatial branch: unexpected layer {type(layer).__name__}")
    return x


def reference_lbam(module: LBAM, x: torch.Tensor) -> torch.Tensor:
    """LBAM's output for ``x``, computed the plain eager way from ``module``'s parameters."""
    n, c = x.shape[:2]
    logits = None
    if module.conv is not None:
        w = module.conv.weight  # 1×n_in×k
        pad = module.conv.padding
        pooled = {
            "avg": [x.mean((2, 3))],
            "max": [x.amax((2, 3))],
            "avgmax": [x.mean((2, 3)), x.amax((2, 3))],
        }
        vectors = pooled[module.pool]
        kernels = [w[:, i : i + 1] for i in range(w.shape[1])] if w.shape[1] > 1 else [w] * len(vectors)
        channel = sum(F.conv1d(v.unsqueeze(1), k, padding=pad) for v, k in zip(vectors, kernels))
        logits = channel.view(n, c, 1, 1)
    if module.spatial is not None:
        spatial = _spatial(module.spatial, x, module.training)
        logits = spatial if logits is None else logits + spatial
    m = torch.sigmoid(logits)
    return x + x * m if module.residual else x * m


class ReferenceLBAM(nn.Module):
    """``reference_lbam`` as a module that shares (does not copy) the parameters of ``lbam``."""

    def __init__(self, lbam: LBAM) -> None:
        super().__init__()
        self.lbam = lbam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference_lbam(self.lbam, x)  # train()/eval() reach self.lbam as a submodule


def check_reference(module: LBAM, x: torch.Tensor, rtol: float = 1e-7, atol: float = 1e-9) -> float:
    """Assert that LBAM and the reference agree in output and in every gradient; return the max abs error.

    Runs both in train mode, in float64 (so rounding cannot hide or fake a difference), on a copy of
    ``module`` (its BN running statistics stay untouched), with the same random upstream gradient.
    Raises AssertionError on a mismatch.
    """
    mod = copy.deepcopy(module).double().train()
    x = x.detach().double()
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype).to(x.device)
    results = []
    for fn in (mod, lambda t: reference_lbam(mod, t)):
        mod.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        out = fn(xi)
        out.backward(grad)
        results.append([out.detach(), xi.grad, *(p.grad for p in mod.parameters())])
    worst = 0.0
    names = ["output", "grad input", *(f"grad {n}" for n, _ in mod.named_parameters())]
    for name, a, b in zip(names, *results):
        err = (a - b).abs().max().item()
        if not torch.allclose(a, b, rtol=rtol, atol=atol):
            raise AssertionError(f"LBAM differs from the eager reference in {name}: max abs error {err:.3g}")
        worst = max(worst, err)
    return worst
