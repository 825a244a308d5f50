"""Train one configuration and write its result row: `python -m lbam.train experiment=embodiment1 attention=lbam`.

Sweeps: `python -m lbam.train -m experiment=embodiment1 attention=none,se,cbam,bam,eca,lbam seed=0,1,2`.
A run that finished in this checkout (its run directory says so) is skipped (`force=true` retrains); an interrupted
run resumes, exactly, from `experiments/<experiment>/<run>/checkpoints/last.ckpt` when that checkpoint is its own.
Every user error (a bad value, missing or unusable data, a run already in progress) is one line on stderr and a
non-zero exit; `HYDRA_FULL_ERROR=1` or `verbose=true` shows the traceback.
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

from lbam import interrupt
from lbam.checkpoint import Seal, non_finite
from lbam.compile import RecompileWatch, fresh_compile_state
from lbam.config import CONFIG_DIR, ConfigError, build_or_fail, check, resolve_auto, run_name, to_container
from lbam.data import DataError
from lbam.interrupt import Interrupted, StopOnSignal
from lbam.module import LitClassifier, throughput
from lbam.progress import Bar
from lbam.quiet import log_to_stderr, silence_known_noise
from lbam.results import RowError, row_path
from lbam.rundir import (
    RunLock,
    RunLockedError,
    clear_finished,
    finished_here,
    global_rank,
    mark_finished,
    remove_stale_temps,
    set_aside,
    usable_checkpoint,
)
from lbam.runrow import (
    RowNotSaved,
    base_row,
    finished_row,
    identity_of,
    log_hparams,
    mean,
    save_row,
    test_predictions,
    thinned,
)
from lbam.sweep import concurrent_jobs, record, record_failure, signalled, summarize

log = logging.getLogger("lbam.train")  # also when run as __main__: lbam.* loggers print to stderr
USER_ERRORS = (ConfigError, DataError, RunLockedError, RowNotSaved)


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


def _threads(gpu: bool, jobs: int) -> None:
    """Runs sharing the CPU share its cores: one process per job, cores // jobs threads each."""
    if not gpu and jobs > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))


def train(
    cfg: DictConfig, overrides: Sequence[str] | None = None, callbacks: Sequence[pl.Callback] = ()
) -> dict:
    """Train (or resume, or skip) the configured run, test it, write its row and return the row as a dict.

    Config errors raise ConfigError and unusable data DataError, before training and without a row; a failure
    during training (e.g. a non-finite loss) writes and returns a row with status "failed".
    """
    silence_known_noise()
    log_to_stderr()
    overrides = _task_overrides() if overrides is None else list(overrides)
    with (
        interrupt.Signals()
    ):  # SIGTERM / SIGINT: a resumable checkpoint, then exit 143 / 130 (lbam.interrupt)
        if signum := interrupt.received() or signalled():  # after a signal, a sweep starts no new run
            raise Interrupted(signum, "not started: a signal came first", started=False)
        return _train(cfg, overrides, callbacks)


def _train(cfg: DictConfig, overrides: list[str], callbacks: Sequence[pl.Callback]) -> dict:
    check(cfg)
    name = run_name(cfg.attention.name, overrides, cfg.seed, cfg.trainer)
    with open_dict(cfg):
        cfg.run_name = name
    gpu = resolve_auto(cfg)
    jobs = concurrent_jobs()
    _threads(gpu, jobs)
    run_dir = Path(cfg.paths.experiments_dir) / cfg.experiment_name / name
    out = row_path(Path(cfg.paths.results_dir), cfg.experiment_name, name)

    fresh_compile_state()  # each run of a sweep compiles as if it were alone in its process
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_or_fail("dataset", instantiate, cfg.dataset)
    module = build_model(cfg, dm.class_names)
    rank0 = (
        global_rank(cfg.trainer.devices) == 0
    )  # other ranks of a DDP job started outside Python (srun, torchrun)
    try:
        lock = RunLock(run_dir, f"{cfg.experiment_name}/{name}", active=rank0)
        lock.__enter__()
    except OSError as e:
        raise ConfigError(
            f"cannot create the run directory {run_dir} ({e.strerror or e}): point paths.experiments_dir at a "
            "writable folder"
        ) from None
    try:
        return _run(cfg, name, overrides, dm, module, run_dir, out, jobs, callbacks, rank0)
    finally:
        lock.__exit__(None, None, None)


