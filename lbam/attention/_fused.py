"""Fused attention tails with hand-written backward passes (shared by BAM and LBAM).

Autograd on the eager tail ``F + F ⊗ σ(Mc + Ms)`` keeps the full-size M for backward and writes about six
full-size temporaries; it is memory-bound, so those passes and allocations are where the time goes. These
Functions compute the same values but save only F (which the layer before keeps anyway) and the small
logits, recompute M in backward, and reuse buffers in place:

- ``gate(x, channel, spatial, residual)``: F' = F + F ⊗ σ(c + s) (or F ⊗ σ(c + s)); c: N×C×1×1, s: N×1×H×W.
  Backward: dF = g ⊙ (1 + M), and dc, ds are the H×W and C sums of g ⊙ F ⊙ M ⊙ (1 − M).
- ``lbam_gate(x, spatial, weight, pool, residual)``: LBAM's channel branch (GAP and/or GMP → 1-D conv, no
  bias) and the gate in one Function, so the pooling gradients are added into dF in place instead of as
  extra full-size tensors: GAP's is a broadcast add, GMP's goes to the maxima (split evenly among ties, as
  ``amax``'s backward). Two ways to the GMP and its gradient, the same values:
  - CPU, float32/64, contiguous, with the C++ kernel built (``_ext``, the default): GAP and GMP in one pass
    over F that also records where each map's maximum is (one int32 per map; or that it is tied); the
    backward adds one value per map, and reads F again only for maps with ties.
  - otherwise (GPU, channels_last, half precision, no compiler, ``LBAM_NO_EXT=1``): ``mean`` and ``amax``,
    and a dense backward of three full-size passes (find the maxima, count ties, add).
- ``global_avg_pool(x)``: GAP for the modules that pool by average only (SE, ECA, BAM). Autograd's ``mean`` backward
  writes a full-size ``expand(g) / (H·W)`` and then adds it to x's other gradients; this one returns the
  broadcast view ``(g / (H·W)).expand(...)``, which autograd adds in place: one full-size pass, the same cost
  as the in-place GAP gradient of ``lbam_gate`` (same engineering for the part LBAM shares with the baselines).
- ``global_avg_max_pool(x)``: GAP and GMP for CBAM's channel branch, by ``lbam_gate``'s pooling (one pass
  with the C++ kernel) and GMP gradient: CBAM pools as LBAM does, so it gets the same engineering.
``gate``, ``lbam_gate`` and ``global_avg_max_pool`` are once-differentiable (no double backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import _ext


class _GlobalAvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx, g):
        n, c, h, w = ctx.shape
        return (g / (h * w)).view(n, c, 1, 1).expand(n, c, h, w)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """``x.mean((2, 3))`` (N×C) whose backward is a broadcast view, not a full-size tensor (see module doc)."""
    return _GlobalAvgPool.apply(x)


def _mask(x: torch.Tensor, channel: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
    """σ(channel + spatial) broadcast to x's shape, in x's memory format and the promoted dtype."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, channel.dtype), spatial.dtype)
    m = torch.empty_like(x, dtype=dtype)
    return torch.add(channel, spatial, out=m).sigmoid_()


def _tail_forward(x, channel, spatial, residual: bool) -> torch.Tensor:
    m = _mask(x, channel, spatial)
    # The output reuses M's buffer: one full-size allocation in all.
    return torch.addcmul(x, x, m, out=m) if residual else m.mul_(x)


