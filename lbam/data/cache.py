"""Preprocessed-tensor cache: decode and resize once, then every epoch and run reads one file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

# Bump when preprocessing changes so old caches are never reused.
CACHE_VERSION = 1


def fingerprint(files: Iterable[Path], root: Path) -> str:
    """Hash of relative paths, sizes and mtimes of ``files`` (cheap; a changed or replaced file changes it)."""
    h = hashlib.sha256()
    for f in sorted(Path(p) for p in files):
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_path(cache_dir: Path, name: str, key: dict) -> Path:
    """File for ``key`` (a json-serialisable dict: source fingerprint, size, options) under ``cache_dir/name``."""
    blob = json.dumps({**key, "version": CACHE_VERSION}, sort_keys=True).encode()
    return Path(cache_dir) / name / f"{hashlib.sha256(blob).hexdigest()[:20]}.pt"


def load_or_build(path: Path, build: Callable[[], dict]) -> tuple[dict, bool]:
    """Load the cached dict at ``path`` or build it and write it atomically; returns (data, was_cached)."""
    if path.exists():
        return torch.load(path, weights_only=True), True
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data, False
