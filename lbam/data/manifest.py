"""What a dataset folder holds, file by file: the sha256 of every file its loader reads, checked at every setup.

A manifest lists ``<sha256>  <relative path>`` per line (the format of ``sha256sum``, so ``sha256sum -c`` checks
it too). The real BCCD's is pinned in the package (``BCCD.sha256``: its content digest is the one pinned since
the first download); a synthetic twin writes its own when it is generated, and an Oxford-IIIT Pet download
writes one from the archives whose md5 it checked. The content digest of a folder is the sha256 of its sorted
manifest lines, so it names the files and their bytes, and it keys the decoded-image cache.

What this catches: a file deleted, added, renamed or changed, by accident or by hand, since the content was
pinned. What it cannot: someone who edits the data and rewrites an in-folder manifest to match (only the
package's pinned BCCD digest is outside the data's reach).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "SHA256SUMS"  # a dataset folder's own manifest (twins, downloaded Oxford-IIIT Pet)
CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(folder: Path, patterns) -> dict[str, str]:
    """``{relative path: sha256}`` of the files under ``folder`` matching ``patterns``; a file that cannot be
    read (a dangling or looping link, no permission) gets ``unreadable (<errno name>)`` instead of a digest."""
    out = {}
    for f in sorted({f for pattern in patterns for f in Path(folder).glob(pattern)}):
        try:
            out[f.relative_to(folder).as_posix()] = _sha256(f)
        except OSError as e:
            out[f.relative_to(folder).as_posix()] = f"unreadable ({type(e).__name__})"
    return out


def content_digest(digests: dict[str, str]) -> str:
    """sha256 over the sorted lines ``<relative path> <sha256>``: one digest for the names and the bytes."""
    lines = "".join(f"{name} {digests[name]}\n" for name in sorted(digests))
    return hashlib.sha256(lines.encode()).hexdigest()


def render(digests: dict[str, str]) -> str:
    return "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))


def parse(text: str) -> dict[str, str]:
    """The manifest ``text`` as ``{relative path: sha256}``; ValueError for a line that is not one."""
    out = {}
    for n, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or name in out:
            raise ValueError(f"line {n} is not '<sha256>  <path>': {line[:80]!r}")
        out[name] = digest
    return out


def read(path: Path) -> dict[str, str] | None:
    """The manifest at ``path``; None when there is none. ValueError when it cannot be read as one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"unreadable ({type(e).__name__})") from None
    return parse(text)


def write(folder: Path, patterns) -> Path:
    """Write ``folder``'s own manifest of the files matching ``patterns`` (at generation or download)."""
    path = Path(folder) / MANIFEST
    path.write_text(render(file_digests(folder, patterns)), encoding="utf-8")
    return path


def differences(expected: dict[str, str], actual: dict[str, str], shown: int = 3) -> str:
    """What changed, in one phrase: ``2 missing (a, b), 1 changed (c), 1 added (d)``."""
    missing = sorted(set(expected) - set(actual))
    added = sorted(set(actual) - set(expected))
    changed = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    parts = []
    for what, names in (("missing", missing), ("changed", changed), ("added", added)):
        if names:
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            parts.append(f"{len(names)} {what} ({', '.join(names[:shown])}{more})")
    return ", ".join(parts) or "no file differs"
