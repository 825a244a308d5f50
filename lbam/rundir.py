"""A run's directory `experiments/<experiment>/<run>/`: one run at a time (lock), its last checkpoint (saved
atomically every epoch, checked before resuming), and the marker that says it finished here.

Skip and resume are about local work: a run counts as finished only when its own directory says so, so rows
committed from another machine never make a fresh clone skip its runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import socket
import time
import uuid
from pathlib import Path

import pytorch_lightning as pl
import torch

from lbam.io import atomic_write

log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another process is running the same run."""


class RunLock:
    """`<run_dir>/.lock` holding `pid host`, created exclusively; a lock whose process is gone (same host) is stale
    and taken over with a warning."""

    def __init__(self, run_dir: Path, name: str, active: bool = True):
        self.path, self.name, self.held, self.active = Path(run_dir) / ".lock", name, False, active

    def __enter__(self) -> RunLock:
        if not self.active:  # a DDP rank started by rank 0's launcher: rank 0 holds the lock
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    raise RunLockedError(self._held_message()) from None
                log.warning("removing the stale lock %s (%s)", self.path, self._owner())
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self.held = True
            return self
        raise RunLockedError(self._held_message())

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _owner(self) -> str:
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def _stale(self) -> bool:
        owner = self._owner().split()
        if len(owner) != 2 or not owner[0].isdigit():
            return True  # unreadable or half-written by a process killed while creating it
        pid, host = int(owner[0]), owner[1]
        if host != socket.gethostname():
            return False  # cannot tell from here; the message says how to clear it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _held_message(self) -> str:
        return (
            f"run {self.name} is already running (process {self._owner() or '?'}; lock {self.path}): wait for it "
            "to finish, or delete the lock file if that process is gone"
        )


def remove_stale_temps(run_dir: Path, row_file: Path) -> None:
    """Temp files of this run left by a process killed between writing and renaming (`.<name>.<random>.tmp`):
    its checkpoint's, and its row's and predictions'. Other runs' temp files beside the row are theirs (they may
    be writing right now, e.g. jobs of one sweep on a cluster), so only this run's own names are matched."""
    stale = [*Path(run_dir, "checkpoints").glob(".*.tmp")]
    stale += Path(row_file).parent.glob(
        f".{Path(row_file).stem}.*.tmp"
    )  # .<run>.json.* and .<run>.preds.csv.*
    for tmp in stale:
        tmp.unlink(missing_ok=True)


def usable_checkpoint(path: Path) -> Path | None:
    """``path`` when it holds a loadable checkpoint; None when absent. An unreadable one (truncated, empty) is
    moved aside to `<name>.corrupt-<UTC time>` with a warning, and the run restarts from scratch."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "state_dict" not in state:
            raise ValueError("no state_dict")
        return path
    except Exception as e:  # any failure to read it means it cannot be resumed from
        aside = path.with_name(f"{path.name}.corrupt-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}")
        os.replace(path, aside)
        log.warning(
            "checkpoint %s is unreadable (%s: %s); moved it to %s and training from scratch",
            path,
            type(e).__name__,
            str(e).splitlines()[0][:120] if str(e) else "",
            aside,
        )
        return None


class LastCheckpoint(pl.callbacks.Checkpoint):
    """Saves `path` at the end of a training epoch and at the end of training, atomically: a temp file unique to
    this writer, then a rename, so a kill mid-save leaves the previous checkpoint intact. A `Checkpoint` subclass,
    so Lightning runs it after the module's `on_train_epoch_end` (the checkpoint holds that epoch's history entry).

    ``min_interval_s`` skips epoch-end saves that come sooner than that after the last one (runs of many tiny
    epochs, e.g. a 25-crop training set); 0 saves every epoch.
    """

    def __init__(self, path: str | Path, min_interval_s: float = 0.0):
        self.path, self.min_interval_s, self._saved_at = Path(path), float(min_interval_s), -math.inf

    def _save(self, trainer: pl.Trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # full state (optimizer too); collective under DDP
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self._saved_at = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if time.monotonic() - self._saved_at >= self.min_interval_s:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.min_interval_s > 0:  # the final state, whatever the interval skipped
            self._save(trainer)


def mark_finished(run_dir: Path, row_file: Path) -> None:
    atomic_write(Path(run_dir) / "finished.json", json.dumps({"row": str(row_file)}) + "\n")


def finished_here(run_dir: Path) -> bool:
    return (Path(run_dir) / "finished.json").is_file()


def clear_finished(run_dir: Path) -> None:
    (Path(run_dir) / "finished.json").unlink(missing_ok=True)
