"""The report's figures on crafted rows written through lbam.results: training curves (a failed run, a run that
did not learn and a run without history are drawn or named; steps for a step budget), confusion matrices summed
over seeds, the cost figure's scale bar and error bars, the learning curve's axis, honest n labels (no '±' where
a group has one seed), and the links and per-class recall table in the tables file."""

import statistics

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.container import ErrorbarContainer

from lbam.metrics import classification_metrics, confusion_matrix
from lbam.report import main
from lbam.report.cost import MARKER_PT, offsets
from lbam.report.figstyle import RED
from lbam.report.figures import PLOTS, figure_paths, n_by_size
from lbam.report.rows import groups, load_results
from lbam.report.training import steps_of
from lbam.results import Row, write_row
from tests.report_rows import declare, vouch

CLASSES = ["WBC", "RBC", "Platelets"]
TARGETS = [0] * 5 + [1] * 40 + [2] * 15  # WBC is the smallest class: one error = 100 / 5 / 3 = 6.67 pp
CURVE = {"curve": "dataset.train_subset", "noninferiority_margin": 0.01, "alpha": 0.05}
WRONG = {("none", 0): 0, ("none", 1): 1, ("none", 2): 2, ("se", 0): 1, ("se", 1): 1, ("se", 2): 0}


def history(epochs: int, images: int, rising: bool = False, val: bool = False) -> list[dict]:
    loss = [0.1 * (e + 1) if rising else 1.0 / (e + 1) for e in range(epochs)]
    return [
        {"epoch": e + 1, "train_loss": loss[e], "train_acc": min(0.5 + 0.1 * e, 1.0),
         "val_acc": 0.6 + 0.05 * e if val else None, "seconds": 1.0, "images": images}
        for e in range(epochs)
    ]  # fmt: skip


def put(root, experiment, attention, seed, wrong=0, status="ok", overrides=(), **kw):
    """One row; the first ``wrong`` WBC test samples are predicted as RBC."""
    preds = [1 if i < wrong else t for i, t in enumerate(TARGETS)]
    ids = [f"img{i}" for i in range(len(TARGETS))]
    name = "__".join([attention, *overrides, f"seed{seed}"])
    row = Row(
        experiment=experiment, run_name=name, profile=kw.pop("profile", "quick"), seed=seed,
        overrides=list(overrides), dataset="bccd", synthetic=False, backbone="cnn4", attention=attention,
        attention_kwargs={}, placement="stage", width_mult=0.5, image_size=32, status=status,
        class_names=CLASSES, params=1000, attention_params={"none": 0, "se": 40, "lbam": 30}[attention],
        macs=500, flops={"none": 1_000_000, "se": 1_100_000, "lbam": 1_200_000}[attention], n_train=60,
        n_test=len(TARGETS), train_seconds=4.0, images_per_second=100.0 + 10 * seed,
        device="cpu (2 threads, Test CPU)", created_at="2026-01-01T00:00:00+00:00", epochs=4, steps=40,
        history=history(4, 60), datamodule={"batch_size": 8},
    )  # fmt: skip
    for k, v in kw.items():
        setattr(row, k, v)
    if status == "ok":
        cm = confusion_matrix(torch.tensor(TARGETS), torch.tensor(preds), 3)
        for k, v in classification_metrics(cm, CLASSES).items():
            setattr(row, k, v)
    else:
        row.error = row.error or "RuntimeError: boom"
    write_row(vouch(row), list(zip(ids, TARGETS, preds)) if status == "ok" else None, root)


@pytest.fixture(scope="module", autouse=True)
def sweeps():
    """The made-up experiments declare the sweeps their rows come from (else they are "other runs")."""
    with pytest.MonkeyPatch.context() as mp:
        every = {"attention": "none,se,cbam,bam,eca,lbam", "seed": "range(0,10)"}
        declare(mp, "multi", every)
        declare(mp, "single", every)
        declare(mp, "curve", every | {"dataset.train_subset": "20,null"})
        yield


@pytest.fixture(scope="module")
def report(tmp_path_factory, sweeps):
    """Three experiments, reported once: `multi` (3 seeds, a failed run with history, a failed run without, a
    run whose loss rises, 2 concurrent jobs), `single` (one seed per setting), `curve` (a step budget)."""
    root = tmp_path_factory.mktemp("results")
    for (attention, seed), wrong in WRONG.items():
        hist = history(4, 60, rising=(attention, seed) == ("none", 2), val=True)
        put(root, "multi", attention, seed, wrong, concurrent_jobs=2, history=hist)
    for seed in range(3):
        put(root, "multi", "lbam", seed, seed, concurrent_jobs=2)
    put(root, "multi", "lbam", 3, status="failed", history=history(2, 60, rising=True),
        error="NonFiniteLossError: non-finite training loss (nan) at epoch 3")  # fmt: skip
    put(root, "multi", "se", 4, status="failed", history=[])
    put(root, "single", "none", 0, 1)
    put(root, "single", "lbam", 0, 0, history=[{"epoch": "x"}, 5, {"train_loss": 1.0}, *history(3, 60)])
    for seed in range(2):  # batch 8: 20 crops = 3 batches an epoch, 10 epochs; 60 crops = 8 batches, 4 epochs
        for size, epochs, images in ((20, 10, 20), ("null", 4, 60)):
            ov = [f"dataset.train_subset={size}"]
            for attention in ("none", "lbam"):
                put(root, "curve", attention, seed, seed, overrides=ov, profile="curve", analysis=CURVE,
                    epochs=epochs, steps=30, history=history(epochs, images))  # fmt: skip
    readme = root / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert (
        main(["--results-dir", str(root), "--readme", str(readme), "--experiments-dir", str(root / "e")]) == 0
    )
    return root, load_results(root)


