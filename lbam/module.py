"""LightningModule of every run: cross-entropy training of `lbam.models.build_backbone(**model_kwargs)`, validation
accuracy, and the test evaluation (per-sample predictions → `lbam.metrics`).

Checkpoints rebuild the network with `build_backbone(**ckpt["hyper_parameters"]["model_kwargs"])` and the
`model.`-prefixed weights of `ckpt["state_dict"]`; compiling (`compile=True`, `nn.Module.compile` in place) keeps
those keys, so checkpoints of compiled runs load into uncompiled models. A checkpoint also carries the run's
identity (`lbam_identity`: run name, config and split hashes, checked before resuming), its history and the RNG
states, so that a resumed run continues exactly where the interrupted one stopped.

No per-step host synchronisation: metrics accumulate on the device, and a non-finite loss is flagged on the device
and checked every `check_every` steps and at the end of each epoch.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lbam.compile import CompileCounter
from lbam.metrics import classification_metrics, confusion_matrix


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf."""


class LitClassifier(pl.LightningModule):
    """`history` (one dict per finished epoch: loss, accuracy, val accuracy, seconds, images, step) travels in the
    checkpoint, so a resumed run keeps what it trained before the interruption."""

    def __init__(
        self,
        model_kwargs: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        class_names: list[str] | None = None,
        compile: bool = False,
        channels_last: bool = False,
        check_every: int = 50,
        compile_backend: str = "inductor",
        compile_mode: str = "default",
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the runner logs the run's overrides as hparams instead
        from lbam.models import build_backbone

        self.model = build_backbone(**model_kwargs)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        n = model_kwargs["num_classes"]
        # validate_args=False and nan_strategy="disable": their checks read values back to the host every step.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.train_acc = MulticlassAccuracy(n, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(n, average="micro", validate_args=False)
        self.history: list[dict] = []
        self.identity: dict = {}  # set by the runner; saved in and checked against checkpoints
        self.compiler = CompileCounter(compile_backend, compile_mode)
        self.test_metrics: dict | None = None
        self.test_predictions: list[tuple[int, int]] = []  # (target, pred) in test-loader order
        self._epoch = {"start": 0.0, "images": 0, "val_acc": None}
        self._first_step: dict | None = None  # this process's first training step: its seconds and images
        self._bad_step: torch.Tensor | None = None  # first step with a non-finite loss, -1 while none
        self._test: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._test_finite: torch.Tensor | bool = True
        self._eval_batch = 0

    def configure_model(self) -> None:
        if self.hparams.compile and getattr(self.model, "_compiled_call_impl", None) is None:
            # In place: parameter names (and checkpoint keys) stay as they are.
            self.model.compile(backend=self.compiler.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    # --- training ----------------------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y)
        if self._bad_step is None:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss.detach())
        self._bad_step = torch.where(bad & (self._bad_step < 0), self.global_step, self._bad_step)
        if (self.global_step + 1) % self.hparams.check_every == 0:
            self._check_finite()
        # The batch mean once per image: a mean over images, with no host value copied to the device each step
        # (and MeanMetric drops `weight` under nan_strategy="disable").
        self.train_loss.update(loss.detach().expand(len(y)))
        self.train_acc.update(logits.detach(), y)
        self._epoch["images"] += len(y)
        if self.trainer.progress_bar_callback is not None:  # a terminal bar shows the running loss
            self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def _check_finite(self) -> None:
        """One host read every `check_every` steps; every rank takes the same decision, or the healthy ranks
        would wait forever in the next all-reduce."""
        step = int(self._bad_step) if self._bad_step is not None else -1
        if self.trainer.strategy.reduce_boolean_decision(step >= 0, all=False):
            raise NonFiniteLossError(
                f"non-finite training loss at step {step + 1} (epoch {self.current_epoch + 1}): the run diverged "
                "(lower optimizer.lr, or check the data)"
            )

    def on_train_start(self):
        # A run resumed from a checkpoint saved in an epoch-end hook may end that epoch again without starting
        # it (Lightning's restart): its clock then starts here, not at 0 (which read as hours since boot).
        self._epoch = {"start": time.perf_counter(), "images": 0, "val_acc": None}

    def on_train_epoch_start(self):
        self._epoch = {"start": time.perf_counter(), "images": 0, "val_acc": None}

    def on_train_batch_start(self, batch, batch_idx):
        if self._first_step is None:
            self._first_step = {"start": time.perf_counter()}

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # The first step holds the compilation (forward and backward graphs) and the warm-up; the rest of its
        # epoch gives the steady step time, so a one-epoch run also has a compile time (see `throughput`).
        if self._first_step is not None and "seconds" not in self._first_step:
            self._first_step = {
                "seconds": round(time.perf_counter() - self._first_step["start"], 4),
                "images": len(batch[1]) * self.trainer.world_size,  # all ranks, as the epoch counts them
                "epoch": self.current_epoch + 1,
            }

    def on_train_epoch_end(self):
        # Validation has run by now, and the checkpoint callback saves after this hook: last.ckpt holds this entry.
        self._check_finite()
        images = self.trainer.strategy.reduce(
            torch.tensor(float(self._epoch["images"]), device=self.device), reduce_op="sum"
        )
        entry = {
            "epoch": self.current_epoch + 1,
            "step": int(self.global_step),
            "train_loss": float(self.train_loss.compute()),
            "train_acc": float(self.train_acc.compute()),
            "val_acc": self._epoch["val_acc"],
            "seconds": round(time.perf_counter() - self._epoch["start"], 4),
            "images": int(images),  # summed over the ranks: images/s of the whole job
            "compiles": self.compiler.compiles,  # so far; travels in the checkpoint (ddp_spawn ranks too)
            "load": load_average(),  # what else ran meanwhile: speeds beside other work read low
        }
        if self._first_step and self._first_step.get("epoch") == entry["epoch"]:
            entry["first_step_seconds"] = self._first_step["seconds"]  # this rank's
            entry["first_step_images"] = self._first_step["images"]
        self.train_loss.reset()
        self.train_acc.reset()
        self.history.append(entry)
        # torchmetrics' compute() already gathered every rank; sync_dist only averages equal values (and is quiet).
        self.log_dict(
            {"train_loss": entry["train_loss"], "train_acc": entry["train_acc"]},
            prog_bar=True,
            sync_dist=True,
        )
        from lbam.progress import report_epoch

        report_epoch(self.trainer, self.history)

    # --- evaluation: eager, also in a compiled run -------------------------------------------------------------
    # Evaluation is a different graph (eval-mode batch norm, no backward): compiled, it cost every run a second
    # compile (10-35 s on a GPU) to evaluate ~900 images once. `force_eager` runs the same weights uncompiled, so
    # a compiled run compiles its training graph only (the row's `compiles`). A ragged last batch is still padded
    # to the batch size (eval-mode BN: rows are independent), as when evaluation was compiled: the predictions of
    # earlier rows stay reproducible to the bit.

    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        self._eval_batch = max(self._eval_batch, n)
        if n < self._eval_batch:
            x = torch.cat([x, x.new_zeros((self._eval_batch - n, *x.shape[1:]))])
        with torch.compiler.set_stance("force_eager"):
            return self(x)[:n]

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc.update(self._eval_logits(x), y)

    def on_validation_epoch_end(self):
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.log("val_acc", acc, sync_dist=True)
        if not self.trainer.sanity_checking:
            self._epoch["val_acc"] = float(acc)

    def on_test_epoch_start(self):
        self._test = []
        self._test_finite = True

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self._eval_logits(x)
        self._test.append((y, logits.argmax(1)))  # kept on the device until the epoch ends
        # argmax of NaN logits is a class index: a non-finite model would test as a plausible one (issue #31). On
        # the device: no host sync per batch.
        self._test_finite = torch.isfinite(logits).all() & self._test_finite

    def on_test_epoch_end(self):
        targets = (
            torch.cat([t for t, _ in self._test]).cpu() if self._test else torch.zeros(0, dtype=torch.long)
        )
        preds = (
            torch.cat([p for _, p in self._test]).cpu() if self._test else torch.zeros(0, dtype=torch.long)
        )
        self._test = []
        if not bool(self._test_finite):
            raise FloatingPointError(
                "the test logits hold NaN or infinite values: the trained model is not finite"
            )
        self.test_predictions = list(zip(targets.tolist(), preds.tolist()))
        k = self.hparams.model_kwargs["num_classes"]
        names = self.hparams.class_names or [str(i) for i in range(k)]
        self.test_metrics = classification_metrics(confusion_matrix(targets, preds, k), list(names))
        self.log_dict({k: v for k, v in self.test_metrics.items() if isinstance(v, float)})

    # --- checkpoints: history, identity and the RNG states --------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lbam_history"] = list(self.history)
        checkpoint["lbam_identity"] = dict(self.identity)
        checkpoint["lbam_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("lbam_history", []))
        if "lbam_rng" in checkpoint:  # restored last: nothing draws between here and the next epoch's batches
            set_rng_state(checkpoint["lbam_rng"])

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(self.model.parameters())
        sched = dict(self.hparams.scheduler or {})
        interval = sched.pop("interval", "epoch")  # "step" for step budgets (T_max in optimiser steps)
        if sched.get("_target_") is None:
            return optimizer
        scheduler = instantiate(sched)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def load_average() -> float | None:
    """The machine's 1-minute load average (runnable processes, this run's threads included), or None where the
    OS has none (Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, in types a weights-only load accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (the global one that seed_everything seeds)
    state = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def throughput(history: list[dict], compiled: bool) -> tuple[float | None, float | None]:
    """(training images/s, compile seconds). The first epoch holds compilation and warm-up, so images/s counts the
    epochs after it when there are any, else the steps after the first; compile seconds = the first epoch's time
    beyond a later epoch's rate, or in a one-epoch run the first step's time beyond a steady step's."""
    if not history:
        return None, None
    first = history[0]
    steady = history[1:]
    if (
        not steady
        and first.get("first_step_seconds") is not None
        and first["images"] > first["first_step_images"]
    ):
        # One epoch: its first step is timed apart (a resumed run's first entry has none and falls through).
        steady = [
            {
                "seconds": first["seconds"] - first["first_step_seconds"],
                "images": first["images"] - first["first_step_images"],
            }
        ]
        first = {"seconds": first["first_step_seconds"], "images": first["first_step_images"]}
    timed = steady or history
    seconds = sum(h["seconds"] for h in timed)
    images = sum(h["images"] for h in timed)
    ips = round(images / seconds, 2) if seconds > 0 else None
    if not compiled or not steady:
        return ips, None
    per_image = seconds / max(images, 1)
    return ips, round(max(first["seconds"] - per_image * first["images"], 0.0), 3)
