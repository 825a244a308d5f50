"""The report recomputes, never trusts (issue #21): every metric from the predictions, the row's identity (its
place, config digest, name, predictions digest, split), the fields it groups and plots by, its analysis
settings; two rows of one run are refused and a failed row never enters an average. Each bad row: exit 1, one
line on stderr naming the file, and nothing written."""

import json
import shutil

import pandas as pd
import pytest
from report_rows import declare, edit, one_error_line, put, run_cli

from lbam.report import validate
from lbam.report.rows import load_results
from lbam.report.stats import compare
from lbam.report.tables import summarize
from lbam.results import digest


@pytest.fixture(autouse=True)
def sweeps(monkeypatch):
    declare(
        monkeypatch,
        "exp",
        {"attention": "none,se,lbam", "seed": "range(0,10)"},
        grids=["", "dataset.train_subset=25"],
    )


def refused(capsys, tmp_path, *needles) -> str:
    rc, _, err = run_cli(capsys, "tables", "--results-dir", tmp_path)
    assert rc == 1
    assert not (tmp_path / "tables").exists()
    return one_error_line(err, *needles)


# Metrics


@pytest.mark.parametrize(
    ("field", "stored", "computed"),
    [
        # The re-trial: an edited balanced accuracy changed every verdict.
        ("test_balanced_acc", 0.4, "0.9666666666666667"),
        ("test_macro_f1", 0.5, "0.9666562434855118"),
        ("test_acc", 0.5, "0.9666666666666667"),
        (
            "per_class_acc",
            {"WBC": 0.95, "RBC": 0.5, "Platelets": 1.0},
            "['RBC']=0.5 but its predictions give 0.95",
        ),
        ("confusion_matrix", [[20, 0, 0], [0, 20, 0], [0, 0, 20]], "[[19, 1, 0], [0, 19, 1], [0, 0, 20]]"),
    ],
)
def test_every_stored_metric_is_checked_against_the_predictions(tmp_path, capsys, field, stored, computed):
    path = edit(put(tmp_path, "lbam", wrong={0, 4}), **{field: stored})
    line = refused(capsys, tmp_path, path, computed)
    assert field in line and "but its predictions give" in line


def test_float_noise_passes_and_the_report_uses_the_recomputed_numbers(tmp_path):
    path = put(tmp_path, "lbam", wrong={0, 4})
    stored = json.loads(path.read_text())["test_balanced_acc"]
    edit(path, test_balanced_acc=stored + 1e-12)
    res = load_results(tmp_path)
    assert res.frame["test_balanced_acc"].iloc[0] == stored == res.runs[0].row.test_balanced_acc


def test_a_failed_row_with_metrics_changes_nothing(tmp_path, capsys):
    for seed in range(3):
        put(tmp_path, "lbam", seed, {seed})
        put(tmp_path, "none", seed, {seed, 5})
    before = load_results(tmp_path)
    s0, p0 = summarize(before.frame, before.runs), compare(before.frame, before.runs)
    # A failed run that carries numbers anyway (here: far below the others) for seed 3 of LBAM.
    put(tmp_path, "lbam", 3, status="failed", test_acc=0.1, test_balanced_acc=0.1, test_macro_f1=0.1,
        images_per_second=1e6)  # fmt: skip
    after = load_results(tmp_path)
    s1, p1 = summarize(after.frame, after.runs), compare(after.frame, after.runs)
    pd.testing.assert_frame_equal(s0.drop(columns="failed"), s1.drop(columns="failed"))
    pd.testing.assert_frame_equal(p0, p1)
    assert list(s1["failed"]) == [0, 1] and list(s1["n"]) == [3, 3]
    failed = after.frame[after.frame["status"] == "failed"]
    assert failed["test_balanced_acc"].isna().all() and failed["images_per_second"].isna().all()
    assert after.runs[int(failed["run"].iloc[0])].row.test_balanced_acc is None


# Identity


def test_a_copy_under_another_file_name_is_refused(tmp_path, capsys):
    path = put(tmp_path, "lbam")
    copy = path.with_name("lbam__seed0_new.json")
    shutil.copy(path, copy)
    refused(capsys, tmp_path, copy, "belongs at runs/exp/lbam__seed0.json")


def test_a_row_in_another_experiments_folder_is_refused(tmp_path, capsys):
    path = put(tmp_path, "lbam")
    (tmp_path / "runs" / "exp2").mkdir()
    copy = tmp_path / "runs" / "exp2" / path.name
    shutil.copy(path, copy)
    refused(capsys, tmp_path, copy, "experiment='exp'")


