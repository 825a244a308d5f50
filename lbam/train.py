"""Train one configuration and write its result row: `python -m lbam.train experiment=embodiment1 attention=lbam`.

Sweeps: `python -m lbam.train -m experiment=embodiment1 attention=none,se,cbam,bam,eca,lbam seed=0,1,2`.
A run whose row exists with status ok is skipped (`force=true` retrains); an interrupted run resumes from
`experiments/<experiment>/<run_name>/checkpoints/last.ckpt`.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lbam.module import LitClassifier, classification_metrics, predict
from lbam.results import device_string, git_commit, read_row, row_path, write_row

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Overrides that change where or how fast a run trains, not what it computes: left out of the run name.
_NOISE_KEYS = {"experiment", "attention", "seed", "force", "paths", "local"}
_NOISE_PREFIXES = ("hydra", "paths.")
_NOISE_DOTTED = {
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_nodes",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.root",
    "dataset.cache_dir",
    "dataset.download",
}
_DEVICE_TRAINERS = {"default", "cpu", "gpu", "ddp"}
_MAX_NAME = 100


class ConfigError(ValueError):
    """An invalid configuration value, caught before any data is loaded or any training starts."""


class DataUnavailableError(RuntimeError):
    """The dataset of a run is missing or cannot be prepared."""


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def relevant_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that define a run beyond its experiment, attention and seed, sorted."""
    kept = []
    for o in overrides:
        key = _override_key(o)
        value = o.split("=", 1)[1] if "=" in o else ""
        if key in _NOISE_KEYS or key in _NOISE_DOTTED or key.startswith(_NOISE_PREFIXES):
            continue
        if key == "trainer" and value in _DEVICE_TRAINERS:
            continue
        kept.append(o)
    return sorted(kept)


def run_name(attention: str, overrides: Sequence[str], seed: int) -> str:
    """Deterministic, filesystem-safe name of a run, e.g. `lbam__kernel_size=3__seed0`.

    Attention kwargs lose their `attention.` prefix for readability; a hash of the overrides is appended when
    they had to be shortened or had characters replaced, so distinct runs keep distinct names.
    """
    raw = "__".join([attention] + [o.removeprefix("attention.") for o in relevant_overrides(overrides)])
    safe = re.sub(r"[^A-Za-z0-9._,=+-]", "_", raw.replace("/", "-"))
    if safe != raw or len(safe) > _MAX_NAME:
        safe = f"{safe[: _MAX_NAME - 10]}__{hashlib.sha1(raw.encode()).hexdigest()[:8]}"
    return f"{safe}__seed{seed}"


def _run_name_resolver(*, _root_: DictConfig) -> str:
    overrides = list(_root_.hydra.overrides.task) if "hydra" in _root_ else []
    return run_name(_root_.attention.name, overrides, _root_.seed)


# Used by hydra.run.dir / hydra.sweep.subdir in configs/train.yaml.
OmegaConf.register_new_resolver("lbam_run_name", _run_name_resolver, replace=True)


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The training config as `python -m lbam.train <overrides>` would see it (without the hydra node)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _attention_kwargs(cfg: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg.attention, resolve=True).items() if k != "name"}


