"""End-to-end runs of lbam.train on the synthetic twins (and, when present, the real BCCD) on the CPU."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lbam.results import ROW_KEYS
from lbam.train import compose_config, train

ROOT = Path(__file__).resolve().parents[1]


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so the runner must not turn it into a failed row."""


class InterruptAfterEpoch(pl.Callback):
    """Kills the run at the start of the epoch after `epoch`, once that epoch's checkpoint is saved."""

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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def tiny(out: Path, cache: Path, *extra: str, embodiment: int = 1) -> list[str]:
    dataset = "synthetic_bccd" if embodiment == 1 else "synthetic_pets"
    return [
        f"experiment=embodiment{embodiment}_quick",
        f"dataset={dataset}",
        "trainer=cpu",
        "dataset.image_size=32",
        "dataset.num_workers=0",
        "backbone.width_mult=0.125",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        f"paths.results_dir={out}/results",
        f"paths.experiments_dir={out}/experiments",
        f"paths.cache_dir={cache}",
        *(["dataset.train_size=0.75", "dataset.test_size=null"] if embodiment == 2 else []),  # quick's subset
        *extra,
    ]


def run(overrides, callbacks=()):
    return train(compose_config(overrides), overrides, callbacks=callbacks)


def read_preds(out: Path, row: dict) -> list[list[str]]:
    with open(out / "results" / "runs" / row["experiment"] / row["predictions_file"]) as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def emb1_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("emb1")
    return out, run(tiny(out, cache_dir, "attention=lbam"))


def _check_ok_row(out: Path, row: dict, experiment: str, dataset: str):
    assert row["status"] == "ok" and row["error"] is None
    assert set(row) == set(ROW_KEYS)
    on_disk = json.loads((out / "results" / "runs" / experiment / f"{row['run_name']}.json").read_text())
    assert on_disk == row
    assert row["experiment"] == experiment and row["dataset"] == dataset and row["synthetic"] is True
    assert row["profile"] == "quick" and row["image_size"] == 32 and row["width_mult"] == 0.125
    for key in ("test_acc", "test_balanced_acc", "test_macro_f1"):
        assert 0.0 <= row[key] <= 1.0
    cm = row["confusion_matrix"]
    assert len(cm) == row["num_classes"] == len(row["class_names"]) == len(row["per_class_acc"])
    assert sum(map(sum, cm)) == row["n_test"]
    assert row["data"]["n_test"] == row["n_test"] and "root" not in row["data"]
    assert sum(cm[i][i] for i in range(len(cm))) / row["n_test"] == pytest.approx(row["test_acc"])
    assert row["params"] > row["attention_params"] > 0 and row["flops"] >= row["macs"] > 0
    assert row["epochs"] == 1 and [h["epoch"] for h in row["history"]] == [1]
    assert row["train_seconds"] > 0 and row["images_per_second"] > 0
    preds = read_preds(out, row)
    assert preds[0] == ["id", "target", "pred"] and len(preds) == row["n_test"] + 1
    # the checkpoint rebuilds the model from its hyper-parameters (the report's path)
    ckpt = torch.load(
        out / "experiments" / experiment / row["run_name"] / "checkpoints" / "last.ckpt", weights_only=False
    )
    from lbam.models import build_backbone

    model = build_backbone(**ckpt["hyper_parameters"]["model_kwargs"])
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    assert row["checkpoint"].endswith("last.ckpt")


def test_embodiment1_end_to_end_on_synthetic_bccd(emb1_run):
    out, row = emb1_run
    _check_ok_row(out, row, "embodiment1_quick", "synthetic_bccd")
    assert (
        row["attention"] == "lbam"
        and row["backbone"] == "cnn4"
        and row["attention_kwargs"]["branches"] == "both"
    )
    assert row["run_name"].startswith("lbam__") and row["run_name"].endswith("__seed0")


def test_embodiment2_end_to_end_on_synthetic_pets(tmp_path, cache_dir):
    row = run(tiny(tmp_path, cache_dir, "attention=se", embodiment=2))
    _check_ok_row(tmp_path, row, "embodiment2_quick", "synthetic_pets")
    assert row["backbone"] == "vgg16" and row["attention"] == "se"
    # the twin's corrupt image is skipped and named in the run's metadata
    assert row["data"]["skipped"] >= 1 and any(
        "unreadable" in i["reason"] for i in row["data"]["skipped_items"]
    )


def test_same_seed_twice_gives_identical_metrics_and_predictions(emb1_run, tmp_path, cache_dir):
    out, first = emb1_run
    second = run(tiny(tmp_path, cache_dir, "attention=lbam"))
    for key in ("test_acc", "test_balanced_acc", "test_macro_f1", "confusion_matrix", "per_class_acc"):
        assert second[key] == first[key], key
    assert [h["train_loss"] for h in second["history"]] == [h["train_loss"] for h in first["history"]]
    assert read_preds(tmp_path, second) == read_preds(out, first)


