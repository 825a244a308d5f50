"""End-to-end runs of lbam.train on the synthetic twins (and the real BCCD when present), on the CPU: the row,
the predictions, the checkpoint, skip and resume, failures, locks and the command line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lbam.config import compose
from lbam.models import build_backbone
from lbam.results import load_row, read_predictions, row_path
from lbam.rundir import RunLockedError
from lbam.train import train

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so the runner must not turn it into a failed row."""


class InterruptAtEpoch(pl.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise Interrupt


class RecordStart(pl.Callback):
    def __init__(self):
        self.start_epochs = []

    def on_train_start(self, trainer, pl_module):
        self.start_epochs.append(trainer.current_epoch)


class InjectNaN(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def tiny(out: Path, cache: Path, *extra: str, embodiment: int = 1) -> list[str]:
    return [
        f"experiment=embodiment{embodiment}_quick",
        f"dataset={'synthetic_bccd' if embodiment == 1 else 'synthetic_pets'}",
        "profile=test",
        "trainer=cpu",
        "dataset.image_size=32",
        "backbone.width_mult=0.125",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        f"paths.results_dir={out}/results",
        f"paths.experiments_dir={out}/experiments",
        f"paths.cache_dir={cache}",
        *(["dataset.train_size=0.75", "dataset.test_size=null"] if embodiment == 2 else []),
        *extra,
    ]


def run(overrides, callbacks=()):
    return train(compose(overrides), overrides, callbacks=callbacks)


def row_file(out: Path, row: dict) -> Path:
    return row_path(out / "results", row["experiment"], row["run_name"])


def run_dir(out: Path, row: dict) -> Path:
    return out / "experiments" / row["experiment"] / row["run_name"]


@pytest.fixture(scope="module")
def emb1_run(tmp_path_factory, data_cache):
    out = tmp_path_factory.mktemp("emb1")
    return out, run(tiny(out, data_cache, "attention=lbam"))


def check_ok_row(out: Path, row: dict, experiment: str, dataset: str):
    saved = load_row(row_file(out, row))  # the schema's own validation
    assert saved.to_dict() == row and row["status"] == "ok" and row["error"] is None
    assert row["experiment"] == experiment and row["dataset"] == dataset and row["synthetic"] is True
    assert row["profile"] == "test" and row["image_size"] == 32 and row["width_mult"] == 0.125
    cm = row["confusion_matrix"]
    assert (
        len(cm) == len(row["class_names"]) == len(row["per_class_acc"]) and sum(map(sum, cm)) == row["n_test"]
    )
    assert sum(cm[i][i] for i in range(len(cm))) / row["n_test"] == pytest.approx(row["test_acc"])
    assert row["data"]["n_test"] == row["n_test"] and "root" not in row["data"]
    assert row["params"] > row["attention_params"] >= 0 and row["flops"] >= row["macs"] > 0
    assert row["epochs"] == len(row["history"]) >= 1 and row["steps"] >= 1
    assert row["train_seconds"] > 0 and row["images_per_second"] > 0 and row["compiled"] is False
    preds = read_predictions(saved, row_file(out, row))
    assert len(preds) == row["n_test"]
    confusion = [[0] * len(cm) for _ in cm]
    for _, target, pred in preds:
        confusion[target][pred] += 1
    assert confusion == cm  # the predictions file is the test evaluation the metrics came from
    # The checkpoint rebuilds the network from its hyper-parameters with weights_only=True (the report's path).
    ckpt = torch.load(out / "experiments" / row["checkpoint"], weights_only=True)
    model = build_backbone(**ckpt["hyper_parameters"]["model_kwargs"])
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    assert (run_dir(out, row) / "finished.json").is_file() and not (run_dir(out, row) / ".lock").exists()


def test_embodiment1_end_to_end_on_synthetic_bccd(emb1_run):
    out, row = emb1_run
    check_ok_row(out, row, "embodiment1_quick", "synthetic_bccd")
    assert (
        row["attention"] == "lbam"
        and row["backbone"] == "cnn4"
        and row["attention_kwargs"]["branches"] == "both"
    )
    assert row["run_name"].startswith("lbam__") and row["run_name"].endswith("__seed0")
    assert "dataset=synthetic_bccd" in row["overrides"] and not any(
        o.startswith("paths.") for o in row["overrides"]
    )
    assert row["analysis"]["noninferiority_margin"] == 0.01 and row["val_acc"] is None
    # The load beside the run: a sample per epoch end, their mean in the row (speeds under load read low).
    assert row["cpu_count"] == os.cpu_count() and row["load_average"] >= 0
    assert all(h["load"] >= 0 for h in row["history"])
    assert row["datamodule"]["_target_"].endswith("SyntheticBCCDDataModule")
    # The twin was checked against the manifest written with it; its content digest also keys the cache.
    assert (
        row["data_verified"] is True and len(row["data_sha256"]) == 64 and "data_verified" not in row["data"]
    )
    assert "root" not in row["datamodule"] and "cache_dir" not in row["datamodule"]
    logs = list(run_dir(out, row).glob("logs/version_*/metrics.csv"))
    assert len(logs) == 1 and "train_loss" in logs[0].read_text()


def test_embodiment2_end_to_end_on_synthetic_pets(tmp_path, data_cache):
    row = run(tiny(tmp_path, data_cache, "attention=se", embodiment=2))
    check_ok_row(tmp_path, row, "embodiment2_quick", "synthetic_pets")
    assert row["backbone"] == "vgg16" and row["attention"] == "se"
    assert row["data"]["skipped"] >= 1  # the twin's corrupt image, named in the run's metadata


def test_same_seed_twice_gives_identical_metrics_and_predictions(emb1_run, tmp_path, data_cache):
    out, first = emb1_run
    second = run(tiny(tmp_path, data_cache, "attention=lbam"))
    for key in ("test_acc", "test_balanced_acc", "test_macro_f1", "confusion_matrix", "per_class_acc"):
        assert second[key] == first[key], key
    assert [h["train_loss"] for h in second["history"]] == [h["train_loss"] for h in first["history"]]
    assert (
        row_file(tmp_path, second).with_suffix(".preds.csv").read_text()
        == row_file(out, first).with_suffix(".preds.csv").read_text()
    )


def test_validation_split_gives_the_sweep_metric(tmp_path, data_cache):
    row = run(tiny(tmp_path, data_cache, "attention=none", "dataset.val_size=0.2", "trainer.max_epochs=2"))
    assert row["status"] == "ok" and row["n_val"] > 0 and 0 <= row["val_acc"] <= 1
    assert [h["val_acc"] is not None for h in row["history"]] == [True, True]


def test_finished_run_is_skipped_only_when_it_finished_here(tmp_path, data_cache):
    overrides = tiny(tmp_path, data_cache, "attention=eca")
    first = run(overrides)
    recorder = RecordStart()
    assert run(overrides, callbacks=[recorder]) == first and recorder.start_epochs == []  # skipped
    again = run([*overrides, "force=true"], callbacks=[recorder])
    assert recorder.start_epochs == [0] and again["status"] == "ok"
    runs = row_file(tmp_path, first).parent
    assert sorted(p.name for p in runs.iterdir()) == [
        f"{first['run_name']}.json",
        f"{first['run_name']}.preds.csv",
    ]
    # A fresh clone: the row is committed, the run directory is not. The run trains and replaces the row.
    import shutil

    shutil.rmtree(tmp_path / "experiments")
    fresh = run(overrides, callbacks=[recorder])
    assert recorder.start_epochs == [0, 0] and fresh["created_at"] >= again["created_at"]


def test_interrupted_run_resumes_and_keeps_its_earlier_log_lines(tmp_path, data_cache):
    every_epoch = "callbacks.last_checkpoint.min_interval_s=0"  # the default saves 10 min in: none here
    overrides = tiny(tmp_path, data_cache, "attention=cbam", "trainer.max_epochs=2", every_epoch)
    with pytest.raises(Interrupt):
        run(overrides, callbacks=[InterruptAtEpoch(1)])
    assert not (tmp_path / "results").exists()  # an interruption is not a result
    (rd,) = (tmp_path / "experiments" / "embodiment1_quick").iterdir()
    assert not (rd / ".lock").exists()  # released on the way out
    first_epoch = torch.load(rd / "checkpoints" / "last.ckpt", weights_only=True)["lbam_history"]
    assert [h["epoch"] for h in first_epoch] == [1]
    recorder = RecordStart()
    row = run(overrides, callbacks=[recorder])
    assert (
        recorder.start_epochs == [1] and row["status"] == "ok" and row["epochs"] == 2
    )  # resumed, not restarted
    assert row["history"][0] == first_epoch[0] and row["history"][1]["epoch"] == 2
    logs = sorted(rd.glob("logs/version_*/metrics.csv"))
    assert len(logs) == 2 and all(
        "train_loss" in p.read_text() for p in logs
    )  # the first attempt's lines stay


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_corrupt_checkpoint_is_moved_aside_and_the_run_restarts(tmp_path, data_cache, damage, caplog):
    every_epoch = "callbacks.last_checkpoint.min_interval_s=0"  # the default saves 10 min in: none here
    overrides = tiny(tmp_path, data_cache, "attention=none", "trainer.max_epochs=2", every_epoch)
    with pytest.raises(Interrupt):
        run(overrides, callbacks=[InterruptAtEpoch(1)])
    ckpt = next((tmp_path / "experiments").rglob("last.ckpt"))
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"")
    recorder = RecordStart()
    row = run(overrides, callbacks=[recorder])
    assert row["status"] == "ok" and recorder.start_epochs == [0]  # from scratch
    (aside,) = ckpt.parent.glob("last.ckpt.corrupt-*")
    assert aside.stat().st_size == (len(data) // 3 if damage == "truncate" else 0)
    assert any("unreadable" in r.message and "corrupt-" in r.message for r in caplog.records)


def test_non_finite_loss_writes_a_failed_row_in_one_line(tmp_path, data_cache, caplog):
    row = run(tiny(tmp_path, data_cache, "attention=bam"), callbacks=[InjectNaN()])
    assert (
        row["status"] == "failed" and "non-finite training loss" in row["error"] and "\n" not in row["error"]
    )
    assert row["test_acc"] is None
    runs = row_file(tmp_path, row).parent
    assert [p.name for p in runs.iterdir()] == [f"{row['run_name']}.json"]  # no predictions
    assert load_row(runs / f"{row['run_name']}.json").status == "failed"
    assert not any(r.exc_info for r in caplog.records)  # no traceback in the log


def test_a_second_start_of_the_same_run_is_refused_and_a_stale_lock_is_taken_over(tmp_path, data_cache):
    overrides = tiny(tmp_path, data_cache, "attention=none")
    cfg = compose(overrides)
    from lbam.config import run_name

    rd = tmp_path / "experiments" / "embodiment1_quick" / run_name("none", overrides, 0)
    rd.mkdir(parents=True)
    (rd / ".lock").write_text(f"{os.getpid()} {os.uname().nodename}\n")  # a live process holds it
    with pytest.raises(RunLockedError, match="already running"):
        train(cfg, overrides)
    assert (rd / ".lock").exists() and not (tmp_path / "results").exists()  # the holder is unharmed
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (rd / ".lock").write_text(f"{dead.stdout.strip()} {os.uname().nodename}\n")  # its process is gone
    (rd / "checkpoints").mkdir()
    (rd / "checkpoints" / ".last.ckpt.123-abc.tmp").write_bytes(b"partial")  # left by a kill mid-save
    runs = tmp_path / "results" / "runs" / "embodiment1_quick"
    runs.mkdir(parents=True)
    mine = runs / f".{rd.name}.json.x1.tmp"  # this run's row, killed before its rename
    theirs = runs / f".{rd.name}1.json.x2.tmp"  # another run's, possibly being written right now
    for tmp in (mine, theirs):
        tmp.write_text("{")
    row = train(compose(overrides), overrides)
    assert row["status"] == "ok" and not (rd / ".lock").exists()
    assert not list(rd.rglob("*.tmp")) and not mine.exists() and theirs.exists()


def test_two_processes_start_the_same_run_one_trains(tmp_path, data_cache):
    # Started together, so that neither has the other's ~8 s of imports as a head start: whichever takes the lock
    # trains 100 tiny epochs (~10 s), long after the other reaches the lock (starting the second only once the
    # first held the lock let a fast first run finish before the second got there).
    overrides = tiny(tmp_path, data_cache, "attention=none", "trainer.max_epochs=100")
    cmd = [sys.executable, "-m", "lbam.train", *overrides]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in (0, 1)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], [e[-1500:] for e in errs]
    refused, trained = errs[codes.index(2)], errs[codes.index(0)]
    assert "already running" in refused and "Traceback" not in refused, refused[-2000:]
    assert "already running" not in trained  # the run that holds the lock is unharmed
    from lbam.config import run_name

    lock = tmp_path / "experiments" / "embodiment1_quick" / run_name("none", overrides, 0) / ".lock"
    (row,) = (tmp_path / "results" / "runs" / "embodiment1_quick").glob("*.json")
    assert load_row(row).status == "ok" and not lock.exists()


@pytest.mark.slow
def test_compiled_run_trains_and_its_checkpoint_loads_uncompiled(tmp_path, data_cache):
    # aot_eager: the checkpoint keys come from nn.Module.compile, not from the backend (inductor: tests/test_runner.py).
    overrides = [
        "attention=lbam",
        "model.compile=true",
        "model.compile_backend=aot_eager",
        "trainer.max_epochs=2",
    ]
    row = run(tiny(tmp_path, data_cache, *overrides))
    assert row["status"] == "ok" and row["compiled"] is True and row["epochs"] == 2
    assert row["compile_seconds"] is not None and row["compile_seconds"] >= 0
    ckpt = torch.load(tmp_path / "experiments" / row["checkpoint"], weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])
    build_backbone(**ckpt["hyper_parameters"]["model_kwargs"]).load_state_dict(
        {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    )


def test_ddp_spawn_on_cpu_with_two_processes_tests_the_whole_set_once(tmp_path, data_cache):
    overrides = [o for o in tiny(tmp_path, data_cache, "attention=none") if o != "trainer=cpu"]
    row = run([*overrides, "trainer=ddp_spawn", "trainer.accelerator=cpu"])
    assert row["status"] == "ok", row["error"]
    assert "x2" in row["device"] and row["epochs"] == 1 and len(row["history"]) == 1
    ids = [i for i, _, _ in read_predictions(load_row(row_file(tmp_path, row)), row_file(tmp_path, row))]
    assert len(ids) == len(set(ids)) == row["n_test"]  # every test sample once, none padded in


def test_command_line_sweep_writes_one_run_directory_and_row_per_job(tmp_path, data_cache):
    cmd = [sys.executable, "-m", "lbam.train", "-m", *tiny(tmp_path, data_cache, "attention=none,eca")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("none", "eca"):
        (rd,) = (tmp_path / "experiments" / "embodiment1_quick").glob(f"{name}__*__seed0")
        assert (rd / ".hydra" / "config.yaml").exists() and (rd / "checkpoints" / "last.ckpt").exists()
        row = load_row(tmp_path / "results" / "runs" / "embodiment1_quick" / f"{rd.name}.json")
        assert row.status == "ok" and row.attention == name
    assert "\r" not in proc.stderr  # no progress bar in a sweep or a pipe


@pytest.mark.bccd
def test_real_bccd_tiny_profile_beats_chance(tmp_path, bccd_root):
    overrides = [
        "experiment=embodiment1_quick",
        "profile=test",
        "trainer=cpu",
        "attention=lbam",
        "dataset.image_size=32",
        "dataset.download=false",
        "backbone.width_mult=0.25",
        "dataset.batch_size=32",
        "trainer.max_epochs=2",
        f"paths.data_dir={bccd_root}",
        f"paths.results_dir={tmp_path}/results",
        f"paths.experiments_dir={tmp_path}/experiments",
    ]
    row = run(overrides)
    assert row["status"] == "ok" and row["dataset"] == "bccd" and row["synthetic"] is False
    assert sorted(row["class_names"]) == ["Platelets", "RBC", "WBC"]
    assert row["test_balanced_acc"] > 1 / 3 + 0.2, row
