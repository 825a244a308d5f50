"""The row schema (lbam.results), its predictions file, the one atomic write, metrics and provenance."""

import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess

import pytest
import torch

from lbam import results
from lbam.io import atomic_write
from lbam.metrics import classification_metrics, confusion_matrix
from lbam.results import Row, RowError, git_commit, load_row, read_predictions, row_problem, write_row


def ok_row(**kw) -> Row:
    base = dict(
        experiment="exp", run_name="lbam__seed0", profile="quick", seed=0, overrides=[], dataset="bccd",
        synthetic=False, backbone="cnn4", attention="lbam", attention_kwargs={}, placement="stage",
        width_mult=0.5, image_size=48, status="ok", test_acc=0.75, test_balanced_acc=0.5, test_macro_f1=0.5,
        class_names=["a", "b"], params=10, attention_params=2, macs=100, flops=250, n_train=8, n_test=4,
        train_seconds=1.5, predictions_file="lbam__seed0.preds.csv",
    )  # fmt: skip
    return Row(**{**base, **kw})


PREDS = [("i0", 0, 0), ("i1", 1, 1), ("i2", 1, 0), ("i3", 0, 0)]


def test_a_written_row_loads_back_with_its_predictions(tmp_path):
    path = write_row(ok_row(), PREDS, tmp_path)
    assert path == tmp_path / "runs" / "exp" / "lbam__seed0.json"
    row = load_row(path)
    assert (
        row.predictions_sha256
        == hashlib.sha256(path.with_name("lbam__seed0.preds.csv").read_bytes()).hexdigest()
    )
    assert (
        dataclasses.replace(row, predictions_sha256=None) == ok_row() and read_predictions(row, path) == PREDS
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["lbam__seed0.json", "lbam__seed0.preds.csv"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"test_acc": 1.7}, "test_acc=1.7 is not a fraction"),
        ({"test_balanced_acc": -0.1}, "not a fraction"),
        ({"test_macro_f1": math.nan}, "test_macro_f1=nan is not a fraction"),
        ({"train_seconds": math.inf}, "train_seconds=inf is not finite"),
        ({"status": "done"}, "status 'done'"),
        ({"profile": "huge"}, "profile 'huge'"),
        ({"test_acc": None}, "an ok row needs ['test_acc']"),
        ({"seed": True}, "seed=True is not int"),
        ({"params": "ten"}, "params='ten' is not int"),
        ({"params": -1}, "params=-1 is negative"),
        ({"load_average": -0.5}, "load_average=-0.5 is negative"),
        ({"cpu_count": 2.5}, "cpu_count=2.5 is not int"),
        ({"n_test": 0}, "n_test=0"),
        ({"attention_kwargs": []}, "attention_kwargs=[] is not dict"),
        ({"backbone": None}, "null in required keys ['backbone']"),
        ({"image_size": None, "seed": None}, "null in required keys ['seed', 'image_size']"),
        ({"synthetic": "no"}, "synthetic='no' is not bool"),
        ({"dataset": " "}, "dataset=' ' is empty"),
        ({"image_size": 0}, "both must be > 0"),
        ({"width_mult": -0.5}, "both must be > 0"),
        ({"overrides": ["a=1", 2]}, "overrides=['a=1', 2] is not a list of strings"),
    ],
)
def test_invalid_rows_are_named_and_never_written(tmp_path, change, problem):
    d = ok_row().to_dict() | change
    assert problem in row_problem(d)
    with pytest.raises(RowError, match="refusing to write"):
        write_row(Row(**d), PREDS, tmp_path)
    assert not (tmp_path / "runs").exists()
    path = tmp_path / "x.json"
    path.write_text(json.dumps(d))
    with pytest.raises(RowError, match=f"{path}: invalid row"):
        load_row(path)


def test_missing_unknown_keys_and_unreadable_files_are_errors(tmp_path):
    d = ok_row().to_dict()
    assert "missing keys ['experiment']" in row_problem({k: v for k, v in d.items() if k != "experiment"})
    assert "unknown keys ['num_classez']" in row_problem(d | {"num_classez": 3})
    assert row_problem([1, 2]) == "not a JSON object"
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(d)[:40])
    with pytest.raises(RowError, match=r"cut\.json: unreadable row"):
        load_row(cut)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"history": ' + "[" * 100_000 + "]" * 100_000 + "}", "unreadable row (nested too deeply)"),
        ('{"seed": ' + "9" * 5000 + "}", "unreadable row (Exceeds the limit"),
        ("\xff\xfe", "unreadable row"),
    ],
)
def test_deep_huge_or_undecodable_json_is_one_error(tmp_path, text, problem):
    path = tmp_path / "x.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(RowError, match=re.escape(f"{path}: {problem}")):
        load_row(path)


