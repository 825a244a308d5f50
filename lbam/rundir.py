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
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from lbam.checkpoint import problem, save_atomically
from lbam.io import atomic_write

log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another process is running the same run."""


LOCK_TTL_S = 15 * 60  # a lock whose heartbeat is older than this is stale, from any host
HEARTBEAT_S = 60.0


def global_rank(devices_per_node: int = 1) -> int:
    """This process's global rank as the launcher set it: RANK (torchrun), SLURM_PROCID when Lightning's
    SLURMEnvironment detects an srun launch, or Lightning's own `ddp` launcher's NODE_RANK x devices + LOCAL_RANK;
    0 for a plain process. In an interactive SLURM shell (job name bash/interactive) Lightning starts the ranks
    itself and each inherits the shell's SLURM_PROCID: there LOCAL_RANK tells them apart, as Lightning decides."""
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    env = os.environ
    slurm = ("SLURM_PROCID",) if SLURMEnvironment.detect() else ()
    keys = ("RANK", *slurm, "JSM_NAMESPACE_RANK")
    for key in keys:
        if env.get(key, "").isdigit():
            return int(env[key])
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")) or 0)
    return node * max(devices_per_node, 1) + int(env.get("LOCAL_RANK", "0") or 0)


def _slurm_job() -> dict:
    return {
        "job": os.environ.get("SLURM_JOB_ID"),
        "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
    }


class RunLock:
    """`<run_dir>/.lock`, created exclusively by global rank 0, holding its pid, host and SLURM job; a heartbeat
    thread touches it every minute. Taken over, with one warning line, when stale: its process is gone (same
    host), its SLURM job was requeued (same job id, a later restart), or its heartbeat is older than 15 min (a
    host that died). Other ranks of a DDP job hold no lock: rank 0 does for them."""

    def __init__(self, run_dir: Path, name: str, active: bool = True):
        self.path, self.name, self.held, self.active = Path(run_dir) / ".lock", name, False, active
        self._stop = threading.Event()

    def __enter__(self) -> RunLock:
        if not self.active:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():  # no run makes one; the stale-lock logic would fail on it with another hint
            raise RunLockedError(
                f"the lock of run {self.name}, {self.path}, is a folder, not a lock file: remove it (rm -r "
                f"{self.path}) unless something of yours uses it"
            )
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                why = self._stale()
                if not why:
                    raise RunLockedError(self._held_message()) from None
                log.warning("taking over the stale lock %s (%s)", self.path, why)
                self.path.unlink(missing_ok=True)
                continue
            owner = {"pid": os.getpid(), "host": socket.gethostname(), **_slurm_job(), "started": time.time()}
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(owner) + "\n")
            self.held = True
            threading.Thread(target=self._beat, name="lbam-lock-heartbeat", daemon=True).start()
            return self
        raise RunLockedError(self._held_message())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def _owner(self) -> dict | None:
        """The lock's content: JSON, or the older `pid host` line; None when unreadable or half-written."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        try:
            owner = json.loads(text)
        except ValueError:
            parts = text.split()
            owner = (
                {"pid": int(parts[0]), "host": parts[1]} if len(parts) == 2 and parts[0].isdigit() else None
            )
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None

    def _stale(self) -> str | None:
        """Why the existing lock is stale, or None when its owner may still be running."""
        owner = self._owner()
        if owner is None:
            return "unreadable, left by a process killed while creating it"
        try:
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return "gone"
        job = _slurm_job()
        if owner.get("job") and owner["job"] == job["job"] and int(owner.get("restart", 0)) < job["restart"]:
            return f"SLURM job {job['job']} was requeued (restart {job['restart']})"
        if owner.get("host") == socket.gethostname():
            try:
                os.kill(owner["pid"], 0)
            except ProcessLookupError:
                return f"process {owner['pid']} on this host is gone"
            except PermissionError:
                return None
            return None
        if age > LOCK_TTL_S:
            return f"no heartbeat from {owner.get('host')} for {age / 60:.0f} min"
        return None

    def _held_message(self) -> str:
        owner = self._owner() or {}
        who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}"
        return (
            f"run {self.name} is already running ({who}; lock {self.path}): wait for it to finish; a lock from "
            f"another host is taken over after {LOCK_TTL_S // 60} min without a heartbeat, or delete it if that "
            "process is gone"
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


def usable_checkpoint(
    path: Path, identity: dict | None = None, move_aside: bool = True, expected: dict | None = None
) -> Path | None:
    """``path`` when it holds a checkpoint this run can resume from; None when absent. One that cannot be read
    (truncated, empty), belongs to another run (its `lbam_identity` differs from ``identity``: another seed,
    config, data split or data), holds other weights than it was saved with (its stored sha256), non-finite
    values, or weights that do not fit ``expected`` (the model's state dict) is moved aside once, with one
    warning line (by rank 0: ``move_aside``), and the run starts afresh (``lbam.checkpoint.problem``)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to read it means it cannot be resumed from
        reason = str(e).splitlines()[0][:120] if str(e) else ""
        found = ("corrupt", f"is unreadable ({type(e).__name__}: {reason})")
    else:
        found = problem(state, identity, expected)
    if found is None:
        return path
    if move_aside:
        set_aside(path, *found)
    return None


def set_aside(path: Path, kind: str, why: str) -> None:
    """Move the checkpoint at ``path`` to ``<name>.<kind>-<UTC time>`` with one warning line saying why: it is
    never tried again, and never deleted (it may be evidence)."""
    aside = path.with_name(f"{path.name}.{kind}-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}")
    os.replace(path, aside)
    log.warning("checkpoint %s %s; moved it to %s and training from scratch", path, why, aside.name)


class LastCheckpoint(pl.callbacks.Checkpoint):
    """Saves `path` at the end of a training epoch and at the end of training, atomically: a temp file unique to
    this writer, then a rename, so a kill mid-save leaves the previous checkpoint intact. A `Checkpoint` subclass,
    so Lightning runs it after the module's `on_train_epoch_end` (the checkpoint holds that epoch's history entry).

    ``min_interval_s`` skips epoch-end saves that come sooner than that after the last one, or after the start
    of training: the first save is one interval in, not after epoch 1 (a 1 GB VGG16-BN checkpoint cost 7 s, in
    each of 21 runs that train for a few minutes; a 25-crop set has 300 one-batch epochs). 0 saves every epoch.
    The end of training always saves.
    """

    def __init__(self, path: str | Path, min_interval_s: float = 0.0):
        self.path, self.min_interval_s, self._saved_at = Path(path), float(min_interval_s), -math.inf
        self._saved_step = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The clock starts with training (a resumed run's too): what is lost to a kill is at most one interval.
        self._saved_at = time.monotonic()

    def _save(self, trainer: pl.Trainer) -> None:
        save_atomically(trainer, self.path)  # full state (optimizer too); collective under DDP
        self._saved_at, self._saved_step = time.monotonic(), trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Rank 0's clock decides for all: the save is collective, and ranks that disagreed would hang in it.
        if trainer.strategy.broadcast(time.monotonic() - self._saved_at >= self.min_interval_s, src=0):
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step:  # the final state, unless the last epoch just saved it
            self._save(trainer)


def mark_finished(run_dir: Path, row_file: Path) -> None:
    atomic_write(Path(run_dir) / "finished.json", json.dumps({"row": str(row_file)}) + "\n")


def finished_here(run_dir: Path) -> bool:
    return (Path(run_dir) / "finished.json").is_file()


def clear_finished(run_dir: Path) -> None:
    (Path(run_dir) / "finished.json").unlink(missing_ok=True)
