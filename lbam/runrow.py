"""The row of one run: what defines it (its config and data identity), what it measured, and how it is saved so
that no result is ever lost: a failing rerun never replaces an ok row, and a results folder that cannot take the
row (full disk, read-only) leaves it in the run directory, with one line saying where.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from lbam.config import relevant_overrides, to_container
from lbam.paths import PACKAGE_DIR
from lbam.results import (
    Row,
    RowError,
    device_string,
    digest,
    git_commit,
    load_row,
    predictions_path,
    row_path,
    write_row,
)

log = logging.getLogger("lbam.train")
# The trainer keys that change what a run computes (the others say where and how fast it runs).
_TRAINER_KEYS = ("max_epochs", "max_steps", "limit_train_batches", "gradient_clip_val", "precision",
                 "accumulate_grad_batches", "devices", "num_nodes", "sync_batchnorm")  # fmt: skip


def identity_config(cfg: DictConfig, dm) -> dict:
    """The resolved config that defines a run's result: data (its defining arguments), model, optimiser,
    schedule, training budget, seed and the callbacks that steer training (early stopping); not paths, devices'
    names, workers, logging or checkpointing."""
    steering = {k: v for k, v in (to_container(cfg.get("callbacks")) or {}).items() if k != "last_checkpoint"}
    return {
        "seed": int(cfg.seed),
        "dataset": dm.describe(),
        "backbone": {k: v for k, v in to_container(cfg.backbone).items() if k != "_target_"},
        "attention": to_container(cfg.attention),
        "optimizer": to_container(cfg.optimizer),
        "scheduler": to_container(cfg.scheduler),
        "trainer": {k: to_container(cfg.trainer.get(k)) for k in _TRAINER_KEYS if k in cfg.trainer},
        "callbacks": steering,
    }


def base_row(
    cfg: DictConfig, name: str, overrides, dm, module, identity: dict, resumed: bool, jobs: int
) -> Row:
    """The row before training: identity, data, cost and provenance (status failed until it succeeds)."""
    from lbam.complexity import profile_model

    meta = dm.metadata
    size = int(cfg.dataset.image_size)
    cost = profile_model(module.model, input_size=(1, 3, size, size))  # the modules that train, eval mode
    world = cfg.trainer.devices * cfg.trainer.num_nodes  # counts (lbam.config.check)
    return Row(
        experiment=cfg.experiment_name,
        run_name=name,
        profile=cfg.profile,
        seed=int(cfg.seed),
        overrides=relevant_overrides(overrides, cfg.trainer),
        dataset=dm.name,
        synthetic=bool(dm.is_synthetic),
        backbone=cfg.backbone.name,
        attention=cfg.attention.name,
        attention_kwargs={k: v for k, v in to_container(cfg.attention).items() if k != "name"},
        placement=cfg.backbone.placement,
        width_mult=float(cfg.backbone.width_mult),
        image_size=size,
        class_names=list(dm.class_names),
        **{k: v for k, v in cost.items() if k in ("params", "attention_params", "macs", "flops")},
        compiled=bool(cfg.model.compile),
        n_train=int(meta["n_train"]),
        n_val=int(meta.get("n_val", 0)),
        n_test=int(meta["n_test"]),
        data={k: v for k, v in meta.items() if k not in ("root", "cache", "mean", "std", *_OWN_FIELDS)},
        datamodule=dm.describe(),
        analysis=to_container(cfg.get("analysis")) or {},
        predictions_file=f"{name}.preds.csv",
        config=identity["config"],
        config_hash=identity["config_hash"],
        split_hash=identity["split_hash"],
        data_sha256=dm.data_sha256,
        data_verified=dm.data_verified,
        resumed=resumed,
        world_size=world,
        concurrent_jobs=jobs,
        device=device_string(cfg.trainer.accelerator, world),
        precision=str(cfg.trainer.precision),
        commit=git_commit(PACKAGE_DIR),
        torch_version=torch.__version__,
    )


_OWN_FIELDS = ("data_sha256", "data_verified")  # metadata the row holds as fields of its own


def thinned(history: list[dict], keep: int = 50) -> list[dict]:
    """At most ``keep`` evenly spaced epochs, the last one included: a step budget on a 25-crop set runs hundreds
    of one-batch epochs, and the row keeps the curve, not every point."""
    if len(history) <= keep:
        return history
    step = len(history) / keep
    return [history[min(len(history) - 1, round((i + 1) * step) - 1)] for i in range(keep)]


class RowNotSaved(OSError):
    """The finished row could not be written where it belongs; the message says where it is instead."""


def save_row(row: Row, preds, results_dir: Path, run_dir: Path) -> Path:
    """Write ``row`` to the results folder, unless that would lose a result:

    - a failed rerun beside an ok row of the same run leaves the ok row (and its predictions) in place and puts
      the failed row into the run directory (`failed_row.json`);
    - when the results folder cannot be written (full disk, read-only), the row and its predictions go to the
      run directory (else a temp folder) and RowNotSaved says where.
    """
    target = row_path(results_dir, row.experiment, row.run_name)
    if row.status != "ok" and _is_ok_row(target):
        try:
            kept = _write_json(Path(run_dir) / "failed_row.json", row)
        except OSError as e:  # e.g. a full disk: the failure is logged, the ok row is what matters
            log.warning(
                "the rerun failed (%s); the ok row %s is kept; the failed row could not be written to %s (%s)",
                row.error, target, run_dir, e.strerror or e,
            )  # fmt: skip
            return target
        log.warning("the rerun failed; the ok row %s is kept, the failed row is in %s", target, kept)
        return kept
    try:
        return write_row(row, preds, results_dir)
    except OSError as e:
        reason = e.strerror or str(e)
    path = _write_elsewhere(row, preds, Path(run_dir))
    if path is None:
        raise RowNotSaved(f"cannot write the row of {row.experiment}/{row.run_name} anywhere ({reason})")
    raise RowNotSaved(
        f"cannot write the row of {row.experiment}/{row.run_name} to {target.parent} ({reason}); the finished "
        f"result is in {path.parent}: move it there once there is room (or fix the folder's permissions)"
    )


def _write_elsewhere(row: Row, preds, run_dir: Path) -> Path | None:
    """The row written under ``run_dir/unsaved``, else a new temp folder (removed again when that fails too)."""
    try:
        return write_row(row, preds, run_dir / "unsaved")
    except OSError:
        pass
    try:
        folder = Path(tempfile.mkdtemp(prefix="lbam-row-"))
    except OSError:
        return None
    try:
        return write_row(row, preds, folder / "unsaved")
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _is_ok_row(path: Path) -> bool:
    try:
        return path.is_file() and load_row(path).status == "ok"
    except RowError:
        return False


def _write_json(path: Path, row: Row) -> Path:
    from lbam.io import atomic_write

    return atomic_write(path, json.dumps(dataclasses.asdict(row), indent=2) + "\n")


def finished_row(out: Path) -> Row | None:
    """The ok row of a run that finished here, when it and its predictions are intact; None (with one line)
    when the run must run again, e.g. its predictions file was deleted."""
    try:
        row = load_row(out)
        preds = predictions_path(row, out)
        ok = row.status == "ok" and preds.is_file()
        if ok and row.predictions_sha256 is not None:
            ok = hashlib.sha256(preds.read_bytes()).hexdigest() == row.predictions_sha256
    except (RowError, OSError) as e:
        row, ok = None, False
        log.info("%s: %s", out, e)
    if not ok:
        log.warning(
            "%s finished here, but its row or predictions are missing or changed: running it again", out
        )
    return row if ok else None


def identity_of(cfg: DictConfig, dm, name: str) -> dict:
    """What the checkpoint and the row claim to be: the run name, the config (and its hash), the split's hash."""
    config = identity_config(cfg, dm)
    split = digest({"train": dm.train_ids, "val": dm.val_ids, "test": dm.test_ids})
    return {"run_name": name, "config": config, "config_hash": digest(config), "split_hash": split}