def model_kwargs(cfg: DictConfig, num_classes: int) -> dict:
    kw = {k: v for k, v in OmegaConf.to_container(cfg.backbone, resolve=True).items() if k != "_target_"}
    kw.update(num_classes=num_classes, attention=cfg.attention.name, attention_kwargs=_attention_kwargs(cfg))
    return kw


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError with a clear message for invalid values; cheap (the model is built on `meta`)."""
    from lbam.attention import ATTENTIONS
    from lbam.models import BACKBONES, build_backbone

    if cfg.attention.name not in ATTENTIONS:
        raise ConfigError(f"unknown attention {cfg.attention.name!r}; choose one of {sorted(ATTENTIONS)}")
    if cfg.backbone.name not in BACKBONES:
        raise ConfigError(f"unknown backbone {cfg.backbone.name!r}; choose one of {list(BACKBONES)}")
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {cfg.seed!r}")
    if cfg.profile not in ("quick", "full", "test"):
        raise ConfigError(f"profile must be quick, full or test, got {cfg.profile!r}")
    for key in ("image_size", "batch_size"):
        value = cfg.dataset.get(key)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"dataset.{key} must be a positive integer, got {value!r}")
    if not isinstance(cfg.trainer.max_epochs, int) or cfg.trainer.max_epochs <= 0:
        raise ConfigError(f"trainer.max_epochs must be a positive integer, got {cfg.trainer.max_epochs!r}")
    if cfg.early_stopping_patience is not None and not cfg.dataset.get("val_size"):
        raise ConfigError("early_stopping_patience needs a validation split: set dataset.val_size > 0")
    try:
        with torch.device("meta"):
            build_backbone(**model_kwargs(cfg, num_classes=2))
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(
            f"invalid model configuration: {e} [backbone={cfg.backbone.name}, attention={cfg.attention.name}, "
            f"placement={cfg.backbone.get('placement')}, attention kwargs={_attention_kwargs(cfg)}]"
        ) from e
    try:
        optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
        if cfg.scheduler.get("_target_") is not None:
            instantiate(cfg.scheduler)(optimizer)
    except Exception as e:
        raise ConfigError(f"invalid optimizer/scheduler configuration: {e}") from e


def _task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def _base_row(cfg: DictConfig, name: str, overrides: Sequence[str]) -> dict:
    return {
        "experiment": cfg.experiment_name,
        "run_name": name,
        "dataset": None,
        "synthetic": None,
        "backbone": cfg.backbone.name,
        "attention": cfg.attention.name,
        "attention_kwargs": _attention_kwargs(cfg),
        "placement": cfg.backbone.get("placement"),
        "width_mult": float(cfg.backbone.get("width_mult", 1.0)),
        "image_size": int(cfg.dataset.image_size),
        "seed": int(cfg.seed),
        "profile": cfg.profile,
        "device": None,
        "precision": None,
        "status": "failed",
        "error": None,
        "test_acc": None,
        "test_balanced_acc": None,
        "test_macro_f1": None,
        "per_class_acc": None,
        "confusion_matrix": None,
        "class_names": None,
        "num_classes": None,
        "params": None,
        "attention_params": None,
        "macs": None,
        "flops": None,
        "epochs": 0,
        "train_seconds": None,
        "images_per_second": None,
        "n_train": None,
        "n_test": None,
        "data": None,
        "history": [],
        "checkpoint": None,
        "predictions_file": f"{name}.preds.csv",
        "commit": git_commit(CONFIG_DIR.parent),
        "torch_version": torch.__version__,
        "created_at": None,
        "overrides": list(overrides),
    }


def setup_data(cfg: DictConfig):
    dm = instantiate(cfg.dataset)
    try:
        dm.prepare_data()
        dm.setup("fit")
    except (FileNotFoundError, OSError, RuntimeError) as e:
        raise DataUnavailableError(f"dataset {cfg.dataset._target_.rsplit('.', 1)[-1]}: {e}") from e
    return dm


def train(
    cfg: DictConfig, overrides: Sequence[str] | None = None, callbacks: Sequence[pl.Callback] = ()
) -> dict:
    """Train the configured run (or resume it, or skip it when its row is ok) and return its result row.

    `overrides` name the run (default: the Hydra task overrides). Config errors raise ConfigError and a missing
    dataset raises DataUnavailableError, both before training and without a row; a failure during training
    (e.g. a non-finite loss) writes and returns a row with status "failed".
    """
    overrides = _task_overrides() if overrides is None else list(overrides)
    validate(cfg)
    name = run_name(cfg.attention.name, overrides, cfg.seed)
    results_dir = Path(cfg.paths.results_dir)
    out = row_path(results_dir, cfg.experiment_name, name)
    previous = read_row(out)
    if previous and previous.get("status") == "ok" and not cfg.force:
        log.info(
            "%s/%s already finished (status ok): skipped; force=true retrains", cfg.experiment_name, name
        )
        return previous

    run_dir = Path(cfg.paths.experiments_dir) / cfg.experiment_name / name
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if cfg.force and last.exists():
        shutil.rmtree(ckpt_dir)
    resume = last.exists()

    accelerator = cfg.trainer.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    gpu = accelerator in ("gpu", "cuda")
    precision = cfg.trainer.precision or (
        "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
    )

    pl.seed_everything(cfg.seed, workers=True)
    if not gpu:
        torch.use_deterministic_algorithms(True, warn_only=True)
    dm = setup_data(cfg)

    row = _base_row(cfg, name, overrides)
    row.update(
        dataset=dm.name,
        synthetic=bool(dm.is_synthetic),
        class_names=list(dm.class_names),
        num_classes=int(dm.num_classes),
        device=device_string(accelerator, int(cfg.trainer.devices) * int(cfg.trainer.num_nodes)),
        precision=precision,
        n_train=int(dm.metadata.get("n_train", 0)),
        n_test=int(dm.metadata.get("n_test", 0)),
        # What the data looked like for this run: split sizes per class and the items skipped, with reasons
        # (degenerate BCCD boxes, unreadable pet images). Machine-specific paths stay out of the row.
        data={k: v for k, v in dm.metadata.items() if k not in ("root", "cache", "mean", "std")},
    )
    trainer = None
    try:
        from lbam.complexity import profile_model

        module = LitClassifier(
            model_kwargs=model_kwargs(cfg, dm.num_classes),
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            class_names=list(dm.class_names),
            image_size=int(cfg.dataset.image_size),
            mean=[float(m) for m in dm.mean],
            std=[float(s) for s in dm.std],
            channels_last=gpu,
        )
        size = int(cfg.dataset.image_size)
        # A copy: profiling runs a forward pass, which must not touch the weights or BN statistics we train.
        row.update(profile_model(copy.deepcopy(module.model).float(), input_size=(1, 3, size, size)))

        if (
            not gpu
        ):  # build (first use, ~25 s) or load LBAM/CBAM's C++ pooling kernel outside the timed epochs
            from lbam.attention import _ext

            _ext.cpu_ops()
        trainer = _trainer(cfg, accelerator, precision, run_dir, gpu, callbacks, has_val=_n_val(dm) > 0)
        log.info("%s %s/%s in %s", "resuming" if resume else "training", cfg.experiment_name, name, run_dir)
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)
        wall = time.perf_counter() - t0
        if trainer.global_rank != 0:
            return row
        history, seconds = module.history, module.train_seconds
        if not history and last.exists():  # ddp_spawn trained in child processes: read their last state
            state = torch.load(last, map_location="cpu", weights_only=False)
            history, seconds = state.get("lbam_history", []), state.get("lbam_train_seconds", wall)
        dm.setup("test")
        preds, targets = predict(
            module, dm.test_dataloader(), "cuda" if gpu else "cpu", precision.startswith("bf16")
        )
        ids = list(dm.test_ids)
        if len(ids) != len(preds):
            raise RuntimeError(f"{len(preds)} test predictions but {len(ids)} test ids")
        row.update(classification_metrics(preds, targets, list(dm.class_names)))
        epochs = len(history)
        row.update(
            status="ok",
            epochs=epochs,
            history=history,
            train_seconds=round(seconds, 3),
            images_per_second=round(row["n_train"] * epochs / seconds, 2) if seconds > 0 else None,
            checkpoint=_relative(last, Path(cfg.paths.get("root_dir", "."))) if last.exists() else None,
            n_test=len(ids),
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        write_row(row, list(zip(ids, targets.tolist(), preds.tolist())), results_dir)
        log.info("%s/%s: test balanced accuracy %.4f", cfg.experiment_name, name, row["test_balanced_acc"])
        return row
    except Exception as e:
        if trainer is not None and trainer.global_rank != 0:
            raise
        log.exception("%s/%s failed", cfg.experiment_name, name)
        row.update(
            status="failed",
            error=f"{type(e).__name__}: {e}",
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        write_row(row, None, results_dir)
        return row


def _n_val(dm) -> int:
    return int(dm.metadata.get("n_val", 0))


class LastCheckpoint(pl.callbacks.Checkpoint):
    """Writes `path` at the end of every training epoch, atomically (temp file + rename).

    A `Checkpoint` subclass, so Lightning runs it after the module's `on_train_epoch_end`: the checkpoint holds
    the epoch's history entry. Unlike ModelCheckpoint(save_top_k=0, save_last=True), it saves every epoch.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp)  # collective under DDP; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


