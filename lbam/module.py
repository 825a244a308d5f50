"""LightningModule for the classification runs, and the end-of-training test evaluation."""

from __future__ import annotations

import contextlib
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf."""


class LitClassifier(pl.LightningModule):
    """Cross-entropy training of `lbam.models.build_backbone(**model_kwargs)`, held as `self.model`.

    Checkpoints rebuild the network with `build_backbone(**ckpt["hyper_parameters"]["model_kwargs"])` and
    `load_state_dict` of the `model.`-prefixed weights. `history` (one dict per finished epoch) and `train_seconds`
    travel in the checkpoint so that a resumed run keeps what it trained before the interruption.
    """

    def __init__(
        self,
        model_kwargs: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        class_names: list[str] | None = None,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
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
        self.history: list[dict] = []
        self.train_seconds = 0.0  # summed over finished epochs (training + validation), across resumes
        self._epoch_val_acc: float | None = None
        self._epoch_start = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y)
        # Every rank must take the same decision, or the healthy ranks wait forever in the next all-reduce.
        if self.trainer.strategy.reduce_boolean_decision(not torch.isfinite(loss).item(), all=False):
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step "
                f"{self.global_step}: the run diverged (lower optimizer.lr, or check the data)"
            )
        self.train_loss.update(loss.detach(), weight=y.numel())
        self.train_acc.update(logits.detach(), y)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc.update(self(x), y)

    def on_validation_epoch_end(self):
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.log("val_acc", acc, sync_dist=False)  # already synced by the metric
        if not self.trainer.sanity_checking:
            self._epoch_val_acc = float(acc)

    def on_train_epoch_start(self):
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self):
        self.train_seconds += time.perf_counter() - self._epoch_start
        # Runs before the checkpoint callback saves, so last.ckpt includes this epoch's entry.
        entry = {
            "epoch": self.current_epoch + 1,
            "train_loss": float(self.train_loss.compute()),
            "train_acc": float(self.train_acc.compute()),
            "val_acc": self._epoch_val_acc,
        }
        self.train_loss.reset()
        self.train_acc.reset()
        self._epoch_val_acc = None
        self.history.append(entry)
        self.log_dict({"train_loss": entry["train_loss"], "train_acc": entry["train_acc"]})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lbam_history"] = list(self.history)
        checkpoint["lbam_train_seconds"] = self.train_seconds

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("lbam_history", []))
        self.train_seconds = float(checkpoint.get("lbam_train_seconds", 0.0))

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(self.model.parameters())
        sched_cfg = self.hparams.scheduler
        if not sched_cfg or sched_cfg.get("_target_") is None:
            return optimizer
        scheduler = instantiate(sched_cfg)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader, device: torch.device | str = "cpu", bf16: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels over `loader`, in its order, on one device (no sharding, no padding)."""
    model.eval().to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    preds, targets = [], []
    with autocast:
        for x, y in loader:
            preds.append(model(x.to(device)).argmax(1).cpu())
            targets.append(y)
    return torch.cat(preds), torch.cat(targets)


def classification_metrics(preds: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict:
    """Accuracy, balanced accuracy (mean per-class recall), macro-F1, per-class accuracy, confusion matrix.

    Per-class accuracy is null for a class without test samples; the macro averages skip such classes.
    """
    n = len(class_names)
    cm = multiclass_confusion_matrix(preds, targets, n)
    per_class = multiclass_accuracy(preds, targets, n, average=None)
    support = cm.sum(1)
    return {
        "test_acc": float(multiclass_accuracy(preds, targets, n, average="micro")),
        "test_balanced_acc": float(multiclass_accuracy(preds, targets, n, average="macro")),
        "test_macro_f1": float(multiclass_f1_score(preds, targets, n, average="macro")),
        "per_class_acc": {
            c: (float(a) if s > 0 else None) for c, a, s in zip(class_names, per_class, support.tolist())
        },
        "confusion_matrix": cm.tolist(),
    }
