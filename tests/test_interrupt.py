"""Signals (issue #31): SIGTERM and SIGINT save a checkpoint the run resumes from exactly and exit 143 / 130 (they
exited 0 with no row); a multirun reports its interrupted and unstarted runs and exits non-zero; a failing run
never stops the others of its sweep."""

import os
import signal
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
import torch

from lbam.interrupt import Interrupted
from lbam.results import load_row
from tests.test_train import ROOT, row_file, run, run_dir, tiny

pytestmark = pytest.mark.slow


class SignalAt(pl.Callback):
    """Sends ``sig`` to this process when the training batch ``batch`` of epoch ``epoch`` (0-based) starts."""

    def __init__(self, epoch: int, batch: int, sig=signal.SIGTERM):
        self.epoch, self.batch, self.sig = epoch, batch, sig

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.sig)


# 240 training crops at batch 16: 15 batches an epoch; the checkpoint interval (600 s) saves no epoch end before.
EXTRA = (
    "attention=lbam",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=null",
    "dataset.batch_size=16",
)


@pytest.mark.parametrize(
    ("batch", "sig", "code"),
    [(3, signal.SIGTERM, 143), (14, signal.SIGTERM, 143), (7, signal.SIGINT, 130)],
    ids=["sigterm-mid-epoch", "sigterm-last-batch", "sigint-mid-epoch"],
)
def test_a_signal_saves_a_checkpoint_the_run_resumes_from_exactly(tmp_path, data_cache, batch, sig, code):
    whole = run(tiny(tmp_path / "a", data_cache, *EXTRA))
    overrides = tiny(tmp_path / "b", data_cache, *EXTRA)
    # What the handlers were: a job started in the background inherits SIGINT ignored, and keeps it so.
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(Interrupted) as stopped:
        run(overrides, callbacks=[SignalAt(1, batch, sig)])
    assert stopped.value.exit_code == code and "checkpoint saved at" in str(stopped.value)
    assert not (tmp_path / "b" / "results").exists()  # an interruption is not a result
    ckpt = torch.load(next((tmp_path / "b").rglob("last.ckpt")), weights_only=True)
    assert ckpt["global_step"] == 15 + batch + 1  # the batch during which the signal came was trained
    assert {s: signal.getsignal(s) for s in before} == before  # the run's handlers are gone again
    resumed = run(overrides)
    assert resumed["resumed"] is True and resumed["epochs"] == whole["epochs"] == 3
    for key in ("steps", "test_acc", "test_balanced_acc", "confusion_matrix"):
        assert resumed[key] == whole[key], key
    for key in (
        "train_loss",
        "train_acc",
        "images",
        "step",
    ):  # the stopped epoch's entry is whole, not a part
        assert [h[key] for h in resumed["history"]] == [h[key] for h in whole["history"]], key
    preds = [
        row_file(tmp_path / d, r).with_suffix(".preds.csv").read_bytes()
        for d, r in (("a", whole), ("b", resumed))
    ]
    assert preds[0] == preds[1]


def _popen(args, log):
    return subprocess.Popen(
        [sys.executable, "-m", "lbam.train", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )


# A checkpoint at every epoch end (the default waits min_interval_s, 10 min, before its first): _signal_once waits
# for one to know that training is under way.
EVERY = "callbacks.last_checkpoint.min_interval_s=0"


def _signal_once(
    proc, root, count: int = 1, sig=signal.SIGTERM, group: bool = False, timeout: float = 300
) -> int:
    """Send ``sig`` to ``proc`` (``group``: to its process group, which it leads) once ``count`` runs under ``root``
    have a checkpoint (the first epoch end of the last of them: it is training); its exit status. The process
    never outlives the test."""
    pattern = "experiments/*/*/checkpoints/last.ckpt"
    try:
        deadline = time.monotonic() + timeout
        while len(list(root.glob(pattern))) < count:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"no {pattern} under {root} (exit {proc.poll()})")
            time.sleep(0.05)
        os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            proc.wait()


