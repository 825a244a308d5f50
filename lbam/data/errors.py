"""The errors a user can fix, each one line (what, where, how to fix), and the check of where the data is said to be."""

from __future__ import annotations

import os
from pathlib import Path

from lbam.paths import data_source, default_data_dir


class DataError(RuntimeError):
    """A data problem the user can fix. Its message is one line: what, where, and how to fix it."""


class DatasetNotFoundError(DataError):
    """A dataset is neither on disk nor downloadable."""


def not_found(name: str, expected: Path, urls, reason: str = "") -> DatasetNotFoundError:
    """The one-line error for a dataset that is missing and could not be fetched."""
    env = os.environ.get("LBAM_DATA_DIR")
    return DatasetNotFoundError(
        f"dataset '{name}' not found at {Path(expected).resolve()}" + (f" ({reason})" if reason else "")
        + f": download it when online with `python -m lbam.data download dataset={name}` (source: "
        + ", ".join(urls) + "), or point LBAM_DATA_DIR (or paths.data_dir) at the folder that contains it "
        + (f"(now LBAM_DATA_DIR={env})" if env else "(LBAM_DATA_DIR is not set)")
    )  # fmt: skip


def incomplete(name: str, folder: Path, missing: list[str]) -> DataError:
    """The one-line error for a dataset folder that is there but lacks what the loader reads."""
    return DataError(
        f"{name}: the dataset folder {folder} lacks {', '.join(missing)} (an empty or partly deleted folder, or a "
        f"broken or looping link): remove it (rm -r {folder}) and run `python -m lbam.data download dataset={name}`, "
        "or point LBAM_DATA_DIR at a complete copy"
    )


def check_root(name: str, root: Path, folder: str) -> None:
    """Refuse a data root that does not exist unless it is the default ``<root>/data``, the one folder a download
    may create: a folder named by ``LBAM_DATA_DIR``, ``paths.data_dir`` or ``dataset.root`` must exist, so that
    a typo is reported instead of becoming an empty dataset folder."""
    root = Path(root).expanduser().resolve()
    if root.is_dir() or root == default_data_dir():
        return
    default = data_source(folder=folder, use_env=False)[0]  # the root used without the setting
    if root.exists():
        raise DataError(
            f"{name}: the data root {root} is not a folder; point LBAM_DATA_DIR at the one holding {folder}/"
        )
    env = os.environ.get("LBAM_DATA_DIR")
    if env and Path(env).expanduser().resolve() == root:
        raise DataError(
            f"{name}: LBAM_DATA_DIR={env} not found (no such folder): create it (mkdir -p {env}) or point "
            f"LBAM_DATA_DIR at the folder that holds {folder}/ (unset, the data root is {default})"
        )
    raise DataError(
        f"{name}: the data root {root} (paths.data_dir or dataset.root) not found (no such folder): create it "
        f"(mkdir -p {root}) or fix the setting (unset, the data root is {default})"
    )