def test_two_rows_of_one_run_are_refused_never_the_newest_kept(tmp_path, capsys):
    put(tmp_path, "none", 0)
    real = put(tmp_path, "lbam", 0, {1, 2})
    newer = real.with_name("lbam__seed0_rerun.json")  # the same run (setting, context, seed) renamed
    newer.write_text(real.read_text().replace('"lbam__seed0"', '"lbam__seed0_rerun"'))
    shutil.copy(real.with_name("lbam__seed0.preds.csv"), newer.with_name("lbam__seed0_rerun.preds.csv"))
    # Its config, attention and seed name another run: the copy is refused by name, the real row stays.
    refused(capsys, tmp_path, newer, "but its attention, overrides and seed give 'lbam__seed0'")
    rc, _, err = run_cli(capsys, "tables", "--results-dir", tmp_path, "--skip-invalid")
    assert rc == 0 and err.count("warning: skipping") == 1
    assert "1 invalid row file skipped" in (tmp_path / "tables" / "exp.md").read_text()
    assert sorted(load_results(tmp_path, skip_invalid=True).frame["attention"]) == ["lbam", "none"]


CONFIG = {"experiment_name": "exp", "seed": 0, "attention": {"name": "lbam"}, "dataset": {"image_size": 48}}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"config": CONFIG | {"seed": 1}}, "but its config digests to"),
        ({"config_hash": "0" * 16}, "config_hash='0000000000000000' but its config digests to"),
        ({"image_size": 64}, "image_size=64 but its config says dataset.image_size=48"),
        ({"attention": "se"}, "attention='se' but its config says attention.name='lbam'"),
    ],
)
def test_a_row_must_be_what_its_config_digest_vouches_for(tmp_path, capsys, change, needle):
    path = put(tmp_path, "lbam", config=CONFIG, config_hash=digest(CONFIG))
    assert len(load_results(tmp_path).frame) == 1
    edit(path, **change)
    refused(capsys, tmp_path, path, needle)


def test_an_identity_row_carries_the_name_the_runner_gives_it(tmp_path, capsys):
    path = put(tmp_path, "lbam", config=CONFIG, config_hash=digest(CONFIG))
    moved = path.with_name("lbam__x__seed0.json")
    moved.write_text(path.read_text().replace('"lbam__seed0"', '"lbam__x__seed0"'))
    path.unlink()
    refused(capsys, tmp_path, moved, "seed give 'lbam__seed0'")


def test_predictions_changed_after_the_run_are_refused_even_with_the_same_metrics(tmp_path, capsys):
    path = put(tmp_path, "lbam", wrong={0})
    preds = path.with_name("lbam__seed0.preds.csv")
    head, *lines = preds.read_text().splitlines()
    preds.write_text("\n".join([head, *reversed(lines)]) + "\n")  # same samples, same counts, other bytes
    refused(capsys, tmp_path, preds, "the predictions changed after the run")


def test_rows_without_their_identity_are_refused(tmp_path, capsys):
    assert validate.REQUIRE_IDENTITY  # every committed row carries it
    path = edit(put(tmp_path, "lbam"), config_hash=None, split_hash=None, config=None)
    refused(capsys, tmp_path, path, "lacks ['config_hash', 'split_hash', 'config']")


def test_runs_paired_in_one_context_and_seed_share_their_split(tmp_path, capsys):
    a = put(tmp_path, "lbam", 0, split_hash="a" * 16)
    put(tmp_path, "lbam", 0, overrides=["dataset.train_subset=25"], split_hash="c" * 16)  # another context
    assert run_cli(capsys, "tables", "--results-dir", tmp_path)[0] == 0
    shutil.rmtree(tmp_path / "tables")
    b = put(tmp_path, "none", 0, split_hash="b" * 16)
    refused(capsys, tmp_path, a, b, "one context and seed, two splits")


# Fields the report groups and plots by, and the analysis settings


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"backbone": None}, "null in required keys ['backbone']"),
        ({"image_size": None}, "null in required keys ['image_size']"),
        ({"experiment": None}, "null in required keys ['experiment']"),
        ({"image_size": "48"}, "image_size='48' is not int"),
        ({"synthetic": "no"}, "synthetic='no' is not bool"),
        ({"width_mult": 0}, "both must be > 0"),
        ({"seed": -1}, "seed=-1 is negative"),
        ({"device": None}, "device=None must name the machine"),
        ({"attention": "lbam x"}, "attention='lbam x' must be a name"),
        ({"overrides": ["b=1", "a=2"]}, "are not the run's key=value overrides"),
        ({"overrides": ["dataset.num_workers=2"]}, "relevant_overrides: []"),
        ({"overrides": ["x"]}, "overrides=['x']"),
        ({"class_names": []}, "must name each class once"),
        ({"analysis": {"alpha": 5}}, "analysis.alpha=5 must be a number in (0, 1)"),
        ({"analysis": {"alpha": "0.05"}}, "analysis.alpha='0.05' must be a number"),
        ({"analysis": {"alpha": True}}, "analysis.alpha=True"),
        ({"analysis": {"noninferiority_margin": -0.01}}, "analysis.noninferiority_margin=-0.01 must be"),
        ({"analysis": {"noninferiority_margin": 1.5}}, "analysis.noninferiority_margin=1.5 must be"),
        ({"analysis": {"curve": 3}}, "analysis.curve=3 must be null or an override key"),
    ],
)
def test_grouping_and_analysis_fields_are_checked(tmp_path, capsys, change, needle):
    put(tmp_path, "none")
    path = edit(put(tmp_path, "lbam"), **change)
    refused(capsys, tmp_path, path, needle)


