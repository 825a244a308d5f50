"""Your runs beside the committed reference (`python -m lbam.report`, `make plots`), and what a speed measured
under load is worth (lbam.report.load), on crafted rows."""

import math

import pandas as pd
import pytest
from report_rows import declare, put, run_cli

from lbam.report.load import load_state, load_summary, speed_cell, speeds
from lbam.report.rows import load_results
from lbam.report.tables import summarize, table


def frame(*rows) -> pd.DataFrame:
    cols = ["device", "concurrent_jobs", "world_size", "load_average", "cpu_count", "images_per_second"]
    return pd.DataFrame([dict(zip(cols, r)) | {"status": "ok"} for r in rows])


def test_a_run_is_loaded_only_when_others_compete_for_the_cores():
    two = "cpu (2 threads, X)"
    df = frame(
        (two, 1, 1, 1.7, 2, 400.0),  # its own two threads: quiet
        (two, 1, 1, 3.5, 2, 200.0),  # 1.5 tasks beyond its own on 2 CPUs: loaded
        (two, 1, 1, None, None, 300.0),  # an older row: not recorded
        ("cpu (1 threads, X)", 2, 1, 2.9, 2, 250.0),  # two runs sharing the machine explain 2: quiet
        (two, 1, 1, 4.0, 16, 500.0),  # beyond its own, but spare cores: quiet
        ("cuda: H200", 4, 1, 9.0, 16, 5000.0),  # a GPU run's feeding processes, spare cores: quiet
        ("cpu (1 threads, X)", 1, 1, 3.0, None, 100.0),  # CPU count unknown: beyond its own + 1 is loaded
    )
    assert list(load_state(df)) == ["quiet", "loaded", "not recorded", "quiet", "quiet", "quiet", "loaded"]
    summary = load_summary(df)
    assert "1 of 7 runs: not recorded" in summary and "2 of 7 runs loaded" in summary


def test_speeds_leave_loaded_runs_out_or_say_the_load():
    two = "cpu (2 threads, X)"
    mixed = frame((two, 1, 1, 1.8, 2, 400.0), (two, 1, 1, 3.9, 2, 100.0), (two, 1, 1, None, None, 300.0))
    assert speeds(mixed) == (350.0, pytest.approx(math.nan, nan_ok=True))  # the loaded run left out
    loaded = frame((two, 1, 1, 3.9, 2, 80.0), (two, 1, 1, 4.1, 2, 90.0))
    ips, load = speeds(loaded, "median")
    assert (ips, round(load, 1)) == (85.0, 4.0) and speed_cell(ips, load) == "85 (load 4.0)"
    assert load_summary(frame((two, 1, 1, None, None, 1.0))) == "load not recorded"


def test_tables_mark_a_speed_measured_under_load(tmp_path):
    put(tmp_path, "none", 0, load_average=1.5, cpu_count=2, images_per_second=400.0)
    put(tmp_path, "none", 1, load_average=3.9, cpu_count=2, images_per_second=100.0)
    put(tmp_path, "lbam", 0, load_average=3.9, cpu_count=2, images_per_second=80.0)
    put(tmp_path, "se", 0, images_per_second=300.0)  # no load recorded
    res = load_results(tmp_path)
    t = table(summarize(res.other, res.runs)).set_index("setting")
    assert t.loc["none", "images/s"] == "400" and t.loc["none", "load (1 min)"] == "2.7 (1 of 2 runs loaded)"
    assert t.loc["lbam", "images/s"] == "80 (load 3.9)" and t.loc["se", "load (1 min)"] == "not recorded"


def _reference(root, monkeypatch):
    """A reference of three seeds of none and lbam (balanced accuracy from 96.67 to 100 %)."""
    declare(monkeypatch, "exp", {"attention": "none,lbam", "seed": "0,1,2"})
    for seed, wrong in enumerate([set(), {1}, {1, 2}]):
        put(root / "ref", "none", seed, wrong)
        put(root / "ref", "lbam", seed, wrong, load_average=1.5, cpu_count=2, images_per_second=300.0)


