"""Verified downloads and safe, all-or-nothing archive extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lbam.data.errors import DataError, DatasetNotFoundError, not_found

# Fail fast when offline: a dead network should cost seconds, not minutes.
TIMEOUT_S = 15.0
# What a broken download raises while it is read (besides OSError): a truncated or CRC-broken zip, a truncated or
# garbled tar or gzip stream.
BROKEN_ARCHIVE = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)
# Members nested deeper than this are refused (BCCD's archive nests 4 deep, Oxford-IIIT Pet's 3).
MAX_DEPTH = 64


class UnsafeArchiveError(DataError):
    """An archive member would land outside the extraction folder, or is a link or device file that could."""


@dataclass(frozen=True)
class Source:
    """One archive to fetch: URL and the expected digest (``algo`` is ``sha256`` or ``md5``; None = unchecked)."""

    url: str
    digest: str | None = None
    algo: str = "sha256"


def fetch(source: Source, dest: Path) -> None:
    """Download ``source`` to ``dest`` (inside a private temp folder) and check its digest; raises OSError
    (``urllib.error.URLError`` is one) on a network or checksum failure."""
    h = hashlib.new(source.algo)
    request = urllib.request.Request(source.url, headers={"User-Agent": "lbam"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(dest, "wb") as fh:
        while chunk := response.read(1 << 20):
            fh.write(chunk)
            h.update(chunk)
    if source.digest is not None and h.hexdigest() != source.digest.lower():
        raise OSError(
            f"{source.algo} mismatch for {source.url}: got {h.hexdigest()}, expected {source.digest}"
        )


def _check_inside(root: Path, name: str, archive: Path) -> None:
    """Refuse member ``name`` unless where it lands, with every link on the way resolved as the filesystem is
    now, stays inside ``root`` (resolved), no deeper than :data:`MAX_DEPTH` folders."""
    depth = len([p for p in name.replace("\\", "/").split("/") if p not in ("", ".")])
    if depth > MAX_DEPTH:  # os.makedirs recurses once per folder: 2,000 levels were a RecursionError
        raise UnsafeArchiveError(
            f"{archive.name}: member {name[:60]!r}… is {depth} levels deep (more than {MAX_DEPTH}); "
            "refusing the archive"
        )
    where = Path(os.path.realpath(root / name))
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or not where.is_relative_to(root):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} escapes {root}; refusing the archive")


def _check_tar_member(m: tarfile.TarInfo, root: Path, archive: Path) -> None:
    _check_inside(root, m.name, archive)
    if os.path.lexists(root / m.name) and not (m.isdir() and (root / m.name).is_dir()):
        # Replacing an extracted path (e.g. re-pointing a checked link) could redirect later members.
        raise UnsafeArchiveError(f"{archive.name}: member {m.name!r} overwrites an earlier member")
    if m.issym():
        if os.path.isabs(m.linkname):  # would point elsewhere once the folder is renamed into place
            raise UnsafeArchiveError(f"{archive.name}: link {m.name!r} -> {m.linkname!r} escapes {root}")
        _check_inside(root, os.path.join(os.path.dirname(m.name), m.linkname), archive)
    elif m.islnk():
        _check_inside(root, m.linkname, archive)
    elif not (m.isfile() or m.isdir()):
        raise UnsafeArchiveError(f"{archive.name}: member {m.name!r} is a device file or fifo")


class _Budget:
    """The bytes an extraction may still write: declared sizes are checked before a member is written, actual
    sizes after, so that neither a lying header nor a bomb writes more than ``limit``."""

    def __init__(self, archive: Path, limit: int | None):
        self.archive, self.limit, self.declared, self.written = archive, limit, 0, 0

    def _refuse(self, what: str, n: int) -> None:
        raise UnsafeArchiveError(
            f"{self.archive.name}: {what} {n / 2**30:.2f} GiB, more than the {self.limit / 2**30:.2f} GiB this "
            "dataset can hold (a zip or tar bomb?); refusing the archive"
        )

    def declare(self, n: int) -> None:
        self.declared += n
        if self.limit is not None and self.declared > self.limit:
            self._refuse("its members declare", self.declared)

    def wrote(self, path: Path) -> None:
        if path.is_file() and not path.is_symlink():
            self.written += path.stat().st_size
        if self.limit is not None and self.written > self.limit:
            self._refuse("extracting it wrote", self.written)


def archive_kind(archive: Path) -> str:
    """``zip`` or ``tar``; OSError naming what the file starts with otherwise (an HTML login or captive-portal
    page saved in place of the archive is the usual case)."""
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        if tarfile.is_tarfile(archive):
            return "tar"
    except BROKEN_ARCHIVE:
        pass
    with open(archive, "rb") as f:
        head = f.read(64)
    html = b"<html" in head.lower() or b"<!doctype" in head.lower()
    raise OSError(
        f"not a zip or tar archive ({archive.stat().st_size} bytes starting {head[:24]!r}"
        + ("; an HTML page: a login or captive-portal page?" if html else "; truncated or not an archive")
        + ")"
    )


def safe_extract(archive: Path, root: Path, max_bytes: int | None = None) -> None:
    """Extract a zip or tar(.gz) archive into the empty folder ``root``, member by member, writing at most
    ``max_bytes`` (declared and actual sizes; None = no cap).

    Each member's destination (and a link's target) is resolved with ``realpath`` against the files
    extracted so far, before it is written, so ``d -> .`` followed by ``d/../evil`` is refused whatever the
    Python version. Python's tarfile ``data`` filter, where present, checks again. A refused archive may
    leave a partial ``root``: :func:`install` extracts into a temp folder that it removes. A file that is no
    archive raises OSError; a broken one one of :data:`BROKEN_ARCHIVE`.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    budget = _Budget(archive, max_bytes)
    if archive_kind(archive) == "zip":
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            budget.declare(sum(info.file_size for info in infos))  # the central directory lists them all
            for info in infos:
                _check_inside(root, info.filename, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    # zipfile would write the link as a plain file; refuse rather than guess.
                    raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is a symlink")
                budget.wrote(Path(zf.extract(info, root)))
        return
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive) as tf:
        for m in tf:
            _check_tar_member(m, root, archive)
            budget.declare(m.size if m.isfile() else 0)
            tf.extract(m, root, **kwargs)
            budget.wrote(root / m.name)


