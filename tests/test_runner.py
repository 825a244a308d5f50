"""What the runner promises beyond training: a run is what its row says (identity, exact resume, compile counts),
no result is lost, every user error is one line, and a run says what it does (progress, summary, TensorBoard)."""

import json
import os
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
import torch

from lbam.config import run_name
from lbam.results import digest, load_row
from lbam.rundir import LOCK_TTL_S, LastCheckpoint, RunLock, RunLockedError, global_rank
from tests.test_train import ROOT, InjectNaN, Interrupt, InterruptAtEpoch, row_file, run, run_dir, tiny

pytestmark = pytest.mark.slow


def _resumable(tmp_path, data_cache, *extra):
    return tiny(
        tmp_path, data_cache, *extra, "trainer.max_epochs=3", "callbacks.last_checkpoint.min_interval_s=0"
    )


def test_a_killed_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, data_cache):
    whole = run(_resumable(tmp_path / "a", data_cache, "attention=lbam"))
    overrides = _resumable(tmp_path / "b", data_cache, "attention=lbam")
    with pytest.raises(Interrupt):
        run(overrides, callbacks=[InterruptAtEpoch(2)])
    resumed = run(overrides)
    assert resumed["resumed"] is True and whole["resumed"] is False
    for key in ("test_acc", "test_balanced_acc", "confusion_matrix", "steps", "epochs"):
        assert resumed[key] == whole[key], key
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in whole["history"]]
    # Timings are this machine's, not bits, but an epoch's seconds must be its own (not time since boot).
    assert all(0 < h["seconds"] < 600 for h in resumed["history"]), [h["seconds"] for h in resumed["history"]]
    assert 0 < resumed["train_seconds"] < 600
    assert (
        row_file(tmp_path / "a", whole).with_suffix(".preds.csv").read_bytes()
        == row_file(tmp_path / "b", resumed).with_suffix(".preds.csv").read_bytes()
    )
    assert resumed["config_hash"] == whole["config_hash"] == digest(whole["config"])


def test_a_foreign_checkpoint_is_moved_aside_and_the_run_retrains(tmp_path, data_cache, caplog):
    other = _resumable(tmp_path, data_cache, "attention=lbam", "seed=1")
    with pytest.raises(Interrupt):
        run(other, callbacks=[InterruptAtEpoch(1)])
    mine = _resumable(tmp_path, data_cache, "attention=lbam", "seed=0")
    (theirs,) = (tmp_path / "experiments").rglob("*seed1/checkpoints/last.ckpt")
    target = tmp_path / "experiments" / "embodiment1_quick" / run_name("lbam", mine, 0)
    (target / "checkpoints").mkdir(parents=True)
    (target / "checkpoints" / "last.ckpt").write_bytes(theirs.read_bytes())  # e.g. copied by hand
    row = run(mine)
    assert row["status"] == "ok" and row["resumed"] is False and row["epochs"] == 3
    (aside,) = (target / "checkpoints").glob("last.ckpt.foreign-*")
    assert torch.load(aside, weights_only=True)["lbam_identity"]["run_name"].endswith("seed1")
    assert any("belongs to another run" in r.getMessage() for r in caplog.records)


def test_a_failing_rerun_leaves_the_ok_row_intact(tmp_path, data_cache):
    overrides = tiny(tmp_path, data_cache, "attention=se")
    ok = run(overrides)
    path = row_file(tmp_path, ok)
    before = (path.read_bytes(), path.with_suffix(".preds.csv").read_bytes())
    failed = run([*overrides, "force=true"], callbacks=[InjectNaN()])
    assert failed["status"] == "failed"
    assert (path.read_bytes(), path.with_suffix(".preds.csv").read_bytes()) == before
    kept = json.loads((run_dir(tmp_path, ok) / "failed_row.json").read_text())
    assert kept["status"] == "failed" and "non-finite" in kept["error"]


