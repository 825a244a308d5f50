"""Shared pieces of the attention modules: argument checks and ECA's adaptive kernel size."""

import math

import torch


def check_input(x: torch.Tensor, channels: int) -> None:
    """Raise ValueError unless ``x`` is N×C×H×W with C == ``channels``."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"expected a 4-D tensor N×C×H×W with C={channels}, got shape {tuple(x.shape)}")


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_odd_kernel(kernel_size: int) -> int:
    check_positive("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (to keep the output aligned), got {kernel_size}")
    return kernel_size


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel k = |log2(C)/γ + b/γ|_odd (truncate, then round up to odd), as the ECA code does."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1
