"""Official results are the declared sweeps only (issue #22): a row is official when it is a point of its
experiment file's sweep (hydra.sweeper.params, sweeps.grids, sweeps.settings, expanded by Hydra's parser);
other runs go to the tables' "Other runs", never into the README block, and the provenance names only the
multiruns that ran, with the values present."""

import shutil
from pathlib import Path

import pytest
from report_rows import declare, one_error_line, put, run_cli, vouch

from lbam.config import run_name
from lbam.report.declared import declared_sweep
from lbam.report.rows import load_results
from lbam.results import load_row, read_predictions, write_row

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "<!-- results:start -->\n<!-- results:end -->\n"


def block(readme: Path) -> str:
    text = readme.read_text()
    return text[text.index("results:start") : text.index("results:end")]


def test_the_experiment_files_declare_their_sweeps():
    quick = declared_sweep("embodiment1_quick")
    assert sorted(quick.points) == sorted(
        [(a, 0, ()) for a in ("none", "se", "cbam", "bam", "eca", "lbam")]
        + [("lbam", 0, ("attention.residual=false",))]
    )
    curve = declared_sweep("embodiment1_curve")
    assert ("se", 59, ("dataset.train_subset=25",)) in curve.points  # a grid on top of the sweeper params
    setting = ("attention.residual=false", "dataset.train_subset=100")  # a grid and a setting on top
    assert ("lbam", 24, setting) in curve.points and ("se", 24, setting[1:]) in curve.points
    assert ("se", 24, ("dataset.train_subset=400",)) not in curve.points  # 400 crops: seeds 0-6 only
    assert ("se", 0, ("dataset.train_subset=null",)) in curve.points  # Hydra's null, as relevant_overrides
    assert ("se", 0, ("dataset.train_subset=25", "trainer.max_epochs=2")) not in curve.points
    assert declared_sweep("no_such_experiment") is None


def test_every_committed_row_is_official():
    res = load_results(ROOT / "results")
    assert len(res.frame) == len(list((ROOT / "results" / "runs").glob("*/*.json"))) and len(res.other) == 0


def _scratch(results: Path, source: Path, attention: str, seed: int, overrides: list[str]) -> Path:
    """A copy of a committed run as another run (other overrides or seed), as a trial sweep would write."""
    row = load_row(source)
    preds = read_predictions(row, source)
    row.overrides, row.seed = overrides, seed
    row.run_name = row.predictions_file = run_name(attention, overrides, seed)
    row.predictions_file += ".preds.csv"
    row.config = {**row.config, "seed": seed}  # a scratch run's own config, which states its overrides
    for o in overrides:
        (group, key), value = o.split("=")[0].split("."), int(o.split("=")[1])
        row.config[group] = {**row.config[group], key: value}
    return write_row(vouch(row), preds, results)


def test_a_scratch_sweep_beside_the_official_runs_leaves_the_readme_alone(tmp_path, capsys):
    runs = tmp_path / "runs" / "embodiment1_quick"
    shutil.copytree(ROOT / "results" / "runs" / "embodiment1_quick", runs)
    readme = tmp_path / "README.md"
    readme.write_text(BLOCK)
    assert run_cli(capsys, "--results-dir", tmp_path, "--readme", readme)[0] == 0
    before = block(readme)
    pairs = (tmp_path / "tables" / "embodiment1_quick_pairs.csv").read_bytes()
    # The 2-epoch trial sweep and an undeclared seed in the official context.
    for attention in ("se", "lbam"):
        _scratch(tmp_path, runs / f"{attention}__seed0.json", attention, 0, ["trainer.max_epochs=2"])
    _scratch(tmp_path, runs / "none__seed0.json", "none", 1, [])
    rc, out, err = run_cli(capsys, "readme", "--check", "--results-dir", tmp_path, "--readme", readme)
    assert (rc, err) == (0, "") and "up to date" in out
    assert "max_epochs" not in before and "(7 runs, " in before
    assert run_cli(capsys, "tables", "--results-dir", tmp_path)[0] == 0
    md = (tmp_path / "tables" / "embodiment1_quick.md").read_text()
    other = md[md.index("## Other runs: 3") :]
    assert "#### overrides: trainer.max_epochs=2" in other and "| se " in other and "| none " in other
    assert "trainer.max_epochs=2" not in md[: md.index("## Other runs")]
    assert (tmp_path / "tables" / "embodiment1_quick_pairs.csv").read_bytes() == pairs  # verdicts untouched