def test_a_results_folder_that_cannot_take_the_row_keeps_it_in_the_run_directory(
    tmp_path, data_cache, monkeypatch
):
    import lbam.runrow
    from lbam.runrow import RowNotSaved

    real = lbam.runrow.write_row

    def full_disk(row, preds, results_dir):
        if str(results_dir).startswith(str(tmp_path / "results")):
            raise OSError(28, "No space left on device")
        return real(row, preds, results_dir)

    monkeypatch.setattr(lbam.runrow, "write_row", full_disk)
    overrides = tiny(tmp_path, data_cache, "attention=eca")
    with pytest.raises(RowNotSaved, match=r"No space left on device.*the finished result is in") as err:
        run(overrides)
    assert "\n" not in str(err.value)
    (kept,) = (tmp_path / "experiments").rglob("unsaved/runs/*/*.json")
    assert load_row(kept).status == "ok" and kept.with_suffix(".preds.csv").is_file()


def test_force_checks_the_data_before_deleting_anything(tmp_path, data_cache, monkeypatch):
    from lbam.data import DataError, SyntheticBCCDDataModule

    overrides = tiny(tmp_path, data_cache, "attention=none")
    ok = run(overrides)
    ckpt = tmp_path / "experiments" / ok["checkpoint"]

    def gone(self, stage=None):
        raise DataError("synthetic_bccd: the data is gone")

    monkeypatch.setattr(SyntheticBCCDDataModule, "setup", gone)
    with pytest.raises(DataError):
        run([*overrides, "force=true"])
    assert ckpt.is_file() and (run_dir(tmp_path, ok) / "finished.json").is_file()


def test_a_lock_from_another_host_is_taken_over_only_when_its_heartbeat_stopped(tmp_path, caplog):
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "job": None, "restart": 0}) + "\n")
    with pytest.raises(RunLockedError, match="process 1 on elsewhere"):
        RunLock(tmp_path, "exp/run").__enter__()
    old = time.time() - LOCK_TTL_S - 60
    os.utime(lock, (old, old))
    with RunLock(tmp_path, "exp/run") as held:
        assert held.held and json.loads(lock.read_text())["host"] != "elsewhere"
    assert not lock.exists() and any("no heartbeat from elsewhere" in r.getMessage() for r in caplog.records)