def test_sigterm_on_the_command_line_exits_143_and_the_same_command_resumes(tmp_path, data_cache):
    args = tiny(
        tmp_path, data_cache, "attention=none", "trainer.max_epochs=100000", "trainer.max_steps=400", EVERY
    )
    log = tmp_path / "stderr.txt"
    with open(log, "w") as f:
        code = _signal_once(_popen(args, f), tmp_path)
    assert code == 143, log.read_text()[-2000:]
    err = log.read_text()
    assert "Traceback" not in err and not (tmp_path / "results").exists()
    last = err.strip().splitlines()[-1]
    assert "interrupted by SIGTERM; checkpoint saved at" in last and last.endswith("last.ckpt")
    again = subprocess.run(
        [sys.executable, "-m", "lbam.train", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "resuming" in again.stderr, again.stderr[-2000:]
    (path,) = (tmp_path / "results" / "runs").rglob("*.json")
    assert load_row(path).resumed and load_row(path).steps == 400


def test_an_interrupted_multirun_lists_its_interrupted_and_unstarted_runs_and_exits_non_zero(
    tmp_path, data_cache
):
    """The trial: SIGTERM to a sweep exited 0 with no rows, success to a scheduler. The first run finishes, the
    second is interrupted (its checkpoint saved), the third never starts."""
    args = tiny(tmp_path, data_cache, "attention=none", "trainer.max_epochs=2,100000,3", EVERY)
    log = tmp_path / "stderr.txt"
    with open(log, "w") as f:
        code = _signal_once(_popen(["-m", *args], f), tmp_path, count=2)
    assert code == 143, log.read_text()[-2000:]
    err = log.read_text()
    assert "Traceback" not in err
    assert "error: the sweep was interrupted by SIGTERM: 1 run(s) interrupted, 1 not started" in err
    dirs = {d: (d / "finished.json").exists() or (d / "checkpoints" / "last.ckpt").exists() for d in
            (tmp_path / "experiments" / "embodiment1_quick").iterdir()}  # fmt: skip
    (unstarted,) = [d.name for d, ran in dirs.items() if not ran]  # Hydra made its folder, nothing more
    (stopped,) = [d.name for d in dirs if dirs[d] and not (d / "finished.json").exists()]
    assert f"  interrupted: embodiment1_quick/{stopped}: interrupted by SIGTERM; checkpoint saved at" in err
    assert f"  not started: embodiment1_quick/{unstarted}\n" in err
    rows = [load_row(p) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    assert [r.epochs for r in rows] == [2]
    ckpts = {
        p.parents[1].joinpath("finished.json").exists(): p
        for p in (tmp_path / "experiments").rglob("last.ckpt")
    }
    finished, stopped = (torch.load(ckpts[k], weights_only=True)["global_step"] for k in (True, False))
    assert finished == rows[0].steps and stopped > rows[0].steps // 2  # the second: past its first epoch


def test_a_failing_run_never_stops_the_rest_of_its_sweep(tmp_path, data_cache):
    """A user error in one run (here an image size over the stated range) stopped the whole sweep at it."""
    args = tiny(tmp_path, data_cache, "attention=none", "dataset.image_size=100000,32")
    proc = subprocess.run(
        [sys.executable, "-m", "lbam.train", "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: 1 run(s) of the sweep failed:" in proc.stderr
    assert "dataset.image_size=100000 must be an integer in [8, 512]" in proc.stderr
    assert "Traceback" not in proc.stderr
    (row,) = [load_row(p) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    assert row.status == "ok" and row.image_size == 32


def test_a_run_killed_before_training_keeps_its_lock_folder_clean(tmp_path, data_cache):
    """A signal outside training (here: before the run took its lock) interrupts at once, with nothing to save."""
    overrides = tiny(tmp_path, data_cache, "attention=none")

    class Early(pl.Callback):
        def setup(self, trainer, pl_module, stage):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as stopped:
        run(overrides, callbacks=[Early()])
    assert stopped.value.exit_code == 143
    rd = run_dir(
        tmp_path,
        {
            "experiment": "embodiment1_quick",
            "run_name": next((tmp_path / "experiments" / "embodiment1_quick").iterdir()).name,
        },
    )
    assert not (rd / ".lock").exists() and not list(rd.rglob("last.ckpt"))
    assert run(overrides)["status"] == "ok"  # the process may run again: the signal is forgotten


def test_a_parallel_multirun_waits_for_its_workers_to_save_and_reports_them(tmp_path, data_cache):
    """Hydra's joblib launcher (make reproduce JOBS=2): the signal reaches the whole process group (Ctrl-C, a
    scheduler); the workers save and stop, the parent waits for them instead of killing them mid-save, the runs
    not yet started never start."""
    args = tiny(tmp_path, data_cache, "attention=none,eca,se,cbam", "trainer.max_epochs=100000", EVERY)
    cmd = [
        sys.executable,
        "-m",
        "lbam.train",
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        *args,
    ]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
        code = _signal_once(proc, tmp_path, count=2, group=True)
    err = log.read_text()
    assert code == 143 and "Traceback" not in err, err[-3000:]
    assert "error: the sweep was interrupted by SIGTERM: 2 run(s) interrupted, 2 not started" in err
    assert (
        err.count("interrupted by SIGTERM; checkpoint saved at") >= 2 and not (tmp_path / "results").exists()
    )