def figure(report, experiment: str, kind: str):
    _, res = report
    g = next(g for e, _, g in groups(res.frame) if e == experiment)
    return PLOTS[kind](g, res)


def texts(fig) -> list[str]:
    """Every string a reader sees: titles, axis and tick labels, legends, annotations."""
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def test_every_figure_is_written_and_linked_from_the_tables_file(report):
    root, res = report
    kinds = {
        "multi": ["training_curves", "confusion_matrices", "cost_vs_accuracy"],
        "single": ["training_curves", "confusion_matrices", "cost_vs_accuracy"],
        "curve": ["learning_curve", "training_curves", "confusion_matrices", "cost_vs_accuracy"],
    }
    assert sorted((e, k) for e, _, _, k, _ in figure_paths(res)) == sorted(
        (e, k) for e, ks in kinds.items() for k in ks
    )
    for experiment, ks in kinds.items():
        md = (root / "tables" / f"{experiment}.md").read_text()
        for kind in ks:
            path = root / "figures" / f"{experiment}_{kind}.png"
            assert path.stat().st_size > 5000, path
            assert f"](../figures/{path.name})" in md
    assert not list((root / "figures").glob("*acc_vs_params*"))  # replaced by the cost figure
    readme = (root / "README.md").read_text()
    assert "[cost vs accuracy](./figures/multi_cost_vs_accuracy.png)" in readme


def test_per_class_recall_table_is_mean_and_sample_std_over_seeds(report):
    root, _ = report
    md = (root / "tables" / "multi.md").read_text()
    table = md[md.index("Recall per class") :]
    assert "Test samples per class: WBC 5, RBC 40, Platelets 15." in table
    wbc = [100 * (5 - WRONG["none", s]) / 5 for s in range(3)]  # 100, 80, 60
    line = next(ln for ln in table.splitlines() if ln.startswith("| default") and "| none " in ln)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "3"  # n: the ok seeds
    assert cells[3] == f"{statistics.mean(wbc):.2f} ± {statistics.stdev(wbc):.2f}"
    assert cells[4] == "100.00 ± 0.00"
    single = (root / "tables" / "single.md").read_text()
    one = next(ln for ln in single.splitlines() if ln.startswith("| default") and "| none " in ln)
    assert "| 1 " in one and "80.00" in one and "±" not in one  # one seed: the mean alone


@pytest.mark.parametrize("kind", ["training_curves", "confusion_matrices", "cost_vs_accuracy"])
def test_a_single_seed_group_never_shows_plus_minus(report, kind):
    fig = figure(report, "single", kind)
    found = texts(fig)
    plt.close(fig)
    assert not [t for t in found if "±" in t]
    assert any("n = 1 seed" in t for t in found)
    assert any("single: bccd · profile quick · cpu · cnn4 32px" in t for t in found)  # rows.title


def test_a_group_of_three_seeds_says_plus_minus_std(report):
    fig = figure(report, "multi", "cost_vs_accuracy")
    found = texts(fig)
    plt.close(fig)
    assert any("mean ± sample std over seeds" in t for t in found)
    assert any("n = 3 seeds per setting" in t for t in found)


def test_failed_and_suspect_runs_are_drawn_in_red_and_named(report):
    fig = figure(report, "multi", "training_curves")
    found = "\n".join(texts(fig))
    assert "seed 3: NonFiniteLossError" in found  # failed, with its history
    assert "seed 4: RuntimeError (no history)" in found  # failed, nothing to draw: named
    assert "seed 2: loss did not fall" in found  # ok, but it did not learn
    assert "seed 0:" not in found and "seed 1:" not in found
    assert [a.get_xlabel() for a in fig.axes if a.get_xlabel()] == ["epoch"] * 3
    red = [(ln, ax) for ax in fig.axes for ln in ax.get_lines() if ln.get_color() == RED]
    # lbam's failed run: dashed, its two epochs of rising loss; none's seed 2: solid; each in loss and accuracy
    failed = [ln for ln, _ in red if ln.get_linestyle() == "--"]
    assert len(failed) == 2 and list(failed[0].get_xdata()) == [1, 2]
    assert list(failed[0].get_ydata()) == pytest.approx([0.1, 0.2])
    assert len([ln for ln, _ in red if ln.get_linestyle() == "-"]) == 2
    plt.close(fig)