_RANK_KEYS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "JSM_NAMESPACE_RANK", "SLURM_PROCID", "SLURM_NTASKS",
              "SLURM_JOB_NAME")  # fmt: skip


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),
        ({"RANK": "3", "LOCAL_RANK": "1"}, 3),  # torchrun
        ({"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "2"}, 2),  # srun starts every rank
        # An interactive SLURM shell: Lightning's launcher starts rank 1, which inherits the shell's SLURM_PROCID=0
        # (it once took itself for rank 0 and met the lock as "already running").
        ({"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "interactive", "SLURM_PROCID": "0", "LOCAL_RANK": "1"}, 1),
        (
            {
                "SLURM_NTASKS": "1",
                "SLURM_JOB_NAME": "bash",
                "SLURM_PROCID": "0",
                "NODE_RANK": "1",
                "LOCAL_RANK": "1",
            },
            3,
        ),
    ],
)
def test_global_rank_follows_the_launcher_as_lightning_detects_it(monkeypatch, env, rank):
    for key in _RANK_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert global_rank(devices_per_node=2) == rank


class _Strategy:
    def __init__(self, rank0_says: bool | None):
        self.rank0_says = rank0_says

    def broadcast(self, obj, src=0):
        return obj if self.rank0_says is None else self.rank0_says


class _Trainer:
    """What LastCheckpoint uses of a Trainer: a collective save, the step, rank 0 and the strategy's broadcast."""

    def __init__(self, rank0_says: bool | None = None):
        self.strategy, self.global_step, self.is_global_zero, self.saves = _Strategy(rank0_says), 0, True, []

    def save_checkpoint(self, path, weights_only=False):
        path.write_text(str(self.global_step))
        self.saves.append(self.global_step)


def test_the_first_save_is_one_interval_after_the_start_then_at_most_one_per_interval(tmp_path, monkeypatch):
    """Not after epoch 1 (the clock once started at -inf: a 1 GB VGG16-BN save in every run of a few minutes)."""
    import lbam.rundir

    clock = [1000.0]
    monkeypatch.setattr(lbam.rundir.time, "monotonic", lambda: clock[0])
    ckpt, trainer = LastCheckpoint(tmp_path / "last.ckpt", min_interval_s=600), _Trainer()
    ckpt.on_train_start(trainer, None)
    for step, now in ((1, 1010.0), (2, 1599.0), (3, 1601.0), (4, 2000.0), (5, 2202.0)):
        clock[0], trainer.global_step = now, step
        ckpt.on_train_epoch_end(trainer, None)
    assert trainer.saves == [3, 5]  # 601 s after the start, then 601 s after that save
    ckpt.on_train_end(trainer, None)  # the last epoch just saved this step: no second save
    assert trainer.saves == [3, 5] and (tmp_path / "last.ckpt").read_text() == "5"
    short = LastCheckpoint(tmp_path / "short.ckpt", min_interval_s=600)
    trainer = _Trainer()
    short.on_train_start(trainer, None)
    for step in (1, 2):  # a run shorter than the interval: one save, at its end
        trainer.global_step = step
        short.on_train_epoch_end(trainer, None)
    short.on_train_end(trainer, None)
    assert trainer.saves == [2]
    every = LastCheckpoint(tmp_path / "every.ckpt", min_interval_s=0)
    trainer = _Trainer()
    every.on_train_start(trainer, None)
    for step in (1, 2):
        trainer.global_step = step
        every.on_train_epoch_end(trainer, None)
    every.on_train_end(trainer, None)
    assert trainer.saves == [1, 2] and not list(tmp_path.glob(".*.tmp"))


def test_rank_zeros_clock_decides_the_save_for_every_rank(tmp_path):
    """Under DDP the save is collective: a rank whose own clock disagreed with rank 0's would hang in it."""
    ckpt = LastCheckpoint(tmp_path / "last.ckpt", min_interval_s=0)  # this rank's clock says: save
    trainer = _Trainer(rank0_says=False)
    ckpt.on_train_epoch_end(trainer, None)
    assert trainer.saves == []
    ckpt = LastCheckpoint(tmp_path / "last.ckpt", min_interval_s=600)
    ckpt._saved_at = time.monotonic()  # this rank's clock says: too soon
    trainer = _Trainer(rank0_says=True)
    ckpt.on_train_epoch_end(trainer, None)
    assert trainer.saves == [0]


def test_a_requeued_slurm_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "node7", "job": "42", "restart": 0}))
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with RunLock(tmp_path, "exp/run") as held:
        assert held.held
    monkeypatch.setenv("SLURM_JOB_ID", "43")  # another job: the lock is not its own
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "node7", "job": "42", "restart": 0}))
    with pytest.raises(RunLockedError):
        RunLock(tmp_path, "exp/run").__enter__()