def test_rows_of_one_table_must_state_one_analysis(tmp_path, capsys):
    put(tmp_path, "none", analysis={"alpha": 0.05})
    put(tmp_path, "lbam", analysis={"alpha": 0.1})
    refused(capsys, tmp_path, "one table, two analyses")


def test_a_deeply_nested_row_is_one_line(tmp_path, capsys):
    put(tmp_path, "none")
    deep = tmp_path / "runs" / "exp" / "deep.json"
    deep.write_text('{"history": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(capsys, tmp_path, deep, "nested too deeply")
    rc, _, err = run_cli(capsys, "tables", "--results-dir", tmp_path, "--skip-invalid")
    assert rc == 0 and "deep.json" in err and "Traceback" not in err


# Issue #31: fields that disagree with their own config, impossible values, dirty commits, unverified data

LR = CONFIG | {"optimizer": {"lr": 0.001}, "dataset": {"image_size": 48, "train_subset": None}}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optimizer.lr=0.5"], "its override optimizer.lr=0.5 but its config says optimizer.lr=0.001"),
        (["dataset.train_subset=25"], "its override dataset.train_subset=25 but its config says "),
        (["profile=full"], "its override profile=full but its config says profile='quick'"),
    ],
)
def test_an_override_its_config_does_not_state_is_refused(tmp_path, capsys, overrides, needle):
    """The trial: a row whose config says lr = 1e-3 but which claims optimizer.lr=0.5 was reported as lr = 0.5."""
    put(tmp_path, "lbam", config=LR | {"optimizer": {"lr": 0.5}}, overrides=["optimizer.lr=0.5"])
    put(tmp_path, "lbam", 1, config=LR | {"seed": 1}, overrides=["optimizer.lr=1e-3"])  # agree: both kept
    assert len(load_results(tmp_path).other) == 2
    path = put(tmp_path, "lbam", 2, config=LR | {"seed": 2}, overrides=overrides)
    refused(capsys, tmp_path, path, needle)


NAN = float("nan")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            {"history": [{"epoch": 1, "train_loss": NAN, "train_acc": 0.5}]},
            "history[0]: train_loss=nan is not a",
        ),
        (
            {"history": [{"epoch": 1, "train_loss": 0.3, "train_acc": -0.2}]},
            "history[0]: train_acc=-0.2 is not a",
        ),
        ({"history": [{"epoch": 1, "train_loss": 0.3, "train_acc": 1.5}]}, "train_acc=1.5 is not a fraction"),
        (
            {"history": [{"epoch": 1, "seconds": -3.0}]},
            "history[0]: seconds=-3.0 is not a finite number >= 0",
        ),
        ({"train_seconds": -10.0}, "train_seconds=-10.0 is negative"),
        ({"images_per_second": -1}, "images_per_second=-1 is negative"),
        ({"created_at": "last tuesday"}, "created_at='last tuesday' is not an ISO 8601 time"),
        ({"created_at": "2026-01-01T00:00:00"}, "with its UTC offset"),
    ],
)
def test_impossible_values_are_refused(tmp_path, capsys, change, needle):
    put(tmp_path, "none")
    path = edit(put(tmp_path, "lbam"), **change)
    refused(capsys, tmp_path, path, needle)


def test_a_dirty_commit_is_shown_dirty_and_unverified_data_is_flagged(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    put(tmp_path, "none", commit="0123456789abcdef0123+dirty")
    put(tmp_path, "lbam", commit="0123456789abcdef0123", data_verified=False)
    rc, _, err = run_cli(capsys, "readme", "--results-dir", tmp_path, "--readme", readme)
    assert rc == 0
    text = readme.read_text()
    assert "commit 0123456789ab, 0123456789ab+dirty" in text
    note = "1 run(s) trained on data that differs from its pinned content (dataset.verify=false), e.g. exp/lbam__seed0"
    assert f"**{note}.**" in text and err.strip() == f"lbam.report: warning: {note}"
