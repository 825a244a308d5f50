"""A bridge experiment (``analysis.bridge``) from crafted rows: its steps are groups of their own, set side by side
with the first step's verdict held against each later one, in the tables, the README block and a figure."""

import pandas as pd
import pytest

from lbam.report import main
from lbam.report.bridge import bridges, holds, verdict_table
from lbam.report.rows import load_results
from tests.report_rows import declare, put

A = {
    "noninferiority_margin": 0.01,
    "alpha": 0.05,
    "curve": None,
    "primary": None,
    "bridge": "dataset.image_size",
}
N = 90  # test crops: 30 per class, 4 per smear


@pytest.fixture(autouse=True)
def sweep(monkeypatch):
    declare(
        monkeypatch, "br", {"attention": "none,bam,lbam", "dataset.image_size": "32,64", "seed": "range(0,4)"}
    )


def write(tmp_path, wrong_of):
    """``wrong_of(attention, size, seed)`` -> the test crops (indices) that run predicts wrong."""
    for size in (32, 64):
        for att in ("none", "bam", "lbam"):
            for seed in range(4):
                ov = [f"dataset.image_size={size}"]
                put(tmp_path, att, seed, wrong_of(att, size, seed), ov, experiment="br", n=N, image_size=size,
                    analysis=A, profile="curve", load_average=1.5)  # fmt: skip


def test_holds_follows_the_plans_rule():
    assert holds("equivalent", "equivalent") == "holds"
    assert holds("inconclusive", "inconclusive") == "holds"
    assert holds("equivalent", "differ") == "changes (equivalent → differ)"
    assert holds("equivalent", "inconclusive") == "undetermined"
    assert holds("a/b disagree", "a/b disagree") == "undetermined"
    assert holds("at the threshold", "equivalent") == "undetermined"


def test_steps_side_by_side_in_tables_readme_and_figure(tmp_path, capsys):
    # At 32 px every setting makes the same errors (Δ = 0: equivalent); at 64 px lbam misses 13 more crops, spread over the smears,
    # than the others on every seed (Δ ≈ −13 pp: differ), bam still equals none.
    write(tmp_path, lambda att, size, seed: set(range(seed)) | (set(range(2, 90, 7)) if att == "lbam" and size == 64 else set()))  # fmt: skip
    res = load_results(tmp_path)
    assert bridges(res) == ["br"]
    table, curve = verdict_table(res, "br")
    assert curve == ""  # no learning curve here
    by = table.set_index("Δ = A − B")
    assert "**equivalent**" in by.loc["lbam − none", "image_size 32"]
    assert "**differ**" in by.loc["lbam − none", "image_size 64"]
    assert by.loc["lbam − none", "image_size 64: 32's verdict"] == "changes (equivalent → differ)"
    assert by.loc["bam − none", "image_size 64: 32's verdict"] == "holds"
    assert list(by.index) == ["lbam − none", "lbam − bam", "bam − none"]  # one line per comparison
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert main(["--results-dir", str(tmp_path), "--readme", str(readme), "--experiments-dir", str(tmp_path / "e")]) == 0  # fmt: skip
    block = readme.read_text()
    assert (
        block.count("#### br") == 1 and "steps of dataset.image_size" in block
    )  # one section, not one per step
    assert "changes (equivalent → differ)" in block and "| 64 " in block and "1.5" in block  # the load
    assert "[Δ per step](./figures/br_bridge.png)" in block
    assert (tmp_path / "figures" / "br_bridge.png").stat().st_size > 10_000
    md = (tmp_path / "tables" / "br.md").read_text()
    assert md.index("## Steps side by side") < md.index("## br: bccd")  # then each step's own tables
    pooled = tmp_path / "tables" / "br_pooled.csv"
    assert not pooled.exists() or pd.read_csv(pooled).empty  # no pooled test without primary sizes
    capsys.readouterr()