def _run(cfg, name, overrides, dm, module, run_dir, out, jobs, callbacks, rank0: bool) -> dict:
    """The run under its lock. Only rank 0 changes the run directory; every rank reads the same checkpoint."""
    if rank0:
        remove_stale_temps(run_dir, out)
    if finished_here(run_dir) and not cfg.force and (done := finished_row(out)) is not None:
        log.info("%s/%s already finished here: skipped (force=true retrains)", cfg.experiment_name, name)
        return _done(cfg, done.to_dict())
    dm.prepare_data()
    dm.setup("fit")  # data and config are checked before anything of an earlier run is deleted
    identity = identity_of(cfg, dm, name)
    module.identity = {k: identity[k] for k in ("run_name", "config_hash", "split_hash")}
    module.identity["data_sha256"] = dm.data_sha256  # another content is another run's checkpoint
    if rank0:
        clear_finished(run_dir)
        if cfg.force:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = usable_checkpoint(last, module.identity, move_aside=rank0, expected=module.state_dict())
    row = base = base_row(cfg, name, overrides, dm, module, identity, resumed=resume is not None, jobs=jobs)
    extra = [Bar()] if cfg.trainer.enable_progress_bar else []
    stopper = StopOnSignal(last, dm)  # after the configured LastCheckpoint: its epoch-end save comes first
    trainer = instantiate(
        cfg.trainer,
        callbacks=[
            *(instantiate(c) for c in (cfg.get("callbacks") or {}).values()),
            *extra,
            *callbacks,
            Seal(),
            stopper,
        ],
        logger=[instantiate(c) for c in (cfg.get("logger") or {}).values()] or False,
        default_root_dir=run_dir,
    )
    log.info("%s %s/%s in %s", "resuming" if resume else "training", cfg.experiment_name, name, run_dir)
    preds = None
    try:
        with RecompileWatch() as watch:
            trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # Ranks started outside Python (srun, torchrun) leave here; rank 0 tests alone, outside the group.
                torch.distributed.destroy_process_group()
            if not trainer.is_global_zero:
                return {**row.to_dict(), "status": "not rank 0"}  # rank 0 tests and writes the row
            if (
                interrupt.received()
            ):  # after the last batch: the end-of-training checkpoint is the one to resume
                raise Interrupted(
                    interrupt.received(), f"interrupted by a signal; checkpoint saved at {last}"
                )
            if bad := non_finite({"state_dict": module.state_dict()}):
                raise FloatingPointError(
                    f"the trained weights hold NaN or infinite values ({len(bad)} tensor(s), e.g. "
                    f"{bad[0].lstrip('/')}); lower optimizer.lr or check the data"
                )
            preds = test_predictions(cfg, trainer, module, dm, last)
        history = module.history
        ips, compile_s = throughput(history, bool(cfg.model.compile))
        val = [h["val_acc"] for h in history if h["val_acc"] is not None]
        if watch.hit:
            log.warning(
                "%s/%s: torch.compile %s; part of the run ran eagerly",
                cfg.experiment_name,
                name,
                watch.message,
            )
        row = dataclasses.replace(
            row,
            **module.test_metrics,
            status="ok",
            epochs=len(history),
            steps=int(history[-1].get("step", trainer.global_step)) if history else int(trainer.global_step),
            history=thinned(history),
            train_seconds=round(sum(h["seconds"] for h in history), 3),
            images_per_second=ips,
            compile_seconds=compile_s,
            compiles=max([h.get("compiles", 0) for h in history] + [module.compiler.compiles])
            if cfg.model.compile
            else None,
            recompile_limit_hit=watch.hit,
            load_average=mean([h.get("load") for h in history]),
            cpu_count=os.cpu_count(),
            val_acc=val[-1] if val else None,
            checkpoint=str(last.relative_to(cfg.paths.experiments_dir)) if last.exists() else None,
        )
        log_hparams(trainer, cfg, row)
    # A failed run is a row; a kill (a BaseException) leaves the checkpoint to resume from.
    except Exception as e:
        if not trainer.is_global_zero:
            raise
        row.status, row.error, preds = (
            "failed",
            f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}",
            None,
        )
        log.error("%s/%s failed: %s", cfg.experiment_name, name, row.error)
        if _verbose(cfg):
            log.exception("traceback")
        if resume is not None and not stopper.started and last.exists():  # it failed to restore: not again
            set_aside(last, "unrestorable", f"could not be restored ({row.error[:160]})")
    row.created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    try:
        path = save_row(row, preds, Path(cfg.paths.results_dir), run_dir)
    except RowError as e:  # an impossible value in the finished row: the row before training, failed
        log.error("%s/%s: %s", cfg.experiment_name, name, e)
        row = dataclasses.replace(
            base, status="failed", error=f"RowError: {e}"[:300], created_at=row.created_at
        )
        path, preds = save_row(row, None, Path(cfg.paths.results_dir), run_dir), None
    if row.status == "ok":
        mark_finished(run_dir, path)
        log.info(
            "%s/%s: test balanced accuracy %.4f; row %s",
            cfg.experiment_name,
            name,
            row.test_balanced_acc,
            path,
        )
    return _done(cfg, row.to_dict())


