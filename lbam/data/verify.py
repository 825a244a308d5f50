"""The data proves what it is at every setup, before a sample is indexed: its files against their pinned digests,
and, for pinned data under pinned split options, its test split against the pinned one.

- The real BCCD: the package's manifest (``lbam/data/BCCD.sha256``), whose content digest is the pinned
  ``BCCD_CONTENT_SHA256`` (checked too, so an edited package file is caught); its default test splits are pinned.
- A synthetic twin: the manifest written when it was generated; an Oxford-IIIT Pet download: the manifest written
  from the archives whose md5 the download checked. A folder without a manifest (a copy made by hand) cannot be
  checked: one warning line, and the row says ``data_verified: null``.

A difference is a DataError naming what changed, unless ``dataset.verify=false``: then one warning line, and the
row records ``data_verified: false`` (the report flags it). Hashing BCCD's 10 MB takes about 0.03 s.
"""

from __future__ import annotations

import logging

from lbam.data import manifest
from lbam.data.errors import DataError
from lbam.results import digest

log = logging.getLogger("lbam.data")
# The options that decide the test split (the subset, the validation split and the batch size never move it).
SPLIT_OPTIONS = ("split_by", "split_seed", "train_size", "test_size", "drop_duplicates")
_WARNED: set[tuple] = set()  # the warnings this process has logged (a sweep's runs share them)


def _warn_once(key: tuple, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message)


def _restore(dm) -> str:
    return (
        f"restore it (delete {dm.dataset_dir()} and run `python -m lbam.data download dataset={dm.name}`), or "
        "train on it as it is with dataset.verify=false (the row records it)"
    )


def expected_content(dm) -> tuple[dict[str, str] | None, str]:
    """(the digests ``dm``'s files must have, or None when nothing pins them; what pins them, for messages)."""
    if dm.pinned_manifest is not None:
        try:
            expected = manifest.read(dm.pinned_manifest)
        except ValueError as e:
            expected, _ = None, e
        if expected is None or manifest.content_digest(expected) != dm.pinned_digest:
            raise DataError(
                f"{dm.name}: the package's manifest {dm.pinned_manifest} is missing or changed (its digest is not "
                f"the pinned {dm.pinned_digest[:12]}…): reinstall lbam"
            )
        return expected, f"the pinned {dm.name} content (sha256 {dm.pinned_digest[:12]}…)"
    own = dm.dataset_dir() / manifest.MANIFEST
    try:
        return manifest.read(own), f"the content its manifest {own} lists"
    except ValueError as e:
        raise DataError(f"{dm.name}: the manifest {own} is {e}; {_restore(dm)}") from None


def check_content(dm) -> None:
    """Hash ``dm``'s source files and compare them with their pinned digests; sets ``dm.data_sha256`` (the
    content digest, which keys the cache) and ``dm.data_verified`` (True: the pinned content; False: it differs
    and ``dm.verify`` is off; None: nothing pins it)."""
    folder = dm.dataset_dir()
    actual = manifest.file_digests(folder, dm.fingerprinted)
    dm.data_sha256 = manifest.content_digest(actual)
    expected, source = expected_content(dm)
    if expected is None:
        dm.data_verified = None
        _warn_once(
            ("unpinned", str(folder)),
            f"{dm.name}: {folder} has no manifest ({manifest.MANIFEST}, written by `python -m lbam.data download`): "
            "its content cannot be checked (the row says data_verified: null)",
        )
        return
    if expected == actual:
        dm.data_verified = True
        return
    what = manifest.differences(expected, actual)
    if dm.verify:
        raise DataError(f"{dm.name}: {folder} is not {source}: {what}; {_restore(dm)}")
    dm.data_verified = False
    _warn_once(
        ("differs", str(folder), dm.data_sha256),
        f"{dm.name}: {folder} is not {source} ({what}); training on it as it is (dataset.verify=false, the row "
        "records data_verified: false)",
    )


def check_split(dm) -> None:
    """Pinned data under pinned split options has the pinned test split: a changed planner or index (code, not
    data) must not move the test set silently. Other options and unpinned data are not checked."""
    if dm.data_verified is not True or not dm.pinned_test_splits:
        return
    options = tuple(getattr(dm, k) for k in SPLIT_OPTIONS)
    pinned = dm.pinned_test_splits.get(options)
    got = digest(dm.test_ids)
    if pinned is not None and got != pinned:
        raise DataError(
            f"{dm.name}: the test split ({len(dm.test_ids)} {dm.unit}, digest {got}) is not the pinned one ({pinned}) "
            f"for {', '.join(f'{k}={v}' for k, v in zip(SPLIT_OPTIONS, options))}: the split code changed; use the "
            "commit that pinned it, or pin the new split in lbam/data/bccd.py on purpose"
        )