def _cli(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "lbam.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trainer.max_epoch=3"], "unknown config key 'trainer.max_epoch'; did you mean trainer.max_epochs?"),
        (["attention=lbm"], "attention=lbm is not an option of attention (one of: bam, cbam, eca, lbam"),
        (["-m", "attention=lbam,sse"], "attention=sse is not an option of attention"),
        (["trainer.max_epochs=["], "cannot parse the command line's overrides"),
        (["experimen=embodiment1"], "did you mean experiment?"),
        # Issue #31: the valid attention=lbam was blamed for attention=foo.
        (["attention=lbam", "attention=foo"], "attention=foo is not an option of attention (one of: bam,"),
    ],
)
def test_hydra_composition_errors_are_one_line(tmp_path, args, message):
    proc = _cli(*args, f"paths.experiments_dir={tmp_path}", timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {proc.stderr.strip()[7:]}"]
    assert message in proc.stderr and "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_a_piped_run_says_what_it_does_and_nothing_else(tmp_path, data_cache):
    proc = _cli(*tiny(tmp_path, data_cache, "attention=none", "trainer.max_epochs=2"), "logger=tensorboard")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert any(line.startswith("epoch 1/2  loss ") and "img/s  ETA" in line for line in lines)
    assert any(line.startswith("epoch 2/2  loss ") for line in lines)
    (row,) = (tmp_path / "results" / "runs" / "embodiment1_quick").glob("*.json")
    assert lines[-1].endswith(f"row {row}") and "test balanced accuracy" in lines[-1]
    for noise in (
        "litlogger",
        "LeafSpec",
        "GPU available",
        "val_dataloader",
        "v_num",
        "Traceback",
    ):
        assert noise not in proc.stderr + proc.stdout, noise
    # TensorBoard's HParams view: the run's overrides and its final metrics, read back from the event file.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    (folder,) = {p.parent for p in (tmp_path / "experiments").rglob("tensorboard/**/events.out.tfevents.*")}
    acc = EventAccumulator(str(folder))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {k: v.string_value or v.number_value for k, v in start.session_start_info.hparams.items()}
    assert hparams["attention"] == "none" and hparams["dataset.image_size"] == "32"
    scalars = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag.startswith("hparams/")}
    assert scalars["hparams/test_balanced_acc"] == pytest.approx(load_row(row).test_balanced_acc)