def atomic_dir(target: Path, fill: Callable[[Path], Path | None]) -> Path:
    """Create the folder ``target`` all or nothing: ``fill`` writes into a fresh temp folder beside it and
    returns the folder to rename into place (None: the temp folder itself). A present ``target`` is kept."""
    target = Path(target)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        folder = fill(tmp) or tmp
        try:
            os.replace(folder, target)
        except OSError:
            if not target.is_dir():  # else a concurrent writer of the same content finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def install(
    name: str,
    sources: Sequence[Source],
    target: Path,
    pick: Callable[[Path], Path],
    max_bytes: int | None = None,
) -> Path:
    """Fetch and extract ``sources`` into a temp folder beside ``target``, verify, then rename it into place.

    ``pick`` maps the extraction folder to the folder that becomes ``target`` (e.g. a sub-folder of a
    GitHub archive), raising OSError if its content is incomplete or not the pinned one. ``target`` only ever
    appears complete. Network, checksum, archive or content failures raise :class:`DatasetNotFoundError`; an
    unsafe archive (a member escaping the folder, more than ``max_bytes`` in all) :class:`UnsafeArchiveError`.
    """
    target = Path(target)

    def missing(reason: str) -> DatasetNotFoundError:
        return not_found(name, target, [s.url for s in sources], reason)

    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Mode bits, not just os.access: a folder marked read-only stays untouched even for root.
    if not os.access(target.parent, os.W_OK) or not target.parent.stat().st_mode & stat.S_IWUSR:
        raise missing(f"{target.parent} is read-only; set LBAM_DATA_DIR to a writable folder to download")

    def fill(tmp: Path) -> Path:
        staging = tmp / "x"
        for i, source in enumerate(sources):
            archive = tmp / f"archive{i}"
            try:
                fetch(source, archive)
            except OSError as e:
                raise missing(f"download failed: {getattr(e, 'reason', None) or e}") from e
            budget = None if max_bytes is None else max_bytes - _size(staging)
            try:
                safe_extract(archive, staging, budget)
            except (OSError, *BROKEN_ARCHIVE) as e:
                detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise missing(f"downloaded archive {source.url} unreadable: {detail}") from e
            archive.unlink()
        try:
            return pick(staging)
        except OSError as e:
            raise missing(f"downloaded archive rejected: {e}") from e

    return atomic_dir(target, fill)


def _size(folder: Path) -> int:
    """Bytes in the regular files under ``folder`` (what earlier archives of one install wrote)."""
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