def _done(cfg: DictConfig, row: dict) -> dict:
    """Tell the multirun around this run, if any, that it failed (lbam.sweep.FailedRuns lists it at the end)."""
    if row["status"] == "failed":
        record_failure(f"{row['experiment']}/{row['run_name']}", str(row.get("error")))
    return row


def _verbose(cfg: DictConfig | None = None) -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(cfg is not None and cfg.get("verbose"))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One run. In a multirun, a user error or a signal is recorded (lbam.sweep) and the sweep goes on to its
    next run, which a signal keeps from starting: the sweep's end lists them and sets the exit status."""
    multirun = HydraConfig.get().mode.name == "MULTIRUN"
    job = f"{cfg.experiment_name}/{run_name(cfg.attention.name, _task_overrides(), cfg.seed, cfg.trainer)}"
    try:
        row = train(cfg)
    except USER_ERRORS as e:
        if _verbose(cfg):
            raise
        print(f"error: {e}", file=sys.stderr)
        if multirun:
            record_failure(job, str(e))
            return None
        raise SystemExit(2) from None
    except Interrupted as e:
        print(f"{job}: {e}", file=sys.stderr)
        if multirun:
            record("interrupted" if e.started else "not started", job, str(e))
            return None
        raise SystemExit(e.exit_code) from None
    if row["status"] == "failed" and not multirun:
        raise SystemExit(1)
    return row.get("val_acc")


def main() -> None:
    """Console entry point (`lbam-train`). Hydra's own errors (an unknown key, group option or override syntax)
    and unusable output folders become one line first; the job returns the last validation accuracy to Hydra's
    sweepers, or None without a validation split: the test split never steers a sweep. A signal between the runs
    of a multirun ends it with the same report as its end (lbam.sweep)."""
    from lbam.cli import precheck
    from lbam.paths import announce_root

    announce_root("lbam-train")
    precheck(sys.argv[1:])
    try:
        _hydra_main()
    except Interrupted as e:
        code = summarize()  # a multirun's outcomes so far, when a signal came between its runs
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(code or e.exit_code) from None


if __name__ == "__main__":
    main()