def _tail_backward(g, x, channel, spatial, residual: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dF of the gate, dL/d(c + s) at full size)."""
    m = _mask(x, channel, spatial)
    dz = torch.mul(g, x)
    torch.ops.aten.sigmoid_backward.grad_input(dz, m, grad_input=dz)  # dz ⊙ M ⊙ (1 − M), in place
    dx = torch.addcmul(g, g, m, out=m) if residual else m.mul_(g)
    return dx, dz


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, channel, spatial, residual):
        ctx.residual = residual
        ctx.save_for_backward(x, channel, spatial)
        return _tail_forward(x, channel, spatial, residual)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, channel, spatial = ctx.saved_tensors
        dx, dz = _tail_backward(g, x, channel, spatial, ctx.residual)
        dc = dz.sum((2, 3), keepdim=True, dtype=channel.dtype) if ctx.needs_input_grad[1] else None
        ds = dz.sum(1, keepdim=True, dtype=spatial.dtype) if ctx.needs_input_grad[2] else None
        return dx.to(x.dtype), dc, ds, None


def gate(
    x: torch.Tensor, channel: torch.Tensor, spatial: torch.Tensor, residual: bool = True
) -> torch.Tensor:
    """F + F ⊗ σ(channel + spatial) (residual) or F ⊗ σ(channel + spatial), memory-lean (see module doc)."""
    return _Gate.apply(x, channel, spatial, residual)


def _conv1d(v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv1d(v, weight, padding=k // 2)`` for v: N×1×C or N×2×C; on CPU through the im2col kernel.

    oneDNN spends ~0.13 ms per call setting up this tiny convolution (a few percent of LBAM at 14×14 maps); the
    im2col kernel takes ~0.03 ms. A dispatch mode (``FlopCounterMode``) gets the plain conv, which it can count.
    """
    k, w = weight.shape[-1], weight.to(v.dtype)
    if v.device.type == "cpu" and _get_current_dispatch_mode() is None:
        out = torch.ops.aten.thnn_conv2d(v.unsqueeze(2), w.unsqueeze(2), [1, k], None, [1, 1], [0, k // 2])
        return out.squeeze(2)
    return F.conv1d(v, w, padding=k // 2)


def _conv1d_backward(dc, v, weight) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dv, dL/dweight) of ``F.conv1d(v, weight, padding=k // 2)`` for the upstream gradient dc (N×1×C)."""
    k, w, dc = weight.shape[-1], weight.to(v.dtype), dc.to(v.dtype)
    if v.device.type == "cpu":
        # convolution_backward's CPU path (oneDNN) spends 0.3-0.5 ms per call setting up these tiny N×1×C
        # convolutions, more than the rest of LBAM's channel branch; the plain im2col kernel takes microseconds.
        dv, dw, _ = torch.ops.aten._slow_conv2d_backward(
            dc.unsqueeze(2), v.unsqueeze(2), w.unsqueeze(2), [1, k], [1, 1], [0, k // 2], [True, True, False]
        )
        return dv.squeeze(2), dw.squeeze(2).to(weight.dtype)
    dv, dw, _ = torch.ops.aten.convolution_backward(
        dc, v, w, None, [1], [k // 2], [1], False, [0], 1, [True, True, False]
    )
    return dv, dw.to(weight.dtype)


def _ext_ops(x: torch.Tensor):
    """The C++ pooling kernel (see ``_ext``) when it applies to x, else None."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or not x.is_contiguous():
        return None
    return _ext.cpu_ops() if _get_current_dispatch_mode() is None else None


def _pool(x: torch.Tensor, pool: str):
    """(GAP N×C or None, GMP N×C or None, what the GMP backward needs: see ``_add_max_grad``)."""
    ops = _ext_ops(x) if pool != "avg" else None
    if ops is not None:
        avg, mx, where = ops.pool_avgmax(x)  # one pass for both; where: see csrc/gmp.cpp
        return (avg if pool != "max" else None), mx, ("ext", where)
    avg = x.mean((2, 3)) if pool != "max" else None
    return avg, (x.amax((2, 3)) if pool != "avg" else None), ("dense",)


def _add_max_grad_dense(dx, x, mx, d_max, buf=None) -> None:
    """dx += d_max at the maxima of each map, split evenly among ties (as ``amax``'s backward)."""
    n, c = mx.shape
    hit = torch.eq(x, mx.view(n, c, 1, 1), out=buf)
    dx.addcmul_(hit, (d_max.view(n, c, 1, 1) / hit.sum((2, 3), keepdim=True)).to(dx.dtype))


def _add_max_grad(dx, x, mx, kind: str, aux, d_max, buf=None) -> None:
    """dx += GMP's gradient, by the path ``_pool`` chose (``kind``, with its saved tensors ``aux``)."""
    if kind == "ext" and dx.dtype == x.dtype and dx.is_contiguous():
        _ext.cpu_ops().add_max_grad_(dx, x, mx, *aux, d_max)
    else:
        _add_max_grad_dense(dx, x, mx, d_max, buf)


class _GlobalAvgMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        avg, mx, grad = _pool(x, "avgmax")
        ctx.max_grad = grad[0]
        ctx.save_for_backward(x, mx, *grad[1:])
        return avg, mx

    @staticmethod
    @once_differentiable
    def backward(ctx, d_avg, d_max):
        x, mx, *aux = ctx.saved_tensors
        n, c, h, w = x.shape
        dx = torch.empty_like(x, memory_format=torch.contiguous_format)
        dx.copy_((d_avg / (h * w)).view(n, c, 1, 1).expand_as(x))
        _add_max_grad(dx, x, mx, ctx.max_grad, aux, d_max)
        return dx


def global_avg_max_pool(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x.mean((2, 3)), x.amax((2, 3)))`` by ``lbam_gate``'s pooling (CBAM's channel branch, see module doc)."""
    return _GlobalAvgMaxPool.apply(x)


class _LBAMGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spatial, weight, pool, residual):
        n, c = x.shape[:2]
        avg, mx, grad = _pool(x, pool)
        if weight.shape[1] == 2:  # separate convs: the two pooled vectors are the conv's two input channels
            v = torch.stack((avg, mx), 1)
        else:
            v = (mx if avg is None else avg if mx is None else avg + mx).unsqueeze(1)
        channel = _conv1d(v, weight).view(n, c, 1, 1)
        ctx.pool, ctx.residual, ctx.max_grad = pool, residual, grad[0]
        ctx.save_for_backward(x, spatial, weight, channel, v, mx, *grad[1:])
        return _tail_forward(x, channel, spatial, residual)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, spatial, weight, channel, v, mx, *aux = ctx.saved_tensors
        n, c, h, w = x.shape
        dx, dz = _tail_backward(g, x, channel, spatial, ctx.residual)
        ds = dz.sum(1, keepdim=True, dtype=spatial.dtype)
        dv, dw = _conv1d_backward(dz.sum((2, 3), dtype=v.dtype).unsqueeze(1), v, weight)
        d_avg, d_max = dv[:, 0], dv[:, -1]  # the same row when the conv has one input channel
        if ctx.pool != "max":
            dx.add_((d_avg / (h * w)).view(n, c, 1, 1))
        if ctx.pool != "avg":
            _add_max_grad(dx, x, mx, ctx.max_grad, aux, d_max, buf=dz)  # dz is free now
        return dx.to(x.dtype), ds, dw, None, None


def lbam_gate(
    x: torch.Tensor, spatial: torch.Tensor, weight: torch.Tensor, pool: str = "avgmax", residual: bool = True
) -> torch.Tensor:
    """LBAM with both branches: F (+) F ⊗ σ(conv1d(pool(F)) + spatial), memory-lean (see module doc).

    ``weight`` is the 1-D conv's (1×1×k shared, or 1×2×k for separate GAP and GMP kernels, k odd).
    """
    return _LBAMGate.apply(x, spatial, weight, pool, residual)