def test_a_sweep_with_a_failed_run_exits_non_zero_and_lists_it(tmp_path, data_cache):
    proc = _cli("-m", *tiny(tmp_path, data_cache, "attention=none", "optimizer.lr=0.001,1e12"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: 1 run(s) of the sweep failed:" in proc.stderr and "non-finite training loss" in proc.stderr
    statuses = sorted(load_row(p).status for p in (tmp_path / "results" / "runs").rglob("*.json"))
    assert statuses == ["failed", "ok"]  # the other run of the sweep still ran


def test_a_compiled_sweep_in_one_process_compiles_every_run(tmp_path, data_cache):
    # Graphs, guards and the recompile limit are dynamo's, whatever the backend: aot_eager keeps them and skips
    # inductor's C++ code generation (minutes per run on 2 cold cores). Inductor runs end to end in the test
    # below; results/bench/compiled_sweep.md is this sweep with inductor. All six attentions: without the per-run
    # reset the sweep meets dynamo's recompile limit at the fifth (three attentions never would).
    overrides = tiny(
        tmp_path,
        data_cache,
        "attention=none,se,cbam,bam,eca,lbam",
        "model.compile=true",
        "model.compile_backend=aot_eager",
    )
    proc = _cli("-m", *overrides, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [load_row(p) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    assert sorted(r.attention for r in rows) == ["bam", "cbam", "eca", "lbam", "none", "se"]
    # One graph a run, training's: evaluation runs the same weights eagerly (a second compile cost every GPU run
    # 10-35 s to evaluate ~900 images once).
    assert all(r.compiled and r.compiles == 1 and not r.recompile_limit_hit for r in rows), [
        (r.attention, r.compiles, r.recompile_limit_hit) for r in rows
    ]
    # One-epoch runs: the compile time comes from the first step (it compiles forward and backward).
    assert all(r.epochs == 1 and r.compile_seconds and r.compile_seconds > 0 for r in rows), [
        (r.attention, r.epochs, r.compile_seconds) for r in rows
    ]
    assert "recompile_limit" not in proc.stderr and "cache_size_limit" not in proc.stderr


def test_an_inductor_compiled_run_compiles_its_training_graph_only(tmp_path, data_cache):
    """The runner's compile path with inductor itself (the sweep above uses aot_eager): evaluation runs the same
    weights eagerly, so the row counts one graph (two before: 15-20 s more for a tiny run on this CPU)."""
    row = run(tiny(tmp_path, data_cache, "attention=none", "model.compile=true"))
    assert row["status"] == "ok" and row["compiled"] is True
    assert row["compiles"] == 1 and not row["recompile_limit_hit"] and row["compile_seconds"] > 0


class CheckpointSeen(pl.Callback):
    """Whether last.ckpt exists at each epoch end (Lightning runs checkpoint callbacks after this one: the file
    seen at epoch k is what epochs 1..k-1 saved)."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(self.path.exists())


def test_a_run_shorter_than_the_checkpoint_interval_saves_once_at_its_end(tmp_path, data_cache):
    overrides = tiny(tmp_path, data_cache, "attention=none", "trainer.max_epochs=3")  # the default 600 s
    name = run_name("none", overrides, 0)
    spy = CheckpointSeen(tmp_path / "experiments" / "embodiment1_quick" / name / "checkpoints" / "last.ckpt")
    row = run(overrides, callbacks=[spy])
    assert row["status"] == "ok" and row["epochs"] == 3
    assert spy.seen == [False, False, False] and spy.path.is_file()  # before: saved after epoch 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_under_simulated_srun_writes_one_row_with_the_whole_job(tmp_path, data_cache):
    """Two CPU processes started as `srun --ntasks-per-node=2` would: SLURM's variables, no launcher of ours."""
    overrides = [o for o in tiny(tmp_path, data_cache, "attention=none") if o != "trainer=cpu"]
    overrides += ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    port = str(_free_port())
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
             "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "lbam-test", "SLURM_NODELIST": "localhost",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lbam.train", *overrides],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    (path,) = (tmp_path / "results" / "runs" / "embodiment1_quick").glob("*.json")
    row = load_row(path)
    assert row.status == "ok" and row.world_size == 2 and "trainer.devices=2" in row.overrides
    assert row.steps == row.history[-1]["step"] >= 1  # optimiser steps, counted by rank 0 (not 0 as before)
    assert row.history[-1]["images"] > row.steps * 64  # more than one rank can see at batch 64: summed
    assert "x2" in row.device
    assert "already running" not in outs[1][1]  # rank 1 takes no lock


def test_a_run_killed_from_outside_resumes_with_its_own_clock(tmp_path, data_cache):
    """kill -9 from outside while one-batch epochs run (the curve's 25-crop runs), with a 1 s checkpoint interval:
    killed just after its first save, a second into training. The resumed run matches an uninterrupted one, and its
    seconds are its own (a restarted epoch end once read as hours since boot)."""
    extra = ("attention=none", "dataset.train_subset=12", "trainer.max_epochs=100000", "trainer.max_steps=600",
             "trainer.limit_train_batches=1.0", "callbacks.last_checkpoint.min_interval_s=1")  # fmt: skip
    args = tiny(tmp_path / "k", data_cache, *extra)
    proc = subprocess.Popen([sys.executable, "-m", "lbam.train", *args], cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while (
        not list((tmp_path / "k").rglob("last.ckpt")) and time.monotonic() < deadline and proc.poll() is None
    ):
        time.sleep(0.05)
    time.sleep(0.2)  # into the later epochs, past the first save (600 steps: seconds left on a quiet machine)
    proc.kill()
    proc.wait()
    resumed = _cli(*args)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr[-2000:]
    (path,) = (tmp_path / "k" / "results" / "runs").rglob("*.json")
    row = load_row(path)
    assert row.resumed and 0 < row.train_seconds < 600 and row.images_per_second > 1, row.train_seconds
    whole = _cli(*tiny(tmp_path / "w", data_cache, *extra))
    assert whole.returncode == 0, whole.stderr[-2000:]
    (other,) = (tmp_path / "w" / "results" / "runs").rglob("*.json")
    assert load_row(other).predictions_sha256 == row.predictions_sha256