def test_predictions(cfg, trainer: pl.Trainer, module, dm, last: Path) -> list[tuple[str, int, int]]:
    """The test predictions, (id, target, pred) in test order, evaluated once on one device (no padded shards)."""
    tester = trainer
    if trainer.world_size > 1 or not module.history:
        # Ranks trained in other processes (ddp_spawn) or beside this one (ddp): the weights are here, the
        # history is in the checkpoint. A fresh one-device trainer, outside any cluster environment, tests.
        from lightning_fabric.plugins.environments import LightningEnvironment

        module.history = module.history or torch.load(last, weights_only=True)["lbam_history"]
        tester = pl.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=1,
            precision=cfg.trainer.precision,
            logger=False,
            enable_progress_bar=False,
            plugins=[LightningEnvironment()],
        )
    tester.test(module, datamodule=dm, verbose=False)
    preds = list(zip(dm.test_ids, *zip(*module.test_predictions)))
    if len(preds) != len(dm.test_ids):
        raise RuntimeError(f"{len(preds)} test predictions for {len(dm.test_ids)} test samples")
    return preds


def mean(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 2) if known else None


def log_hparams(trainer: pl.Trainer, cfg: DictConfig, row) -> None:
    """TensorBoard's HParams view: the run's overrides as hyper-parameters, its final metrics as their values."""
    from pytorch_lightning.loggers import TensorBoardLogger

    params = {"experiment": cfg.experiment_name, "attention": cfg.attention.name, "seed": int(cfg.seed)}
    params |= dict(o.split("=", 1) for o in row.overrides if "=" in o)
    metrics = {f"hparams/{k}": getattr(row, k) for k in ("test_acc", "test_balanced_acc", "test_macro_f1")}
    if row.val_acc is not None:
        metrics["hparams/val_acc"] = row.val_acc
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics)
            logger.finalize("success")
