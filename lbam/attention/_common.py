"""Shared pieces of the attention modules: argument checks and ECA's adaptive kernel size."""

import math

import torch


def check_input(x: torch.Tensor, channels: int) -> None:
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