def test_a_step_budget_is_plotted_against_optimiser_steps(report):
    _, res = report
    fig = figure(report, "curve", "training_curves")
    assert {a.get_xlabel() for a in fig.axes if a.get_xlabel()} == {"optimiser step"}
    xs = [ln.get_xdata() for ax in fig.axes for ln in ax.get_lines() if len(ln.get_xdata())]
    assert max(max(x) for x in xs) == 30  # the budget, whatever the epoch count
    plt.close(fig)
    small = res.runs[int(res.frame.query("experiment == 'curve' and x == 20")["run"].iloc[0])].row
    epochs = pd.Series(range(1, 11))
    assert list(steps_of(small, epochs, pd.Series([20] * 10))) == [3 * e for e in range(1, 11)]
    whole = res.runs[int(res.frame.query("experiment == 'curve' and whole")["run"].iloc[0])].row
    assert list(steps_of(whole, epochs[:4], pd.Series([60] * 4))) == [8, 16, 24, 30]  # capped at the budget
    whole.datamodule = None  # no batch size recorded: steps / epochs per epoch
    assert list(steps_of(whole, epochs[:4], pd.Series([60] * 4))) == [7.5, 15, 22.5, 30]


def test_confusion_matrices_sum_seeds_and_normalise_per_true_class(report):
    fig = figure(report, "multi", "confusion_matrices")
    ax = next(a for a in fig.axes if a.get_title().startswith("none"))
    cells = {t.get_text() for t in ax.texts}
    wrong = sum(WRONG["none", s] for s in range(3))  # 3 WBC predicted as RBC out of 15
    assert f"{100 * (15 - wrong) / 15:.1f}%\n{15 - wrong}" in cells
    assert f"{100 * wrong / 15:.1f}%\n{wrong}" in cells
    assert "100.0%\n120" in cells  # RBC: 40 per seed
    assert ax.get_title() == "none\nn = 3 seeds"  # the failed runs are in no matrix
    plt.close(fig)


def test_cost_figure_has_three_panels_a_scale_bar_and_error_bars_only_for_several_seeds(report):
    fig = figure(report, "multi", "cost_vs_accuracy")
    axes = [a for a in fig.axes if a.get_xlabel()]
    labels = [a.get_xlabel() for a in axes]
    assert labels[0].startswith("attention parameters") and labels[1].startswith("FLOPs")
    assert "images/s" in labels[2] and "cpu (2 threads, Test CPU), eager" in labels[2]
    assert "shared by up to 2 concurrent jobs" in labels[2]
    step = 100 / 5 / 3
    for ax in axes:
        assert f"1 error in WBC (5 test)\n= {step:.2f} pp" in [t.get_text() for t in ax.texts]
        low, high = ax.get_ylim()
        assert high - low >= 8 * step and high <= 100 + step  # one error never fills the axis
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 3 and all(c.has_yerr for c in bars)
    plt.close(fig)
    fig = figure(report, "single", "cost_vs_accuracy")
    bars = [c for a in fig.axes for c in a.containers if isinstance(c, ErrorbarContainer)]
    assert bars and not any(c.has_yerr or c.has_xerr for c in bars)
    plt.close(fig)


def test_learning_curve_legend_says_which_n_goes_with_which_size():
    counts = pd.Series([60, 25, 7, 7], index=[25.0, 100.0, 400.0, 4001.0])
    assert n_by_size(counts) == "n = 60 at 25, 25 at 100, 7 at 400 and 4001"
    assert n_by_size(pd.Series([3, 5, 3], index=[10.0, 20.0, 30.0])) == "n = 3 at 10 and 30, 5 at 20"


def test_cost_figure_spreads_markers_that_share_a_column(report):
    fig = figure(report, "multi", "cost_vs_accuracy")
    ax = next(a for a in fig.axes if "images/s" in a.get_xlabel())
    lines = [c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert [list(line.get_xdata()) for line in lines] == [[110.0]] * 3  # every setting: 100, 110, 120 img/s
    fig.canvas.draw()
    drawn = sorted(line.get_transform().transform(line.get_xydata())[0][0] for line in lines)
    assert np.diff(drawn).min() >= MARKER_PT * fig.dpi / 72  # a marker apart (display units are pixels)
    assert all(low < x < high for x in drawn for low, high in [ax.get_window_extent().intervalx])
    plt.close(fig)
    np.testing.assert_allclose(offsets(np.array([0.0, 0.0, 100.0, np.nan]), 200.0), [-4.55, 4.55, 0, 0])


def test_learning_curve_reads_small_and_large_sizes_on_a_logit_axis(report):
    fig = figure(report, "curve", "learning_curve")
    ax = fig.axes[0]
    assert ax.get_yscale() == "logit" and "logit scale" in ax.get_ylabel()
    assert "mean ± sample std over seeds" in ax.get_ylabel()
    assert ax.get_legend().get_title().get_text() == "ok seeds per setting: n = 2 at every size"
    low, high = ax.get_ylim()
    for c in (c for c in ax.containers if isinstance(c, ErrorbarContainer)):  # every mean and bar end inside
        assert all(low < y < high for y in c.lines[0].get_ydata())
        assert all(low < y < high for seg in c.lines[2][0].get_segments() for _, y in seg)
    plt.close(fig)
