"""Damage is counted in what it costs: skipped files and skipped samples, and how much smaller they make the splits.

A dataset is refused (one-line DataError) when more than :data:`MAX_BAD_FRACTION` of its source files, or of its
samples, are unusable, or when the damage leaves the test set or the training split that much smaller than the
size options ask of the nominal data (usable + skipped samples). With a fixed training size, e.g. BCCD's 4000
crops, every lost crop comes out of the test set: 5 % of lost images cost it a third.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lbam.data.errors import DataError
from lbam.data.split import targets

log = logging.getLogger("lbam.data")
# A dataset whose unusable files, samples or split shrinkage exceed this fraction is refused, not silently shrunk.
MAX_BAD_FRACTION = 0.05
_REPORTED: set[tuple] = set()  # the skipped-item lines this process has logged


def lost_samples(skipped: list[dict], per_file: float) -> float:
    """Samples the skipped items held: one per skipped sample; a skipped file its ``samples``, else ``per_file``
    (the mean of the readable files) when its annotation could not be read."""
    return sum(1 if "#" in s["id"] else s.get("samples", per_file) for s in skipped)


def check(dm, skipped: list[dict], n_sources: int, n_usable: int, plan: dict | None = None) -> None:
    """Refuse ``dm``'s data (a DataError naming the cause and the fix) when the damage costs too much: the files
    and samples lost, and with the ``plan`` made on what is left, how much smaller its splits come out."""
    if not skipped:
        return
    files = [s for s in skipped if "#" not in s["id"]]
    fix = (
        f"restore the dataset (delete {dm.dataset_dir()} and run `python -m lbam.data download "
        f"dataset={dm.name}`); `python -m lbam.data info dataset={dm.name}` lists every skipped item"
    )
    first = (files or skipped)[0]
    example = f"e.g. {first['id']}: {first['reason']}"
    if files and len(files) > MAX_BAD_FRACTION * n_sources:
        raise DataError(
            f"{dm.name}: {len(files)} of {n_sources} source images in {dm.dataset_dir()} are unusable (more than "
            f"{MAX_BAD_FRACTION:.0%}), {example}; {fix}"
        )
    per_file = n_usable / max(n_sources - len(files), 1)
    lost = lost_samples(skipped, per_file)
    nominal = round(n_usable + lost)
    unit = dm.unit
    cause = f"{len(files)} of {n_sources} images and {len(skipped) - len(files)} single {unit} skipped ({example})"
    if lost > MAX_BAD_FRACTION * nominal:
        raise DataError(
            f"{dm.name}: {cause}: ~{lost:.0f} of ~{nominal} {unit} in {dm.dataset_dir()} are unusable (more than "
            f"{MAX_BAD_FRACTION:.0%}); {fix}"
        )
    if plan is None:
        return
    realized = {"train_split": len(plan["train_split"]), "test": len(plan["test"])}
    want = targets(dm.train_size, dm.test_size, nominal)
    have = targets(dm.train_size, dm.test_size, n_usable)
    for (split, key), w, h in zip((("training split", "train_split"), ("test split", "test")), want, have):
        if h < (1 - MAX_BAD_FRACTION) * w:
            raise DataError(
                f"{dm.name}: {cause}: the {split} would have {realized[key]} {unit} instead of ~{w} "
                f"(more than {MAX_BAD_FRACTION:.0%} fewer); {fix}"
            )


def report_skipped(name: str, folder: Path, skipped: list[dict]) -> None:
    """One warning line naming the skipped items, once per dataset folder and set of items in this process (a
    sweep's runs share it): `python -m lbam.data info` lists them all."""
    key = (name, str(folder), tuple(s["id"] for s in skipped))
    if not skipped or key in _REPORTED:
        return
    _REPORTED.add(key)
    items = ", ".join(f"{s['id']} ({s['reason']})" for s in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    log.warning(
        "%s: skipped %d item(s) in %s: %s%s (`python -m lbam.data info dataset=%s` lists them)",
        name, len(skipped), folder, items.replace("\n", " "), more, name,
        extra={"lbam_skipped": True},
    )  # fmt: skip