def _ranks_launched_outside() -> bool:
    """True when ranks come from SLURM/torchrun or when this is a single command-line run."""
    if any(k in os.environ for k in ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID")):
        return True
    mode = HydraConfig.get().mode if HydraConfig.initialized() else None
    return mode is not None and mode.name == "RUN"


def _trainer(cfg, accelerator, precision, run_dir, gpu, callbacks, has_val: bool) -> pl.Trainer:
    from pytorch_lightning.callbacks import EarlyStopping
    from pytorch_lightning.loggers import CSVLogger

    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.update(accelerator=accelerator, precision=precision)
    if kwargs.get("strategy") == "ddp" and not _ranks_launched_outside():
        # Plain ddp re-executes sys.argv per rank: right for one `python -m lbam.train` run, wrong inside a
        # Hydra sweep or scripts/reproduce.py (each rank would rerun the whole matrix). Spawn ranks instead.
        log.info("trainer.strategy=ddp inside a sweep or a Python caller: using ddp_spawn")
        kwargs["strategy"] = "ddp_spawn"
    if not has_val:  # the data module has no val_dataloader to offer
        kwargs["limit_val_batches"] = 0
    cbs = [LastCheckpoint(run_dir / "checkpoints" / "last.ckpt"), *callbacks]
    if cfg.early_stopping_patience is not None:
        cbs.append(EarlyStopping("val_acc", mode="max", patience=cfg.early_stopping_patience))
    return pl.Trainer(
        **kwargs,
        default_root_dir=run_dir,
        callbacks=cbs,
        logger=CSVLogger(run_dir, name="logs", version=0),
        num_sanity_val_steps=0,
        deterministic=None if gpu else "warn",
        enable_model_summary=False,
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point (`lbam-train`); returns the test balanced accuracy for Hydra sweepers."""
    row = train(cfg)
    if row.get("status") != "ok":
        log.error("run failed: %s", row.get("error"))
        if HydraConfig.get().mode.name == "RUN":
            raise SystemExit(1)
    return row.get("test_balanced_acc")


if __name__ == "__main__":
    main()
