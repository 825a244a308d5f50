"""SIGTERM and SIGINT stop a run where it can resume, save a checkpoint there, and exit 143 / 130.

A signal during training is noted, not obeyed at once: the run stops at the end of the current batch (or of the
epoch, when that batch ends it), saves the whole state (weights, optimiser, RNG, the epoch's seed and position,
and the epoch's running metrics), and raises :class:`Interrupted`. Resumed, the run replays the rest of that
epoch with the same batches and random numbers, so its predictions are those of an uninterrupted run (on one
device; a DDP run resumes from the same point, with the rest of its epoch reshuffled). Outside training (data
setup, testing) there is nothing newer than the last checkpoint to save: the signal interrupts at once. A second
signal always does. After a signal, a process starts no new run: the runs of a multirun that had not started
are reported as not run (``lbam.sweep``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torchmetrics

from lbam.checkpoint import save_atomically
from lbam.module import rng_state, set_rng_state

log = logging.getLogger("lbam.train")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A run stopped by a signal: not an Exception, so it never becomes a failed row."""

    def __init__(self, signum: int, message: str = "", started: bool = True):
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum, self.started = signum, started

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 143 for SIGTERM, 130 for SIGINT, as a shell reports a process they killed


class _State:
    received: int | None = None  # the first signal while open; no new run starts after it (lbam.train)
    training = False  # a signal then waits for the next point where the run can save
    defer = False  # a parallel multirun's parent: its workers save and stop, it waits for them
    depth = 0
    previous: dict = {}  # noqa: RUF012
    listeners: list = []  # noqa: RUF012 (called with the first signal: lbam.sweep tells its workers)


def received() -> int | None:
    return _State.received


def _handle(signum, frame) -> None:
    first = _State.received is None
    _State.received = _State.received or signum
    name = signal.Signals(signum).name
    for listener in _State.listeners if first else ():
        listener(signum)
    if _State.training and first:
        log.warning("%s: stopping at the end of this batch to save a checkpoint", name)
        return
    if _State.defer and first:
        log.warning("%s: waiting for the runs in progress to save and stop", name)
        return
    raise Interrupted(signum)


def install() -> None:
    """Take over SIGTERM and SIGINT (main thread only). Also called at the start of training: Lightning installs
    its own SIGTERM handler, which would stop a run at points it cannot resume from exactly."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            if signal.getsignal(s) is not _handle:
                _State.previous.setdefault(s, signal.getsignal(s))
                signal.signal(s, _handle)


class Signals:
    """While open (nested: the outermost restores the previous handlers and forgets the signal), SIGTERM and
    SIGINT go to this module. ``defer``: outside training too, the first signal is only noted (a parallel
    multirun's parent); ``listener``: called with it."""

    def __init__(self, defer: bool = False, listener=None):
        self.defer, self.listener = defer, listener

    def __enter__(self) -> Signals:
        if _State.depth == 0:
            install()
            _State.defer = self.defer
        if self.listener is not None:
            _State.listeners.append(self.listener)
        _State.depth += 1
        return self

    def __exit__(self, *exc) -> None:
        _State.depth -= 1
        _State.training = False
        if _State.depth == 0:  # the process may start other runs now (a test, a library user)
            _State.defer, _State.received = False, None
            _State.listeners.clear()
            if threading.current_thread() is threading.main_thread():
                for s, handler in _State.previous.items():
                    signal.signal(s, handler)
            _State.previous.clear()


class StopOnSignal(pl.callbacks.Checkpoint):
    """Stops training at the first batch or epoch end after a signal, having saved ``path`` there. A
    ``Checkpoint`` subclass, so its epoch-end hook runs after the module's (the epoch's history entry is in).

    Its state in the checkpoint is the stopped epoch's: the sampler's seed, the batches done, the running metrics,
    images and seconds; empty at an epoch end. Loaded, it makes the datamodule replay that epoch from there."""

    def __init__(self, path: str | Path, datamodule):
        self.path, self.dm = Path(path), datamodule
        self.done = 0  # batches of this epoch trained (in this process or before the interruption)
        self.started = False  # training got past restoring the checkpoint
        self._restore: dict | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        install()
        _State.training, self.started = True, True
        # Resumed mid-epoch: the loader's new iterator drew a number since the checkpoint restored the RNG.
        if self._restore is not None:
            set_rng_state(self._restore["rng"])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _State.training = False

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        _State.training = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.done = 0  # not called when a run resumes mid-epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._restore is not None:  # the first batch after a mid-epoch resume
            state, self._restore = self._restore, None
            for name, metric in _metrics(pl_module).items():
                for key, value in state["metrics"].get(name, {}).items():
                    setattr(metric, key, value.to(metric.device))
            pl_module._epoch["images"] = state["images"]
            pl_module._epoch["start"] = time.perf_counter() - state["seconds"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.done += 1
        last = self.done >= trainer.num_training_batches or 0 < trainer.max_steps <= trainer.global_step
        if not last and self._decided(trainer):  # the epoch's last batch stops at its end instead
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.done = trainer.num_training_batches  # complete: its state is empty
        if self._decided(trainer):
            self._stop(trainer)

    def _decided(self, trainer: pl.Trainer) -> bool:
        # Every rank stops at the same batch (a save is collective); one device decides alone, without a sync.
        return trainer.strategy.reduce_boolean_decision(_State.received is not None, all=False)

    def _stop(self, trainer: pl.Trainer) -> None:
        save_atomically(trainer, self.path)
        signum = _State.received or signal.SIGTERM
        raise Interrupted(
            signum, f"interrupted by {signal.Signals(signum).name}; checkpoint saved at {self.path}"
        )

    def state_dict(self) -> dict:
        trainer = self.dm.trainer
        sampler = self.dm.train_sampler
        if (
            trainer is None
            or sampler is None
            or self.done >= trainer.num_training_batches
            or trainer.world_size > 1
        ):
            return {}  # an epoch end, or DDP (its wrapper shards and reshuffles: the epoch restarts on resume)
        module = trainer.lightning_module
        metrics = {
            n: {k: v.detach().clone() for k, v in m.metric_state.items()} for n, m in _metrics(module).items()
        }
        return {
            "seed": sampler.seed,
            "done": self.done,
            "metrics": metrics,
            "images": module._epoch["images"],
            "seconds": time.perf_counter() - module._epoch["start"],
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.dm.resume_at = (state["seed"], state["done"])
            self.done, self._restore = state["done"], state


def _metrics(module: pl.LightningModule) -> dict[str, torchmetrics.Metric]:
    return {n: m for n, m in module.named_modules() if isinstance(m, torchmetrics.Metric)}
