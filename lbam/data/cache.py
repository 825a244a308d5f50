"""The decoded-image cache: one file per (dataset, content of its source files, stored side, decoder, version), which
says what it is.

The file holds its own key and a checksum of its pixels, and is checked on load against the key expected now and
against the index just read (ids and labels: a cache with two classes swapped is caught). Whatever fails a check is
rebuilt after a one-line warning, since the cache is only a copy of the source; a cache path that cannot be used
at all (a folder, no permission) is a one-line DataError.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zlib
from pathlib import Path

import torch

from lbam.data.errors import DataError
from lbam.data.index import Index
from lbam.io import atomic_write

log = logging.getLogger("lbam.data")
# Bump when preprocessing changes so old caches are never reused (3: key and checksum stored in the file; 4: keyed
# by the content digest of the source files, not their sizes and mtimes).
CACHE_VERSION = 4
FIELDS = ("key", "checksum", "images", "labels", "ids", "skipped")


def cache_path(cache_dir: Path, key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / key["dataset"] / f"{name}.pt"


def checksum(images: torch.Tensor, labels: torch.Tensor) -> int:
    """CRC-32 of the pixel and label bytes: catches a damaged file fast (0.07 s for BCCD at 128 px); the cache is
    a local copy, not something to defend against a forger."""
    crc = zlib.crc32(images.contiguous().numpy().data)
    return zlib.crc32(labels.contiguous().numpy().data, crc)


def _problem(data, key: dict, index: Index) -> str | None:
    """Why ``data`` is not the cache of ``key`` for ``index``; None when it is."""
    if not isinstance(data, dict) or not all(k in data for k in FIELDS):
        return "not a cache of this version"
    if data["key"] != key:
        old = data["key"]
        diff = sorted(k for k in set(key) | set(old) if key.get(k) != old.get(k))
        return "stored for another " + ", ".join(
            f"{k} ({old.get(k)!r}, expected {key.get(k)!r})" for k in diff
        )
    images, labels, n, side = data["images"], data["labels"], len(data["ids"]), key["side"]
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        return "images or labels are not tensors"
    if images.dtype != torch.uint8 or tuple(images.shape) != (n, 3, side, side):
        return f"images are {images.dtype} {tuple(images.shape)}, expected uint8 {(n, 3, side, side)}"
    if labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
        return f"labels are {labels.dtype} {tuple(labels.shape)}, expected int64 ({n},)"
    gone = {s["id"] for s in data["skipped"]}  # images the decoder rejected: absent from the cache
    keep = [k for k, i in enumerate(index.ids) if i.split("#")[0] not in gone]
    if data["ids"] != [index.ids[k] for k in keep]:
        return "its sample ids differ from the dataset's"
    if labels.tolist() != index.labels[keep].tolist():
        return "its labels differ from the annotations'"
    if checksum(images, labels) != data["checksum"]:
        return "its pixels fail the checksum"
    return None


def _usable_path(path: Path) -> None:
    fix = "or set LBAM_CACHE_DIR (paths.cache_dir) to another folder"
    if path.is_dir():
        raise DataError(f"the data cache {path} is a folder, not a file: remove it (rm -r {path}) {fix}")
    if path.exists() and not os.access(path, os.R_OK):
        raise DataError(f"the data cache {path} cannot be read: fix its permissions, remove it, {fix}")


def load(path: Path, key: dict, index: Index) -> dict | None:
    """The cached samples at ``path`` if they pass every check, else None (after a warning when a file was
    there): ``{"images", "labels", "ids", "skipped"}``."""
    _usable_path(path)
    if not path.exists():
        return None
    try:
        data = torch.load(path, weights_only=True)
        problem = _problem(data, key, index)
    except Exception as e:  # any unreadable file: the cache is only ever a copy of the source
        problem = (f"{type(e).__name__}: {e}".strip().splitlines() or ["unreadable"])[0]
    if problem is None:
        return {k: data[k] for k in FIELDS[2:]}
    log.warning("%s: rebuilding the data cache %s: %s", key["dataset"], path, problem)
    return None


def save(path: Path, key: dict, data: dict) -> None:
    """Write ``data`` with its key and checksum, atomically; a cache folder that cannot be written is a DataError."""
    buffer = io.BytesIO()
    torch.save({**data, "key": key, "checksum": checksum(data["images"], data["labels"])}, buffer)
    try:
        atomic_write(path, buffer.getbuffer())
    except OSError as e:
        raise DataError(
            f"cannot write the data cache {path} ({e.strerror or e}): make {path.parent} writable or set "
            "LBAM_CACHE_DIR (paths.cache_dir) to a writable folder"
        ) from None
