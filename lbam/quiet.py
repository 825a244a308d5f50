"""Known third-party noise, silenced where it comes from, one entry each with its reason; other warnings still show.

Every run used to repeat: Lightning's litlogger/litmodels tips and "GPU available / TPU available" (info lines of
Lightning's rank-zero channel), a LeafSpec deprecation inside Lightning's own pytree helper, "no val_dataloader"
(the module defines a validation step that runs only with a validation split), and "fewer batches than the logging
interval" (a 25-crop set has one batch per epoch; the runner logs per epoch anyway); and "resuming from a checkpoint
that ended before the epoch ended" (a signal's checkpoint: lbam.interrupt replays the rest of the epoch exactly).
"""

from __future__ import annotations

import logging
import sys
import warnings

# Lightning's informational channel (tips, device summary, "`Trainer.fit` stopped"): its warnings still show.
_INFO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero")
_MESSAGES = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\.utilities\._pytree"),
    (r"You defined a `validation_step` but have no `val_dataloader`", r"pytorch_lightning\..*"),
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        r"pytorch_lightning\..*",
    ),
    # A run stopped mid-epoch by a signal replays the rest of that epoch itself (lbam.interrupt).
    (r"You're resuming from a checkpoint that ended before the epoch ended", r"pytorch_lightning\..*"),
)


class _Format(logging.Formatter):
    """Plain lines; warnings and errors say so ("warning: …", "error: …")."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def silence_known_noise() -> None:
    for name in _INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message, module in _MESSAGES:
        warnings.filterwarnings("ignore", message=message, module=module)


class NotFrom(logging.Filter):
    """Passes the records of every logger but ``name`` and its children (Hydra's console handler skips lbam's,
    which print through their own handler)."""

    def __init__(self, name: str = ""):
        super().__init__()
        self.prefix = name

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == self.prefix or record.name.startswith(self.prefix + "."))


def log_to_stderr() -> None:
    """The project's loggers (`lbam.*`: progress, summaries, errors) write plain lines to stderr, in a single run
    and in every job of a sweep; stdout stays free for data. They still propagate (to a run's train.log under
    Hydra, to pytest's capture in tests)."""
    logger = logging.getLogger("lbam")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "_lbam", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Format("%(message)s"))
        handler._lbam = True
        logger.addHandler(handler)