def test_plots_show_your_runs_beside_the_reference(tmp_path, monkeypatch, capsys):
    _reference(tmp_path, monkeypatch)
    mine = tmp_path / "local"
    put(mine, "none", 0, {1})  # within the reference's range
    put(mine, "lbam", 0, {1, 2, 3, 4, 5}, load_average=3.8, cpu_count=2, images_per_second=90.0)  # below it
    put(mine, "lbam", 1, {4, 5}, load_average=3.6, cpu_count=2, images_per_second=100.0)
    put(mine, "se", 0)  # no reference for this setting
    rc, out, err = run_cli(capsys, "--results-dir", mine, "--reference-dir", tmp_path / "ref")
    assert rc == 0, err
    assert "# Your runs beside the reference" in out and not (tmp_path / "ref" / "tables").exists()
    got = pd.read_csv(mine / "tables" / "vs_reference.csv").set_index("setting")
    assert (mine / "tables" / "vs_reference.md").read_text() in out  # printed as written
    none, lbam, se = got.loc["none"], got.loc["lbam"], got.loc["se"]
    assert (none["ref_n"], none["n"], none["within"], none["config"]) == (3, 1, "yes", "same")
    assert none["delta"] == pytest.approx(none["mean"] - none["ref_mean"])
    assert lbam["n"] == 2 and lbam["within"] == "no (1 of 2 runs)" and lbam["delta"] < 0
    assert lbam["ref_ips"] == 300.0 and lbam["ips"] == 95.0 and lbam["ips_load"] == pytest.approx(3.7)
    assert se["within"] == "no reference run" and se["ref_n"] == 0
    assert "95 (load 3.7)" in out and "2 of 4 runs loaded" in out  # your speeds say their load


def test_one_reference_seed_says_same_or_differs_and_configs_are_compared(tmp_path, monkeypatch, capsys):
    declare(monkeypatch, "exp", {"attention": "none", "seed": "0"})
    put(tmp_path / "ref", "none", 0, {1})
    config = {"experiment_name": "exp", "profile": "quick", "seed": 0, "trainer": {"max_epochs": 1}}
    put(tmp_path / "local", "none", 0, {1}, config=config)
    rc, _, _ = run_cli(
        capsys, "compare", "--results-dir", tmp_path / "local", "--reference-dir", tmp_path / "ref"
    )
    row = pd.read_csv(tmp_path / "local" / "tables" / "vs_reference.csv").iloc[0]
    assert rc == 0 and row["within"] == "same" and row["config"] == "differs: trainer.max_epochs 1 vs None"
    put(tmp_path / "local", "none", 0, {1, 2}, config=config)  # replaces the row: one seed, now another value
    run_cli(capsys, "compare", "--results-dir", tmp_path / "local", "--reference-dir", tmp_path / "ref")
    row = pd.read_csv(tmp_path / "local" / "tables" / "vs_reference.csv").iloc[0]
    assert row["within"] == "1 reference seed: differs"


def test_plots_without_runs_of_yours_say_so_and_write_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LBAM_ROOT", str(tmp_path))
    rc, out, _ = run_cli(capsys)
    assert rc == 0 and "no runs of yours under" in out and str(tmp_path / "results" / "local") in out
    assert not list(tmp_path.iterdir())


def test_reference_without_a_readme_is_fine_outside_a_checkout(tmp_path, monkeypatch, capsys):
    """An installed wheel: the project root is a folder without README.md; the block is skipped with a line."""
    monkeypatch.setenv("LBAM_ROOT", str(tmp_path))
    declare(monkeypatch, "exp", {"attention": "none", "seed": "0"})
    put(tmp_path / "results", "none", 0)
    rc, out, err = run_cli(capsys, "tables", "--reference")
    assert rc == 0 and (tmp_path / "results" / "tables" / "exp.md").is_file(), err
    rc, out, err = run_cli(capsys, "readme", "--check")
    assert rc == 0 and "README.md: not found, README results block skipped" in out, err
    rc, _, err = run_cli(capsys, "readme", "--readme", tmp_path / "nope.md")  # named, so it must exist
    assert rc == 1 and "cannot read" in err
