"""Batched augmentation and normalisation: a few tensor ops per batch, on whatever device the batch is on.

The DataModule runs these in ``on_after_batch_transfer``: on the GPU for GPU runs, on CPU tensors for CPU runs,
the same functions either way. Random draws come from the global generator of the batch's device (torch's CPU
generator on the CPU, in the order the old per-batch loader drew them), so seeding and checkpointed RNG state
reproduce them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``² window of N×C×H×W ``x`` (a view, no copy)."""
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def random_flips(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Flip each sample of ``x`` along each dim of ``dims`` with probability 1/2 (one draw of N per dim, in
    order). On the CPU in place: ``x`` must be a gathered batch (a copy), never the cache itself.

    The same draws and the same pixels on every device, by two means: on the GPU ``torch.where`` (no
    data-dependent shape, so no host sync); on the CPU the flipped samples only, copied out and back by
    ``index_select``/``index_copy_`` (row copies: faster there than a flipped copy of the whole batch, and 3x
    faster at 32 px than ``x[i] = x[i].flip(d)``, whose indexing kernel goes element by element)."""
    for dim in dims:
        flip = torch.rand(len(x), device=x.device) < 0.5
        if x.is_cuda:
            x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(dim), x)
        else:
            idx = flip.nonzero().squeeze(1)
            x.index_copy_(0, idx, x.index_select(0, idx).flip(dim))
    return x


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], hflip: bool) -> torch.Tensor:
    """Batched random-resized crop (area fraction in ``scale``, aspect 3/4..4/3) + optional h-flip: one
    ``grid_sample`` call for the whole batch instead of a per-image PIL pipeline. Returns float32 in [0, 255]."""
    n, device = len(x), x.device
    area = torch.empty(n, device=device).uniform_(*scale)
    log_r = torch.empty(n, device=device).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_r)
    sw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(n, device=device) * 2 - 1) * (1 - sw)  # centre offset in [-1, 1] coordinates: inside
    ty = (torch.rand(n, device=device) * 2 - 1) * (1 - sh)
    if hflip:
        sign = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
    else:
        sign = torch.ones(n, device=device)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = sw * sign, tx
    theta[:, 1, 1], theta[:, 1, 2] = sh, ty
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` in float32 with ``mean`` and ``std`` per channel in pixel units (1×C×1×1): the
    last step, where uint8 becomes float. One float copy, then in place: on the CPU a uint8 - float
    subtraction (promotion inside the op) measured ~10x slower, and every fresh batch-sized buffer costs page
    faults. Subtract-then-divide rather than a multiply-add with 1/std: the rounding then equals the old
    loader's, so a CPU run whose batches did not change trains bit-identically (the curve experiment)."""
    return x.float().sub_(mean).div_(std)


def augment(
    x: torch.Tensor, size: int, train: bool, flips: tuple[int, ...], rrc_scale, mean, std
) -> torch.Tensor:
    """uint8 N×3×S×S stored images → normalised float32 N×3×``size``²: in training a random-resized crop when
    ``rrc_scale`` is set (h-flipped at random if -1 is in ``flips``), else the centre crop randomly flipped
    along each dim of ``flips``; in evaluation the centre crop alone."""
    if train and rrc_scale is not None:
        return normalise(random_resized_crop(x, size, rrc_scale, hflip=-1 in flips), mean, std)
    x = centre_crop(x, size)
    if train:
        x = random_flips(x, flips)  # on uint8, before the 4x larger float copy
    return normalise(x, mean, std)


def channel_stats(images: torch.Tensor, idx: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of ``images[idx]`` (uint8 N×3×H×W), exact: from the
    histogram of the 256 byte values (in float64), which is also faster than summing floats."""
    hist = torch.zeros(3, 256, dtype=torch.float64)
    for i in range(0, len(idx), 512):  # in chunks of 512 images: no copy of the whole split
        x = images[idx[i : i + 512]]
        for c in range(3):
            hist[c] += torch.bincount(x[:, c].reshape(-1), minlength=256).double()
    value = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum(1)
    mean = (hist * value).sum(1) / n
    var = (hist * value * value).sum(1) / n - mean * mean
    return mean.tolist(), var.clamp(min=1e-12).sqrt().tolist()
