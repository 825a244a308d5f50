"""What a run says while it trains: one line per epoch on stderr (epoch or step of the budget, loss, accuracy,
images/s, ETA) in pipes and sweeps alike, at most one every few seconds when epochs are short (a 25-crop set has
300 one-batch epochs); and, in a terminal, Lightning's bar with the loss and accuracy instead of `v_num`."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

log = logging.getLogger("lbam.progress")
MIN_INTERVAL_S = 5.0  # between two lines of one run, except the first and the last epoch


def _fmt_seconds(s: float) -> str:
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(trainer: pl.Trainer, history: list[dict], elapsed: float) -> tuple[str, bool]:
    """(the line for the last epoch of ``history``, whether it is the run's last epoch)."""
    h = history[-1]
    if trainer.max_steps and trainer.max_steps > 0:
        done, total, what = h.get("step", trainer.global_step), trainer.max_steps, "step"
    else:
        done, total, what = h["epoch"], trainer.max_epochs or h["epoch"], "epoch"
    fraction = min(done / max(total, 1), 1.0)
    ips = h["images"] / h["seconds"] if h["seconds"] > 0 else float("nan")
    eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
    val = f" val_acc {h['val_acc']:.4f}" if h.get("val_acc") is not None else ""
    line = (
        f"{what} {done}/{total}  loss {h['train_loss']:.4f}  acc {h['train_acc']:.4f}{val}  "
        f"{ips:,.0f} img/s  ETA {_fmt_seconds(eta) if eta == eta else '?'}"
    )
    return line, fraction >= 1.0


def report_epoch(trainer: pl.Trainer, history: list[dict]) -> None:
    """Log the progress line of the epoch that just ended (rank 0 only; throttled)."""
    if not trainer.is_global_zero or not history:
        return
    now = time.monotonic()
    state = trainer.__dict__.setdefault(
        "_lbam_progress", {"start": now - history[-1]["seconds"], "last": None}
    )
    line, last = progress_line(trainer, history, now - state["start"])
    if state["last"] is None or last or now - state["last"] >= MIN_INTERVAL_S:
        log.info(line)
        state["last"] = now


class Bar(TQDMProgressBar):
    """Lightning's terminal bar, without the logger's version number (`v_num`) that says nothing to a user."""

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