def test_a_file_too_big_for_a_row_is_not_parsed(tmp_path, monkeypatch):
    path = write_row(ok_row(), PREDS, tmp_path)
    monkeypatch.setattr(results, "MAX_ROW_BYTES", 100)
    with pytest.raises(RowError, match=r"bytes, too big for a row \(at most 100\)"):
        load_row(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("id,target,pred\ni0,0,0\ni1,1,1\n", "2 predictions but the row says n_test=4"),
        ("id,target,pred\ni0,0,0\ni0,1,1\ni2,1,0\ni3,0,0\n", "duplicate sample ids"),
        ("id,target,pred\ni0,0,0\ni1,1,1\ni2,1,5\ni3,0,0\n", "a label outside 0..1"),
        ("id,target,pred\ni0,0,0\ni1,x,1\ni2,1,0\ni3,0,0\n", "malformed predictions line"),
        ("a,b,c\ni0,0,0\n", "header"),
        ("id,target,pred\ni0,0,0\ni1,1\x00,1\ni2,1,0\ni3,0,0\n", "malformed predictions line"),
    ],
)
def test_bad_predictions_files_are_errors(tmp_path, content, problem):
    path = write_row(ok_row(), PREDS, tmp_path)
    path.with_name("lbam__seed0.preds.csv").write_text(content)
    with pytest.raises(RowError, match=problem):
        read_predictions(load_row(path), path)


def test_atomic_write_replaces_whole_files_and_cleans_up_after_a_failure(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "f.txt"
    atomic_write(target, "old")
    atomic_write(target, b"new")
    assert target.read_text() == "new" and oct(target.stat().st_mode)[-3:] == "644"

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "partial")
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_balanced_accuracy_and_macro_f1_average_over_present_classes():
    # Class 2 has no test sample but is predicted once: it must not count as a recall of 0.
    targets, preds = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 2, 1, 1, 1])
    m = classification_metrics(confusion_matrix(targets, preds, 3), ["a", "b", "c"])
    assert m["test_balanced_acc"] == pytest.approx((2 / 3 + 1) / 2)  # 0.833, torchmetrics' macro gives 0.556
    assert m["test_macro_f1"] == pytest.approx((0.8 + 1.0) / 2)  # F1(a) = 2·1·(2/3)/(1+2/3)
    assert m["test_acc"] == pytest.approx(5 / 6) and m["per_class_acc"]["c"] is None
    assert m["confusion_matrix"] == [[2, 0, 1], [0, 3, 0], [0, 0, 0]]


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_commit_is_dirty_for_code_changes_but_not_for_rewritten_results(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "row.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = git_commit(tmp_path)
    assert len(sha) == 40 and not sha.endswith("+dirty")
    (tmp_path / "results" / "row.json").write_text('{"new": 1}')
    assert git_commit(tmp_path) == sha  # a rerun rewriting its committed row is not a code change
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == sha + "+dirty"


def test_commit_is_unknown_outside_git(tmp_path):
    assert git_commit(tmp_path) == "unknown"


def test_throughput_of_one_epoch_sets_its_first_step_apart():
    from lbam.module import throughput

    # 10 steps of 32 images in 3.0 s, the first 1.2 s: steady 288 images in 1.8 s = 160 img/s, 0.2 s per 32
    # images, so the first step took 1.0 s more than a steady one.
    one = [{"seconds": 3.0, "images": 320, "first_step_seconds": 1.2, "first_step_images": 32}]
    assert throughput(one, compiled=True) == (160.0, 1.0)
    assert throughput(one, compiled=False) == (160.0, None)
    # Two epochs: the later epoch gives the rate (100 img/s), the first epoch's excess is the compile time.
    two = [{"seconds": 5.0, "images": 300, "first_step_seconds": 2.5, "first_step_images": 30}]
    two.append({"seconds": 3.0, "images": 300})
    assert throughput(two, compiled=True) == (100.0, 2.0)
    # A resumed run's single entry has no first step of its own: the rate counts it all and compile time is unknown.
    assert throughput([{"seconds": 2.0, "images": 320}], compiled=True) == (160.0, None)
