"""Verified downloads and safe, all-or-nothing archive extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Fail fast when offline: a dead network should cost seconds, not minutes.
TIMEOUT_S = 15.0
_CHUNK = 1 << 20


class DatasetNotFoundError(RuntimeError):
    """A dataset is neither on disk nor downloadable; the message says where it was expected."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would land outside the extraction folder."""


@dataclass(frozen=True)
class Source:
    """One archive to fetch: URL and the expected digest (``algo`` is ``sha256`` or ``md5``; None = unchecked)."""

    url: str
    digest: str | None = None
    algo: str = "sha256"


def missing_message(name: str, expected: Path, urls: Sequence[str], reason: str = "") -> str:
    """The one error text for a dataset that is missing and could not be fetched."""
    env = os.environ.get("LBAM_DATA_DIR")
    lines = [
        f"Dataset '{name}' not found at {Path(expected).resolve()}"
        + (f" ({reason})" if reason else "")
        + ".",
        "Download it when online with `python -m lbam.data download dataset=" + name + "` (or `make data`);",
        "source: " + ", ".join(urls) + ".",
        "Or point LBAM_DATA_DIR at the folder that contains it "
        + (f"(now LBAM_DATA_DIR={env})." if env else "(LBAM_DATA_DIR is not set)."),
    ]
    return "\n".join(lines)


def fetch(source: Source, dest: Path, timeout: float = TIMEOUT_S) -> Path:
    """Download ``source`` to ``dest`` and check its digest; raises OSError on network or checksum failure."""
    part = dest.with_name(dest.name + ".part")
    h = hashlib.new(source.algo)
    request = urllib.request.Request(source.url, headers={"User-Agent": "lbam"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as fh:
            while chunk := response.read(_CHUNK):
                fh.write(chunk)
                h.update(chunk)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if source.digest is not None and h.hexdigest() != source.digest.lower():
        part.unlink(missing_ok=True)
        raise OSError(
            f"{source.algo} mismatch for {source.url}: got {h.hexdigest()}, expected {source.digest}"
        )
    os.replace(part, dest)
    return dest


def _inside(root: Path, member: str) -> bool:
    if member.startswith(("/", "\\")) or (len(member) > 1 and member[1] == ":"):
        return False
    target = (root / member).resolve()
    return target == root or root in target.parents


def check_members(archive: Path, root: Path) -> None:
    """Refuse archives with absolute paths, ``..`` escapes, device files or links pointing outside ``root``."""
    root = root.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not _inside(root, info.filename):
                    raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} escapes {root}")
                if stat.S_ISLNK(info.external_attr >> 16):
                    # zipfile would write the link as a plain file; refuse rather than guess.
                    raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is a symlink")
        return
    with tarfile.open(archive) as tf:
        for m in tf.getmembers():
            if not _inside(root, m.name):
                raise UnsafeArchiveError(f"{archive.name}: member {m.name!r} escapes {root}")
            if m.issym() and not _inside(root, os.path.join(os.path.dirname(m.name), m.linkname)):
                raise UnsafeArchiveError(f"{archive.name}: link {m.name!r} -> {m.linkname!r} escapes {root}")
            if m.islnk() and not _inside(root, m.linkname):
                raise UnsafeArchiveError(f"{archive.name}: link {m.name!r} -> {m.linkname!r} escapes {root}")
            if m.isdev():
                raise UnsafeArchiveError(f"{archive.name}: member {m.name!r} is a device file")


def safe_extract(archive: Path, root: Path) -> None:
    """Extract a zip or tar(.gz) archive into ``root`` after :func:`check_members`."""
    check_members(archive, root)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(root)
        return
    with tarfile.open(archive) as tf:
        # The stdlib "data" filter (where present) re-checks every member as a second line of defence.
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(root, **kwargs)


def install(
    name: str,
    sources: Sequence[Source],
    target: Path,
    pick: Callable[[Path], Path] = lambda staging: staging,
    check: Callable[[Path], None] = lambda folder: None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch and extract ``sources`` into a temp folder beside ``target``, verify, then rename it into place.

    ``pick`` maps the extraction folder to the folder that becomes ``target`` (e.g. a sub-folder of a
    GitHub archive); ``check`` raises OSError if its content is incomplete. ``target`` only ever appears
    complete. Network, checksum or content failures raise :class:`DatasetNotFoundError`.
    """
    target = Path(target)
    if target.exists():
        return target
    urls = [s.url for s in sources]
    target.parent.mkdir(parents=True, exist_ok=True)
    # Mode bits, not just os.access: a folder marked read-only stays untouched even for root.
    if not os.access(target.parent, os.W_OK) or not target.parent.stat().st_mode & stat.S_IWUSR:
        reason = f"{target.parent} is read-only; set LBAM_DATA_DIR to a writable folder to download"
        raise DatasetNotFoundError(missing_message(name, target, urls, reason))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        staging = tmp / "x"
        staging.mkdir()
        for i, source in enumerate(sources):
            archive = tmp / f"archive{i}"
            try:
                fetch(source, archive, timeout=timeout)
            except (urllib.error.URLError, OSError) as e:
                reason = f"download failed: {getattr(e, 'reason', None) or e}"
                raise DatasetNotFoundError(missing_message(name, target, urls, reason)) from e
            safe_extract(archive, staging)
            archive.unlink()
        try:
            folder = pick(staging)
            check(folder)
        except OSError as e:
            reason = f"downloaded archive rejected: {e}"
            raise DatasetNotFoundError(missing_message(name, target, urls, reason)) from e
        try:
            os.replace(folder, target)
        except OSError:
            if not target.is_dir():  # else a concurrent install won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