def test_an_experiment_without_a_file_is_other_runs_only(tmp_path, capsys):
    put(tmp_path, "none", experiment="scratch")
    put(tmp_path, "lbam", experiment="scratch")
    put(tmp_path, "none", experiment="embodiment1_quick")
    readme = tmp_path / "README.md"
    readme.write_text(BLOCK)
    rc, _, err = run_cli(capsys, "--results-dir", tmp_path, "--readme", readme, "--experiments-dir", tmp_path)
    assert rc == 0, err
    assert "scratch" not in block(readme) and "embodiment1_quick" in block(readme)
    md = (tmp_path / "tables" / "scratch.md").read_text()
    assert "No official runs" in md and "## Other runs: 2" in md and "has no file" in md
    assert not (tmp_path / "tables" / "scratch.csv").exists()
    assert not list((tmp_path / "figures").glob("scratch*"))


def test_the_provenance_names_only_the_multiruns_that_ran(tmp_path, capsys, monkeypatch):
    declare(
        monkeypatch,
        "exp",
        {"attention": "none,se,lbam", "seed": "range(0,6)"},
        grids=["", "dataset.train_subset=25 seed=range(6,9)"],
        settings=["attention=lbam attention.residual=false"],
    )
    readme = tmp_path / "README.md"

    def provenance() -> str:
        readme.write_text(BLOCK)
        assert run_cli(capsys, "readme", "--results-dir", tmp_path, "--readme", readme)[0] == 0
        line = next(x for x in block(readme).splitlines() if x.startswith("Provenance"))
        return line.split(" summed over runs · ")[1].split(" [full tables]")[0]  # the links follow

    for seed in range(3):
        put(tmp_path, "none", seed)
        put(tmp_path, "lbam", seed)
        put(tmp_path, "lbam", seed, overrides=["attention.residual=false"])
    assert provenance() == (
        "`python -m lbam.train -m experiment=exp attention=none,lbam seed=0,1,2`, "
        "again with `attention=lbam attention.residual=false`."
    )
    (tmp_path / "runs" / "exp" / "none__seed2.json").unlink()
    put(tmp_path, "none", 6, overrides=["dataset.train_subset=25"])
    put(tmp_path, "lbam", 3, overrides=["attention.residual=false"])
    assert provenance() == (
        "`python -m lbam.train -m experiment=exp attention=none,lbam seed=0,1,2` (5 of 6 runs); "
        "`python -m lbam.train -m experiment=exp attention=lbam seed=0,1,2,3 attention.residual=false`; "
        "`python -m lbam.train -m experiment=exp attention=none seed=6 dataset.train_subset=25`."
    )


@pytest.mark.parametrize(
    ("params", "grids", "needle"),
    [
        ({"seed": "interval(0,1)"}, [""], "is not a list of values"),
        ({"seed": "0"}, ["seed=range("], "cannot parse"),
        ({"seed": "a,b"}, [""], "seed='a' is not an integer"),
        ({"seed": "0"}, ["x='a"], "cannot split"),
        (
            {"seed": "range(0,1000)", "attention": "none,se", "x": "range(0,100)"},
            [""],
            "declares 200000 runs",
        ),
        ({"seed": "range(0,1000000000)"}, [""], "has more than 100000 values"),
    ],
)
def test_an_unreadable_declared_sweep_is_one_line(tmp_path, capsys, monkeypatch, params, grids, needle):
    declare(monkeypatch, "exp", params, grids=grids)
    put(tmp_path, "none")
    rc, _, err = run_cli(capsys, "tables", "--results-dir", tmp_path)
    assert rc == 1 and not (tmp_path / "tables").exists()
    one_error_line(err, "<declared in the test: exp>", needle)
