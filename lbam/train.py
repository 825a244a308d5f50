"""Train one configuration and write its result row: `python -m lbam.train experiment=embodiment1 attention=lbam`.

Sweeps: `python -m lbam.train -m experiment=embodiment1 attention=none,se,cbam,bam,eca,lbam seed=0,1,2`.
A run that finished in this checkout (its run directory says so) is skipped (`force=true` retrains); an interrupted
run resumes from `experiments/<experiment>/<run>/checkpoints/last.ckpt`. Every user error (a bad value, missing or
unusable data, a run already in progress) is one line on stderr and a non-zero exit; `HYDRA_FULL_ERROR=1` or
`verbose=true` shows the traceback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from lbam.config import (
    CONFIG_DIR,
    ConfigError,
    build_or_fail,
    check,
    relevant_overrides,
    resolve_auto,
    run_name,
    to_container,
)
from lbam.data import DataError
from lbam.module import LitClassifier, throughput
from lbam.paths import PACKAGE_DIR
from lbam.results import Row, device_string, git_commit, load_row, row_path, write_row
from lbam.rundir import (
    RunLock,
    RunLockedError,
    clear_finished,
    finished_here,
    mark_finished,
    remove_stale_temps,
    usable_checkpoint,
)

log = logging.getLogger(__name__)
USER_ERRORS = (ConfigError, DataError, RunLockedError)


def _task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def build_model(cfg: DictConfig, class_names: list[str]) -> LitClassifier:
    """The LightningModule of ``cfg``: backbone + attention + optimizer config, built once, before any data."""
    backbone = {k: v for k, v in to_container(cfg.backbone).items() if k != "_target_"}
    attention = to_container(cfg.attention)
    model_kwargs = {
        **backbone,
        "num_classes": len(class_names),
        "attention": attention.pop("name"),
        "attention_kwargs": attention,
    }
    module = build_or_fail(
        "model",
        instantiate,
        cfg.model,
        model_kwargs=model_kwargs,
        optimizer=to_container(cfg.optimizer),
        scheduler=to_container(cfg.scheduler),
        class_names=list(class_names),
        _recursive_=False,
        _convert_="all",  # plain dicts in the hyper-parameters: checkpoints load with weights_only=True
    )
    optimizer = build_or_fail("optimizer", instantiate, cfg.optimizer)
    build_or_fail("optimizer", optimizer, module.parameters())  # e.g. a negative lr, before any data
    return module


def train(
    cfg: DictConfig, overrides: Sequence[str] | None = None, callbacks: Sequence[pl.Callback] = ()
) -> dict:
    """Train (or resume, or skip) the configured run, test it, write its row and return the row as a dict.

    Config errors raise ConfigError and unusable data DataError, before training and without a row; a failure
    during training (e.g. a non-finite loss) writes and returns a row with status "failed".
    """
    overrides = _task_overrides() if overrides is None else list(overrides)
    check(cfg)
    name = run_name(cfg.attention.name, overrides, cfg.seed)
    with open_dict(cfg):
        cfg.run_name = name
    resolve_auto(cfg)
    run_dir = Path(cfg.paths.experiments_dir) / cfg.experiment_name / name
    results_dir = Path(cfg.paths.results_dir)
    out = row_path(results_dir, cfg.experiment_name, name)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_or_fail("dataset", instantiate, cfg.dataset)
    module = build_model(cfg, dm.class_names)

    with RunLock(run_dir, f"{cfg.experiment_name}/{name}", active=os.environ.get("LOCAL_RANK", "0") == "0"):
        remove_stale_temps(run_dir, out)
        if finished_here(run_dir) and out.is_file() and not cfg.force:
            log.info("%s/%s already finished here: skipped (force=true retrains)", cfg.experiment_name, name)
            return load_row(out).to_dict()
        clear_finished(run_dir)
        if cfg.force:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        last = run_dir / "checkpoints" / "last.ckpt"
        resume = usable_checkpoint(last)

        dm.prepare_data()
        dm.setup("fit")
        row = _base_row(cfg, name, overrides, dm, module)
        trainer = instantiate(
            cfg.trainer,
            callbacks=[*(instantiate(c) for c in (cfg.get("callbacks") or {}).values()), *callbacks],
            logger=[instantiate(c) for c in (cfg.get("logger") or {}).values()] or False,
            default_root_dir=run_dir,
        )
        log.info("%s %s/%s in %s", "resuming" if resume else "training", cfg.experiment_name, name, run_dir)
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
            if not trainer.is_global_zero:
                return row.to_dict()
            tester = trainer
            if trainer.world_size > 1 or not module.history:
                # Ranks trained in other processes (ddp_spawn): the weights came back, the history is in the
                # checkpoint. The test runs here, on one device, over the whole test set (no padded shards).
                module.history = module.history or torch.load(last, weights_only=True)["lbam_history"]
                tester = pl.Trainer(
                    accelerator=cfg.trainer.accelerator,
                    devices=1,
                    precision=cfg.trainer.precision,
                    logger=False,
                    enable_progress_bar=False,
                )
            tester.test(module, datamodule=dm, verbose=False)
            preds = list(zip(dm.test_ids, *zip(*module.test_predictions)))
            if len(preds) != len(dm.test_ids):
                raise RuntimeError(f"{len(preds)} test predictions for {len(dm.test_ids)} test samples")
            ips, compile_s = throughput(module.history, bool(cfg.model.compile))
            val = [h["val_acc"] for h in module.history if h["val_acc"] is not None]
            row = dataclasses.replace(
                row,
                **module.test_metrics,
                status="ok",
                epochs=len(module.history),
                steps=int(trainer.global_step),
                history=thinned(module.history),
                train_seconds=round(sum(h["seconds"] for h in module.history), 3),
                images_per_second=ips,
                compile_seconds=compile_s,
                val_acc=val[-1] if val else None,
                checkpoint=str(last.relative_to(cfg.paths.experiments_dir)) if last.exists() else None,
            )
        # A failed run is a row; a kill (a BaseException) leaves the checkpoint to resume from.
        except Exception as e:
            if not trainer.is_global_zero:
                raise
            row.status, row.error, preds = "failed", f"{type(e).__name__}: {str(e).splitlines()[0]}", None
            log.error("%s/%s failed: %s", cfg.experiment_name, name, row.error)
            if _verbose(cfg):
                log.exception("traceback")
        row.created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        path = write_row(row, preds, results_dir)
        if row.status == "ok":
            mark_finished(run_dir, path)
            log.info("%s/%s: test balanced accuracy %.4f", cfg.experiment_name, name, row.test_balanced_acc)
        return row.to_dict()


def thinned(history: list[dict], keep: int = 50) -> list[dict]:
    """At most ``keep`` evenly spaced epochs, the last one included: a step budget on a 25-crop set runs hundreds
    of one-batch epochs, and the row keeps the curve, not every point."""
    if len(history) <= keep:
        return history
    step = len(history) / keep
    return [history[min(len(history) - 1, round((i + 1) * step) - 1)] for i in range(keep)]


def _base_row(cfg, name: str, overrides: Sequence[str], dm, module: LitClassifier) -> Row:
    from lbam.complexity import profile_model

    meta = dm.metadata
    size = int(cfg.dataset.image_size)
    cost = profile_model(module.model, input_size=(1, 3, size, size))  # the modules that train, eval mode
    return Row(
        experiment=cfg.experiment_name,
        run_name=name,
        profile=cfg.profile,
        seed=int(cfg.seed),
        overrides=relevant_overrides(overrides),
        dataset=dm.name,
        synthetic=bool(dm.is_synthetic),
        backbone=cfg.backbone.name,
        attention=cfg.attention.name,
        attention_kwargs={k: v for k, v in to_container(cfg.attention).items() if k != "name"},
        placement=cfg.backbone.placement,
        width_mult=float(cfg.backbone.width_mult),
        image_size=size,
        class_names=list(dm.class_names),
        **cost,
        compiled=bool(cfg.model.compile),
        n_train=int(meta["n_train"]),
        n_val=int(meta.get("n_val", 0)),
        n_test=int(meta["n_test"]),
        data={k: v for k, v in meta.items() if k not in ("root", "cache", "mean", "std")},
        datamodule=dm.describe(),
        analysis=to_container(cfg.get("analysis")) or {},
        predictions_file=f"{name}.preds.csv",
        device=device_string(cfg.trainer.accelerator, int(cfg.trainer.devices) * int(cfg.trainer.num_nodes)),
        precision=str(cfg.trainer.precision),
        commit=git_commit(PACKAGE_DIR),
        torch_version=torch.__version__,
    )


def _verbose(cfg: DictConfig | None = None) -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(cfg is not None and cfg.get("verbose"))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point (`lbam-train`). Returns the last validation accuracy to Hydra's sweepers, or None
    without a validation split: the test split never steers a sweep."""
    try:
        row = train(cfg)
    except USER_ERRORS as e:
        if _verbose(cfg):
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if row["status"] != "ok" and HydraConfig.get().mode.name == "RUN":
        raise SystemExit(1)
    return row.get("val_acc")


if __name__ == "__main__":
    main()
