"""Shared pieces of the attention modules: argument checks, max pooling and ECA's adaptive kernel size."""

import math

import torch


def max_over(x: torch.Tensor, dims: str) -> torch.Tensor:
    """Max pooling of N×C×H×W ``x``: over ``"hw"`` (GMP, N×C) or over ``"c"`` (N×1×H×W).

    Through ``torch.max(dim)``, whose backward sends each pooled value's gradient to its argmax (as max_pool2d
    does in the papers' code), never ``amax``, whose backward divides by a tie count ``(x == max).sum()``: under
    torch.compile with bf16 on CUDA, Inductor compared an unrounded recomputation of ``x`` with the rounded max,
    counted no ties and gave NaN gradients (pytorch/pytorch#195214, #186799); CBAM then diverged at step 2 on
    an H200 (results/bench/gpu/README.md). The forward value is the same."""
    if dims == "hw":
        return x.flatten(2).max(2).values
    return x.max(1, keepdim=True).values


def check_input(x: torch.Tensor, channels: int) -> None:
    """N×C×H×W with C = ``channels``, else one clear ValueError. Skipped while torch.fx traces symbolically (a
    ``Proxy`` has no shape to check), so that ``forward`` has no data-dependent branch for fx."""
    if isinstance(x, torch.fx.Proxy):
        return
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"expected a 4-D tensor N×C×H×W with C={channels}, got shape {tuple(x.shape)}")


def check_positive(name: str, value: int, odd: bool = False) -> int:
    """``value``, an integer ≥ 1 (and odd if ``odd``: a centred kernel keeps the output aligned)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if odd and value % 2 == 0:
        raise ValueError(f"{name} must be odd (to keep the output aligned), got {value}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def eca_kernel_size(channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1) -> int:
    """``kernel_size`` (odd), or where None ECA's adaptive k = |log2(C)/γ + b/γ|_odd (truncate, then round up to
    odd, as the ECA code does)."""
    if kernel_size is not None:
        return check_positive("kernel_size", kernel_size, odd=True)
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1
