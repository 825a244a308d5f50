"""Model cost: parameters, multiply-accumulates (MACs) and FLOPs of one forward pass.

``macs`` counts convolutions and matrix products (conv, linear, mm, bmm, ...) as
``torch.utils.flop_counter.FlopCounterMode`` does (its FLOPs / 2; bias additions are not counted). This is the
unit of torchvision's docs ("GFLOPS") and of the SE / CBAM / BAM / ECA papers.

``flops`` = 2 × macs + the work those counters (thop, fvcore, FlopCounterMode) score as zero, which is what
attention modules are mostly made of. The same FlopCounterMode counts it, through its public
``custom_mapping``, per aten op from its tensor sizes:
- element-wise add, sub, mul, div, relu, sigmoid, hardsigmoid, hardswish, silu, gelu, tanh, hardtanh, clamp
  (in-place variants too): 1 per output element; addcmul and addcdiv: 2;
- batch norm: 2 per element in eval (a folded per-channel scale and shift), 4 in training (+ mean, variance);
- window pooling (max/avg pool): output elements × window size (each element read once per window);
- global/adaptive pooling and reductions (adaptive avg/max pool, mean, sum, max, min, amax, amin): 1 per input
  element.
Everything else counts 0: views, copies, concatenation, indexing, dropout (a no-op in eval).
``profile_model`` runs the model's own forward (the modules that train; no other path) in eval mode under
``torch.no_grad`` (so BN counts 2 per element), and restores every module's mode afterwards.

``attention_params`` counts the parameters of the model's attention modules (:func:`attention_modules`): those
it lists in ``model.attention_modules`` (every lbam.models backbone does) and every module of a class of
lbam.attention (SE, CBAM, BAM, ECA, LBAM) inside it, so a torchvision ResNet with LBAM blocks inserted by hand
counts too. A model that finds none and declares none (no ``attention_modules`` attribute) gets
``attention_params=0`` and a warning saying that no attention module was found, never a silent 0.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _ops(names: str) -> list:
    """The aten op packets, among the space-separated ``names``, that this torch build has."""
    return [getattr(aten, n) for n in names.split() if hasattr(aten, n)]


# FlopCounterMode calls each formula with the op's arguments (tensors replaced by their shapes) and out_shape.
def _per_output(times: int):
    return lambda *args, out_shape, **kwargs: times * math.prod(out_shape)


def _per_input(input_shape, *args, **kwargs) -> int:
    return math.prod(input_shape)


def _window(input_shape, kernel, *args, out_shape, **kwargs) -> int:
    kernel = list(kernel) if isinstance(kernel, list | tuple) else [kernel]
    if len(kernel) == 1:  # a single size means a square window
        kernel = kernel * (len(input_shape) - 2)
    return math.prod(out_shape[0] if isinstance(out_shape, tuple) else out_shape) * math.prod(kernel)


def _batch_norm(input_shape, *args, out_shape, **kwargs) -> int:
    training = any(a is True for a in args)  # the op's one bool argument, if any, is `training`
    return math.prod(input_shape) * (4 if training else 2)


_ELEMENTWISE = "add sub mul div relu sigmoid hardsigmoid hardswish silu gelu tanh hardtanh clamp clamp_min"
_WINDOW = (
    "max_pool1d max_pool2d max_pool2d_with_indices max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d"
)
_REDUCE = "_adaptive_avg_pool2d adaptive_max_pool2d adaptive_max_pool1d adaptive_avg_pool3d mean sum max min amax amin"
_BATCH_NORM = "native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training"
EXTRA_FLOPS = {op: _per_output(1) for op in _ops(_ELEMENTWISE + " " + _ELEMENTWISE.replace(" ", "_ ") + "_")}
EXTRA_FLOPS |= {op: _per_output(2) for op in _ops("addcmul addcmul_ addcdiv addcdiv_")}
EXTRA_FLOPS |= {op: _window for op in _ops(_WINDOW)}
EXTRA_FLOPS |= {op: _per_input for op in _ops(_REDUCE)}
EXTRA_FLOPS |= {op: _batch_norm for op in _ops(_BATCH_NORM)}


def count_flops(fn, *args) -> tuple[int, int]:
    """(MACs, FLOPs) of ``fn(*args)``, counted as the module docstring says."""
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOPS) as counter:
        fn(*args)
    per_op = counter.get_flop_counts().get("Global", {})
    extra = sum(n for op, n in per_op.items() if op in EXTRA_FLOPS)
    mac_flops = sum(n for op, n in per_op.items() if op not in EXTRA_FLOPS)
    return mac_flops // 2, mac_flops + extra


def _count_params(params) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention modules of ``model``: those in its ``attention_modules`` list, then every instance of a
    class of lbam.attention found in it (outermost only: a module inside one of them counts with it), each once."""
    from lbam.attention import ATTENTIONS

    types = tuple(cls for cls in ATTENTIONS.values() if cls is not None)
    found = {id(m): m for m in getattr(model, "attention_modules", [])}
    inside: set[int] = set()
    for m in model.modules():
        if id(m) in inside:
            continue
        if isinstance(m, types) or id(m) in found:
            found.setdefault(id(m), m)
            inside |= {id(sub) for sub in m.modules()} - {id(m)}
    return list(found.values())


def profile_model(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> dict[str, int]:
    """``params``, ``attention_params`` (of :func:`attention_modules`), ``macs`` and ``flops`` of one forward
    pass of a zero input of ``input_size`` on the model's device (the meta device works: no compute). Warns when
    the model neither lists attention modules nor holds one (``attention_params`` is then 0)."""
    attention = attention_modules(model)
    if not attention and not hasattr(model, "attention_modules"):
        warnings.warn(
            f"profile_model: no attention module (SE, CBAM, BAM, ECA, LBAM) found in {type(model).__name__}: "
            "attention_params=0",
            stacklevel=2,
        )
    first = next(model.parameters(), None)
    x = torch.zeros(input_size, device=first.device if first is not None else "cpu")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            macs, flops = count_flops(model, x)
    finally:
        for m, training in modes.items():
            m.training = training
    return {
        "params": _count_params(model.parameters()),
        "attention_params": _count_params(p for m in attention for p in m.parameters()),
        "macs": int(macs),
        "flops": int(flops),
    }
