"""What a checkpoint must prove before it is resumed (``lbam.rundir``) or drawn (``lbam.report.maps``): that it is
this run's (its identity), that its weights are the ones saved (their sha256, stored in it when it was written),
finite, and of this model's shapes; and the one atomic way a checkpoint is written.

The digest catches bits that changed after the save (a flipped exponent bit leaves a finite, plausible weight) and
an edit by a tool that does not know it; checkpoints written before it existed carry none, and only the other
checks apply to them. It is no defence against someone who rewrites the weights and the digest together.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch

DIGEST = "lbam_weights_sha256"
# Identity keys a checkpoint written before they existed lacks; absent, they are not compared.
NEWER_IDENTITY = ("data_sha256",)


def _tensors(obj, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _tensors(obj[key], f"{path}/{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{path}/{i}")


def weights_digest(checkpoint: dict) -> str:
    """sha256 of every tensor of the weights and the optimiser state (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    parts = {
        "state_dict": checkpoint.get("state_dict"),
        "optimizer_states": checkpoint.get("optimizer_states"),
    }
    for path, t in _tensors(parts):
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{path} {t.dtype} {t.numel()}\n".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def non_finite(checkpoint: dict) -> list[str]:
    """The weights and optimiser tensors holding a NaN or an infinity."""
    parts = {
        "state_dict": checkpoint.get("state_dict"),
        "optimizer_states": checkpoint.get("optimizer_states"),
    }
    return [p for p, t in _tensors(parts) if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def problem(checkpoint, identity: dict | None = None, expected: dict | None = None) -> tuple[str, str] | None:
    """(kind, why) when ``checkpoint`` (as loaded) cannot be used, else None. Kinds: ``corrupt`` (no weights, or
    weights that are not the saved ones), ``foreign`` (another run's identity), ``non-finite``, ``mismatched`` (not
    the shapes of ``expected``, a state dict of the model to load it into)."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        return "corrupt", "is unreadable (no state_dict)"
    theirs = checkpoint.get("lbam_identity") or {}
    if identity is not None:
        keys = [k for k in identity if k in theirs or k not in NEWER_IDENTITY]
        differ = [k for k in keys if theirs.get(k) != identity[k]]
        if differ:
            what = ", ".join(f"{k} {theirs.get(k)!r} vs {identity[k]!r}" for k in differ)
            return "foreign", f"belongs to another run ({what})"
    stored = checkpoint.get(DIGEST)
    if stored is not None and stored != (actual := weights_digest(checkpoint)):
        return (
            "corrupt",
            f"holds other weights than it was saved with (sha256 {actual[:12]}…, saved {stored[:12]}…)",
        )
    bad = non_finite(checkpoint)
    if bad:
        return (
            "non-finite",
            f"holds NaN or infinite values in {len(bad)} tensor(s), e.g. {bad[0].lstrip('/')}",
        )
    if expected is not None:
        state = checkpoint["state_dict"]
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or extra or shapes:
            what = (
                f"{len(missing)} missing (e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]}), "
                f"{len(shapes)} of another shape"
                + (
                    f" (e.g. {shapes[0]} {tuple(state[shapes[0]].shape)} vs {tuple(expected[shapes[0]].shape)})"
                    if shapes
                    else ""
                )
            )
            return "mismatched", f"does not fit this model: {what}"
    return None


def save_atomically(trainer: pl.Trainer, path: Path) -> None:
    """The trainer's full state (optimiser too) to ``path``: a temp file unique to this writer, then a rename, so a
    kill mid-save leaves the previous checkpoint intact. Collective under DDP; rank 0 renames."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        os.replace(tmp, path)


class Seal(pl.Callback):
    """Stores :func:`weights_digest` in every checkpoint the trainer writes (rank 0, which writes the file)."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        if trainer.is_global_zero:
            checkpoint[DIGEST] = weights_digest(checkpoint)
