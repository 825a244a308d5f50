"""Preprocessed-tensor cache: decode and resize once, then every epoch and run reads one file."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from lbam.io import atomic_write

# Bump when preprocessing changes so old caches are never reused.
CACHE_VERSION = 2
KEYS = ("images", "labels", "ids", "skipped")


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
    """Load the cached dict at ``path``, or build it and write it atomically; returns (data, was_cached).

    A cache file that cannot be read (truncated, zero bytes, not a cache) is rebuilt with a warning."""
    if path.exists():
        try:
            data = torch.load(path, weights_only=True)
            if isinstance(data, dict) and all(k in data for k in KEYS):
                return data, True
            problem = "not a cache of this version"
        except Exception as e:  # any unreadable file: the cache is only ever a copy of the source
            problem = f"{type(e).__name__}: {e}".splitlines()[0]
        warnings.warn(f"rebuilding the corrupt data cache {path} ({problem})", stacklevel=3)
    data = build()
    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write(path, buffer.getbuffer())
    return data, False
