"""What a dataset is planned on (its :class:`Index`, read without decoding a pixel) and the one decode of its images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch

# What a decoder raises for a bad file (not for a code bug): OSError covers PIL.UnidentifiedImageError and truncated
# or broken data streams; a header declaring more pixels than PIL allows (e.g. 30000x30000) is a
# DecompressionBombError, which is no OSError.
UNREADABLE = (OSError, PIL.Image.DecompressionBombError)


@dataclass
class Index:
    """One entry per usable sample. Skipped items are ``{"id", "reason"}``: an id ``<image>#<k>`` is one sample;
    a bare image id is a whole file, with ``"samples"`` (how many it held) when that is known. Duplicates are
    ``{"id", "of", "iou"}``."""

    ids: list[str]
    labels: np.ndarray
    n_sources: int  # source images considered
    boxes: np.ndarray | None = None  # BCCD: one clipped (x0, y0, x1, y1) per sample
    skipped: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)


def reason(what: str, e: BaseException) -> str:
    """``what: Type: message``, first line only: a skipped item's reason is one line."""
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{what}: {type(e).__name__}: {text}"


def decode_images(index: Index, folder: Path, load, side: int) -> dict:
    """Decode each source image ``folder/<image>.jpg`` of ``index`` once: ``load(path, ks)`` returns the RGB
    images (``side``²) of its samples ``ks``. A file the decoder rejects (:data:`UNREADABLE`) is skipped whole,
    any other error surfaces. Returns what is cached: ``{"images": uint8 N×3×S×S, "labels", "ids", "skipped"}``."""
    out = {"images": [], "labels": [], "ids": [], "skipped": []}
    members: dict[str, list[int]] = {}
    for k, sample_id in enumerate(index.ids):
        members.setdefault(sample_id.split("#")[0], []).append(k)  # <image>#<box>
    for stem, ks in members.items():
        path = folder / f"{stem}.jpg"
        try:
            crops = load(path, ks)
        except UNREADABLE as e:
            why = reason(f"unreadable {path.name}", e)
            out["skipped"].append({"id": stem, "reason": why, "samples": len(ks)})
            continue
        out["images"] += [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in crops]
        out["labels"] += index.labels[ks].tolist()
        out["ids"] += [index.ids[k] for k in ks]
    images = torch.stack(out["images"]) if out["images"] else torch.zeros(0, 3, side, side, dtype=torch.uint8)
    return {**out, "images": images, "labels": torch.tensor(out["labels"], dtype=torch.int64)}