def test_finished_run_is_skipped_and_force_replaces_its_row(tmp_path, cache_dir):
    overrides = tiny(tmp_path, cache_dir, "attention=eca")
    first = run(overrides)
    recorder = RecordStart()
    assert run(overrides, callbacks=[recorder]) == first
    assert recorder.start_epochs == []  # skipped: no training at all
    again = run([*overrides, "force=true"], callbacks=[recorder])
    assert recorder.start_epochs == [0] and again["status"] == "ok"
    rows = sorted(p.name for p in (tmp_path / "results" / "runs" / "embodiment1_quick").iterdir())
    assert rows == [f"{first['run_name']}.json", f"{first['run_name']}.preds.csv"]  # replaced, no temp files
    assert json.loads((tmp_path / "results" / "runs" / "embodiment1_quick" / rows[0]).read_text()) == again


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, cache_dir):
    overrides = tiny(tmp_path, cache_dir, "attention=cbam", "trainer.max_epochs=2")
    with pytest.raises(Interrupt):
        run(overrides, callbacks=[InterruptAfterEpoch(1)])
    assert not (tmp_path / "results").exists()  # an interruption is not a result
    ckpt = next((tmp_path / "experiments").rglob("last.ckpt"))
    first_epoch = torch.load(ckpt, weights_only=False)["lbam_history"]
    assert [h["epoch"] for h in first_epoch] == [1]

    recorder = RecordStart()
    row = run(overrides, callbacks=[recorder])
    assert recorder.start_epochs == [1]  # resumed after epoch 1, not restarted
    assert row["status"] == "ok" and row["epochs"] == 2
    assert row["history"][0] == first_epoch[0] and row["history"][1]["epoch"] == 2


def test_non_finite_loss_writes_a_failed_row_never_ok(tmp_path, cache_dir):
    row = run(tiny(tmp_path, cache_dir, "attention=bam"), callbacks=[InjectNaN()])
    assert row["status"] == "failed" and "non-finite training loss" in row["error"]
    assert row["test_acc"] is None
    runs = tmp_path / "results" / "runs" / "embodiment1_quick"
    assert [p.name for p in runs.iterdir()] == [f"{row['run_name']}.json"]  # no predictions
    assert json.loads((runs / f"{row['run_name']}.json").read_text())["status"] == "failed"


def test_ddp_on_cpu_with_two_processes_gathers_the_whole_test_set(tmp_path, cache_dir):
    # trainer=ddp (strategy ddp, 2 devices) called from Python runs as ddp_spawn: two CPU processes
    overrides = [o for o in tiny(tmp_path, cache_dir, "attention=none") if o != "trainer=cpu"]
    row = run([*overrides, "trainer=ddp", "trainer.accelerator=cpu"])
    assert row["status"] == "ok", row["error"]
    assert "x2" in row["device"] and row["epochs"] == 1 and len(row["history"]) == 1
    assert sum(map(sum, row["confusion_matrix"])) == row["n_test"]
    preds = read_preds(tmp_path, row)
    ids = [p[0] for p in preds[1:]]
    assert len(ids) == len(set(ids)) == row["n_test"]  # every test sample once, none padded in


def test_command_line_sweep_writes_one_run_directory_per_job(tmp_path, cache_dir):
    cmd = [sys.executable, "-m", "lbam.train", "-m", *tiny(tmp_path, cache_dir, "attention=none,eca")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {"none", "eca"}
    for name in names:
        (run_dir,) = (tmp_path / "experiments" / "embodiment1_quick").glob(f"{name}__*__seed0")
        assert (run_dir / ".hydra" / "config.yaml").exists() and (
            run_dir / "checkpoints" / "last.ckpt"
        ).exists()
        row = json.loads(
            (tmp_path / "results" / "runs" / "embodiment1_quick" / f"{run_dir.name}.json").read_text()
        )
        assert row["status"] == "ok" and row["attention"] == name


def _bccd_root() -> Path | None:
    for candidate in (os.environ.get("LBAM_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "BCCD" / "Annotations").is_dir():
            return Path(candidate)
    return None


@pytest.mark.bccd
@pytest.mark.skipif(_bccd_root() is None, reason="real BCCD not found (LBAM_DATA_DIR or ../shared/data)")
def test_real_bccd_tiny_profile_beats_chance(tmp_path):
    overrides = [
        "experiment=embodiment1_quick",
        "trainer=cpu",
        "attention=lbam",
        "dataset.image_size=32",
        "dataset.num_workers=0",
        "dataset.download=false",
        "backbone.width_mult=0.25",
        "dataset.train_size=600",  # stratified: ~45 crops each of WBC and platelets
        "dataset.test_size=300",
        "dataset.batch_size=32",
        "trainer.max_epochs=2",
        f"paths.data_dir={_bccd_root()}",
        f"paths.results_dir={tmp_path}/results",
        f"paths.experiments_dir={tmp_path}/experiments",
    ]
    row = run(overrides)
    assert row["status"] == "ok" and row["dataset"] == "bccd" and row["synthetic"] is False
    assert sorted(row["class_names"]) == ["Platelets", "RBC", "WBC"] and row["n_test"] == 300
    assert row["data"]["skipped"] == 2  # the two degenerate boxes, recorded in the run's metadata
    assert row["test_balanced_acc"] > 1 / 3 + 0.2, row
