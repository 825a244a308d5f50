"""Model cost: parameters, multiply-accumulates (MACs) and FLOPs of one forward pass.

`macs` counts convolutions and matrix products (conv, linear, mm, bmm, ...) as
`torch.utils.flop_counter.FlopCounterMode` does (its FLOPs / 2; bias additions are not counted). This is the
unit of torchvision's docs ("GFLOPS") and of the SE / CBAM / BAM / ECA papers.

`flops` = 2 × macs + the operations those counters (thop, fvcore, FlopCounterMode) score as zero, which are
what attention modules are mostly made of. Counted per aten op, from its tensor sizes:
- element-wise add, sub, mul, div, relu, sigmoid, hardsigmoid, hardswish, silu, gelu, tanh, hardtanh, clamp
  (in-place variants too): 1 per output element;
- batch norm: 2 per element in eval (a folded per-channel scale and shift), 4 in training (+ mean, variance);
- window pooling (max/avg pool): output elements × window size (each element read once per window);
- global/adaptive pooling and reductions (adaptive avg/max pool, mean, sum, max, min, amax, amin): 1 per input
  element.
Everything else counts 0: views, copies, concatenation, indexing, dropout (a no-op in eval).
`profile_model` runs one forward in eval mode under `torch.no_grad` (so BN counts 2 per element) and
restores every module's mode afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _ops(names: str) -> list:
    """The aten op packets, among the space-separated `names`, that this torch build has."""
    return [getattr(aten, n) for n in names.split() if hasattr(aten, n)]


def _first(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


def _per_output(args, out) -> int:
    return _first(out).numel()


def _per_input(args, out) -> int:
    return args[0].numel()


def _window(args, out) -> int:
    kernel = args[1] if isinstance(args[1], list | tuple) else [args[1]]
    if len(kernel) == 1:  # a single size means a square window
        kernel = kernel * (args[0].dim() - 2)
    return _first(out).numel() * math.prod(kernel)


def _batch_norm(training_arg: int | None):
    def count(args, out) -> int:
        training = training_arg is not None and bool(args[training_arg])
        return args[0].numel() * (4 if training else 2)

    return count


_ELEMENTWISE = "add sub mul div relu sigmoid hardsigmoid hardswish silu gelu tanh hardtanh clamp clamp_min"
_WINDOW = (
    "max_pool1d max_pool2d max_pool2d_with_indices max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d"
)
_REDUCE = "_adaptive_avg_pool2d adaptive_max_pool2d adaptive_max_pool1d adaptive_avg_pool3d mean sum max min amax amin"
_RULES = {op: _per_output for op in _ops(_ELEMENTWISE + " " + _ELEMENTWISE.replace(" ", "_ ") + "_")}
_RULES |= {op: _window for op in _ops(_WINDOW)}
_RULES |= {op: _per_input for op in _ops(_REDUCE)}
_RULES |= {op: _batch_norm(training_arg=5) for op in _ops("native_batch_norm _native_batch_norm_legit")}
_RULES |= {op: _batch_norm(training_arg=None) for op in _ops("_native_batch_norm_legit_no_training")}


class ExtraFlopCounter(TorchDispatchMode):
    """Counts, into `flops`, the FLOPs of the ops in the module docstring that MAC counters score as zero."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = _RULES.get(func.overloadpacket)
        if rule is not None:
            self.flops += rule(args, out)
        return out


def _count_params(params) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


def profile_model(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> dict[str, int]:
    """`params`, `attention_params` (inside `model.attention_modules`), `macs` and `flops` of one forward pass
    of a zero input of `input_size` on the model's device (the meta device works: no compute)."""
    attention = getattr(model, "attention_modules", [])
    first = next(model.parameters(), None)
    x = torch.zeros(input_size, device=first.device if first is not None else "cpu")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as macs_counter, ExtraFlopCounter() as extra:
            model(x)
    finally:
        for m, training in modes.items():
            m.training = training
    macs = macs_counter.get_total_flops() // 2
    return {
        "params": _count_params(model.parameters()),
        "attention_params": _count_params(p for m in attention for p in m.parameters()),
        "macs": int(macs),
        "flops": int(2 * macs + extra.flops),
    }
