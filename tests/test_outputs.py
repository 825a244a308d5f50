"""Output problems (issue #31): an experiments or results folder that is not a folder, read-only or full is one line
before Hydra touches it; a full disk or an impossible finished row is never a traceback; no empty temp folder is
left; a finished run whose predictions are gone runs again; a `.lock` folder gets a hint that fits."""

import json
import logging
import os
import subprocess
import sys
import tempfile

import pytest

from lbam.cli import MIN_FREE_BYTES, precheck
from lbam.config import run_name
from lbam.results import load_row
from lbam.rundir import RunLockedError
from tests.test_train import ROOT, InjectNaN, row_file, run, run_dir, tiny


def _train_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "lbam.train", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("paths.experiments_dir", "read-only"),
        ("paths.experiments_dir", "a-file"),
        ("paths.results_dir", "read-only-parent"),
        ("paths.results_dir", "a-file"),
    ],
)
def test_an_unusable_output_folder_is_one_line_before_hydra_writes(tmp_path, key, shape):
    """The trial: Hydra's traceback came before the project's own check (it writes the run folder first)."""
    folder = tmp_path / "out"
    if shape == "a-file":
        folder.write_text("not a folder")
    else:
        folder.mkdir()
        os.chmod(folder, 0o555)
    target = folder / "below" if shape == "read-only-parent" else folder
    other = "paths.results_dir" if key == "paths.experiments_dir" else "paths.experiments_dir"
    proc = _train_cli("dataset=synthetic_bccd", f"{key}={target}", f"{other}={tmp_path / 'other'}")
    os.chmod(folder, 0o755) if folder.is_dir() else None
    what = "not a folder" if shape == "a-file" else "read-only"
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: {key}={target}: {folder} is {what}; point {key} at a writable folder"
    ]
    assert not (tmp_path / "other").exists() and (not folder.is_dir() or not list(folder.iterdir()))


def test_a_full_output_disk_is_one_line(tmp_path, monkeypatch, capsys):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(
        shutil,
        "disk_usage",
        lambda p: real(p)._replace(free=1024) if str(p).startswith(str(tmp_path)) else real(p),
    )
    with pytest.raises(SystemExit) as code:
        precheck([f"paths.results_dir={tmp_path / 'r'}", f"paths.experiments_dir={tmp_path / 'e'}"])
    assert code.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"error: paths.experiments_dir={tmp_path / 'e'}: the file system of {tmp_path} is full (0.0 MiB free, less "
        f"than {MIN_FREE_BYTES // 2**20}); point paths.experiments_dir at a writable folder"
    )


@pytest.mark.slow
def test_failed_row_on_a_full_disk_is_one_line_and_the_ok_row_stays(
    tmp_path, data_cache, monkeypatch, caplog
):
    import lbam.runrow

    overrides = tiny(tmp_path, data_cache, "attention=none")
    ok = run(overrides)
    path = row_file(tmp_path, ok)
    before = path.read_bytes()

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lbam.runrow, "_write_json", full)
    with caplog.at_level(logging.WARNING, logger="lbam"):
        failed = run([*overrides, "force=true"], callbacks=[InjectNaN()])
    assert failed["status"] == "failed" and path.read_bytes() == before
    (line,) = [r.getMessage() for r in caplog.records if "the ok row" in r.getMessage()]
    assert "could not be written" in line and "No space left on device" in line and "\n" not in line


@pytest.mark.slow
def test_an_impossible_finished_row_becomes_a_failed_row(tmp_path, data_cache, monkeypatch):
    """A row the schema refuses (here a negative images/s) ended in a traceback after the whole run."""
    monkeypatch.setattr("lbam.train.throughput", lambda history, compiled: (-1.0, None))
    row = run(tiny(tmp_path, data_cache, "attention=none"))
    assert row["status"] == "failed" and row["test_acc"] is None
    assert (
        row["error"].startswith("RowError: refusing to write an invalid row")
        and "images_per_second=-1.0" in row["error"]
    )
    assert load_row(row_file(tmp_path, row)).status == "failed"
    assert not (run_dir(tmp_path, row) / "finished.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("run_dir_too", [False, True])
def test_a_row_that_cannot_be_saved_leaves_no_empty_temp_folder(
    tmp_path, data_cache, monkeypatch, run_dir_too
):
    import lbam.runrow
    from lbam.runrow import RowNotSaved

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    real = lbam.runrow.write_row
    refused = [str(tmp_path / "results"), *([str(tmp_path / "experiments")] if run_dir_too else [])]

    def full_disk(row, preds, results_dir):
        if str(results_dir).startswith(tuple(refused)):
            raise OSError(28, "No space left on device")
        return real(row, preds, results_dir)

    monkeypatch.setattr(lbam.runrow, "write_row", full_disk)
    with pytest.raises(RowNotSaved) as err:
        run(tiny(tmp_path, data_cache, "attention=eca"))
    if run_dir_too:  # the row went to a temp folder, which is not empty
        (folder,) = temp.glob("lbam-row-*")
        assert str(folder) in str(err.value) and list(folder.rglob("*.json"))
    else:  # the run directory took it: no temp folder at all (one was made, and left empty, every time)
        assert "/experiments/" in str(err.value) and not list(temp.iterdir())


@pytest.mark.slow
def test_a_finished_run_without_its_predictions_runs_again(tmp_path, data_cache, caplog):
    """The trial: with its predictions deleted, a finished run said "already finished: skipped" and the report
    then refused its row."""
    overrides = tiny(tmp_path, data_cache, "attention=none")
    ok = run(overrides)
    preds = row_file(tmp_path, ok).with_suffix(".preds.csv")
    data = preds.read_bytes()
    preds.unlink()
    with caplog.at_level(logging.INFO, logger="lbam"):
        again = run(overrides)
    assert again["status"] == "ok" and preds.read_bytes() == data
    messages = [r.getMessage() for r in caplog.records]
    assert any("its row or predictions are missing or changed: running it again" in m for m in messages)
    assert not any("already finished here: skipped" in m for m in messages)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lbam"):
        assert run(overrides) == again  # intact now: skipped
    assert any("already finished here: skipped" in r.getMessage() for r in caplog.records)


def test_a_lock_folder_gets_a_hint_that_fits(tmp_path, data_cache):
    overrides = tiny(tmp_path, data_cache, "attention=none")
    rd = tmp_path / "experiments" / "embodiment1_quick" / run_name("none", overrides, 0)
    (rd / ".lock").mkdir(parents=True)
    with pytest.raises(RunLockedError) as err:
        run(overrides)
    assert str(err.value) == (
        f"the lock of run embodiment1_quick/{rd.name}, {rd / '.lock'}, is a folder, not a lock file: remove it "
        f"(rm -r {rd / '.lock'}) unless something of yours uses it"
    )
    assert json.dumps(str(err.value)).count("\\n") == 0
