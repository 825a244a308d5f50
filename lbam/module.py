"""LightningModule of every run: cross-entropy training of `lbam.models.build_backbone(**model_kwargs)`, validation
accuracy, and the test evaluation (confusion matrix → `lbam.metrics`, per-sample predictions kept for the row).

Checkpoints rebuild the network with `build_backbone(**ckpt["hyper_parameters"]["model_kwargs"])` and the
`model.`-prefixed weights of `ckpt["state_dict"]`; compiling (`compile=True`, `nn.Module.compile` in place) keeps
those keys, so checkpoints of compiled runs load into uncompiled models.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lbam.metrics import classification_metrics


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf."""


class LitClassifier(pl.LightningModule):
    """`history` (one dict per finished epoch: loss, accuracy, val accuracy, seconds, images) travels in the
    checkpoint, so a resumed run keeps what it trained before the interruption."""

    def __init__(
        self,
        model_kwargs: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        class_names: list[str] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        from lbam.models import build_backbone

        self.model = build_backbone(**model_kwargs)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        n = model_kwargs["num_classes"]
        self.train_loss = MeanMetric()
        self.train_acc = MulticlassAccuracy(n, average="micro")
        self.val_acc = MulticlassAccuracy(n, average="micro")
        self.test_cm = MulticlassConfusionMatrix(n)
        self.history: list[dict] = []
        self.test_metrics: dict | None = None
        self.test_predictions: list[tuple[int, int]] = []  # (target, pred) in test-loader order
        self._epoch = {"start": 0.0, "images": 0, "val_acc": None}

    def configure_model(self) -> None:
        if self.hparams.compile and getattr(self.model, "_compiled_call_impl", None) is None:
            self.model.compile()  # in place: parameter names (and checkpoint keys) stay as they are

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y)
        # Every rank takes the same decision, or the healthy ranks would wait forever in the next all-reduce.
        if self.trainer.strategy.reduce_boolean_decision(not torch.isfinite(loss).item(), all=False):
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch + 1}, step "
                f"{self.global_step}: the run diverged (lower optimizer.lr, or check the data)"
            )
        self.train_loss.update(loss.detach(), weight=y.numel())
        self.train_acc.update(logits.detach(), y)
        self._epoch["images"] += len(y)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc.update(self(x), y)

    def on_validation_epoch_end(self):
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.log("val_acc", acc)
        if not self.trainer.sanity_checking:
            self._epoch["val_acc"] = float(acc)

    def on_train_epoch_start(self):
        self._epoch = {"start": time.perf_counter(), "images": 0, "val_acc": None}

    def on_train_epoch_end(self):
        # Validation has run by now, and the checkpoint callback saves after this hook: last.ckpt holds this entry.
        entry = {
            "epoch": self.current_epoch + 1,
            "train_loss": float(self.train_loss.compute()),
            "train_acc": float(self.train_acc.compute()),
            "val_acc": self._epoch["val_acc"],
            "seconds": round(time.perf_counter() - self._epoch["start"], 4),
            "images": self._epoch["images"],
        }
        self.train_loss.reset()
        self.train_acc.reset()
        self.history.append(entry)
        self.log_dict({"train_loss": entry["train_loss"], "train_acc": entry["train_acc"]})

    def test_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x).argmax(1)
        self.test_cm.update(pred, y)
        self.test_predictions += zip(y.tolist(), pred.tolist())

    def on_test_epoch_start(self):
        self.test_predictions = []

    def on_test_epoch_end(self):
        names = self.hparams.class_names or [str(i) for i in range(self.test_cm.num_classes)]
        self.test_metrics = classification_metrics(self.test_cm.compute(), list(names))
        self.test_cm.reset()
        self.log_dict({k: v for k, v in self.test_metrics.items() if isinstance(v, float)})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lbam_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("lbam_history", []))

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(self.model.parameters())
        sched = dict(self.hparams.scheduler or {})
        interval = sched.pop("interval", "epoch")  # "step" for step budgets (T_max in optimiser steps)
        if sched.get("_target_") is None:
            return optimizer
        scheduler = instantiate(sched)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def throughput(history: list[dict], compiled: bool) -> tuple[float | None, float | None]:
    """(training images/s, compile seconds). The first epoch holds compilation and warm-up, so images/s counts the
    epochs after it when there are any; compile seconds = the first epoch's time beyond a later epoch's mean."""
    if not history:
        return None, None
    timed = history[1:] or history
    seconds = sum(h["seconds"] for h in timed)
    ips = round(sum(h["images"] for h in timed) / seconds, 2) if seconds > 0 else None
    if not compiled or len(history) < 2:
        return ips, None
    per_image = seconds / max(sum(h["images"] for h in timed), 1)
    first = history[0]
    return ips, round(max(first["seconds"] - per_image * first["images"], 0.0), 3)
