"""lbam.report on fixture rows written here: tables (means, sample stds, counts), grouping, failed and corrupt
rows, McNemar, figures, empty results and the README check."""

import contextlib
import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from lbam.report import ReportWarning, main, mcnemar_exact
from lbam.report.rows import group_rows, load_rows, setting_label
from lbam.report.tables import setting_record

N_TEST = 40
CLASSES = ["Platelets", "RBC", "WBC"]


def _targets() -> list[int]:
    return [i % 3 for i in range(N_TEST)]


def write_row(
    runs: Path, experiment="exp", attention="none", seed=0, acc=0.8, profile="quick", correct=None, **extra
):
    """One result row + predictions; `correct` is the set of sample indices predicted right."""
    run_name = f"{attention}_s{seed}_{profile}" + extra.pop("suffix", "")
    targets = _targets()
    correct = set(range(round(acc * N_TEST))) if correct is None else correct
    preds = [t if i in correct else (t + 1) % 3 for i, t in enumerate(targets)]
    row = {
        "experiment": experiment,
        "run_name": run_name,
        "dataset": "bccd",
        "synthetic": False,
        "backbone": "cnn4",
        "attention": attention,
        "attention_kwargs": {},
        "placement": "stage",
        "width_mult": 1.0,
        "image_size": 128,
        "seed": seed,
        "profile": profile,
        "device": "cpu (2 threads, Test CPU)",
        "precision": "32-true",
        "status": "ok",
        "error": None,
        "test_acc": acc,
        "test_balanced_acc": acc - 0.1,
        "test_macro_f1": acc - 0.2,
        "per_class_acc": dict.fromkeys(CLASSES, acc),
        "confusion_matrix": [[5, 1, 0], [1, 20, 1], [0, 2, 10]],
        "class_names": CLASSES,
        "num_classes": 3,
        "params": 1000 if attention == "none" else 1100,
        "attention_params": 0 if attention == "none" else 100,
        "macs": 5_000_000,
        "flops": 10_000_000 if attention == "none" else 10_100_000,
        "epochs": 2,
        "train_seconds": 30.0,
        "images_per_second": 100.0 + seed,
        "n_train": 200,
        "n_test": N_TEST,
        "history": [
            {"epoch": 0, "train_loss": 1.0, "train_acc": 0.5, "val_acc": None},
            {"epoch": 1, "train_loss": 0.7, "train_acc": 0.6 + seed / 100, "val_acc": None},
        ],
        "checkpoint": None,
        "predictions_file": f"{run_name}.preds.csv",
        "commit": "abc1234",
        "torch_version": "2.14.1",
        "created_at": f"2025-01-0{seed + 1}T00:00:00",
        "overrides": ["experiment=" + experiment, f"attention={attention}", f"seed={seed}"],
    }
    row.update(extra)
    out = runs / experiment
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{run_name}.json").write_text(json.dumps(row))
    with (out / f"{run_name}.preds.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "target", "pred"])
        w.writerows([f"img{i:03d}", t, p] for i, (t, p) in enumerate(zip(targets, preds)))
    return row


# (b, c) per seed: LBAM-only-right and none-only-right sample counts; 20 samples right for both.
DISCORDANT = {0: (1, 6), 1: (0, 5), 2: (8, 0)}


@pytest.fixture
def results(tmp_path) -> Path:
    runs = tmp_path / "results" / "runs"
    for seed, (acc_none, acc_lbam) in enumerate([(0.80, 0.85), (0.82, 0.88), (0.84, 0.91)]):
        b, c = DISCORDANT[seed]
        both = set(range(20))
        write_row(
            runs, attention="none", seed=seed, acc=acc_none, correct=both | set(range(20 + b, 20 + b + c))
        )
        write_row(runs, attention="lbam", seed=seed, acc=acc_lbam, correct=both | set(range(20, 20 + b)))
    write_row(runs, attention="lbam", seed=3, status="failed", error="Traceback ...\nRuntimeError: CUDA OOM")
    write_row(runs, attention="lbam", seed=0, acc=0.99, profile="full")
    write_row(runs, attention="lbam", seed=0, acc=0.5, attention_kwargs={"kernel_size": 3}, suffix="_k3")
    (runs / "exp" / "corrupt.json").write_text('{"experiment": "exp", "run_na')
    partial = {"experiment": "exp", "run_name": "partial", "status": "ok"}
    (runs / "exp" / "partial.json").write_text(json.dumps(partial))
    return tmp_path / "results"


def test_mcnemar_matches_hand_computed_values():
    # b=1, c=6: 2 * (C(7,0) + C(7,1)) / 2^7 = 16/128
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    # b=2, c=8: 2 * (1 + 10 + 45) / 1024
    assert mcnemar_exact(2, 8) == pytest.approx(112 / 1024)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0


def test_corrupt_and_partial_rows_are_skipped_with_a_warning_naming_the_file(results):
    with pytest.warns(ReportWarning) as record:
        rows = load_rows(results)
    messages = [str(w.message) for w in record]
    assert any("corrupt.json" in m for m in messages)
    assert any("partial.json" in m and "missing keys" in m for m in messages)
    assert len(rows) == 9
    assert {r["run_name"] for r in rows}.isdisjoint({"partial"})


def test_groups_never_mix_profiles_and_label_ablations(results):
    with pytest.warns(ReportWarning):
        groups = group_rows(load_rows(results))
    assert [(g.profile, [s.label for s in g.settings]) for g in groups] == [
        ("full", ["lbam"]),
        ("quick", ["none", "lbam", "lbam (kernel_size=3)"]),
    ]
    assert (
        setting_label(("lbam", '{"branches": "channel"}', "block"))
        == 'lbam (branches="channel", placement=block)'
    )


def test_runs_differing_in_another_override_stay_apart_and_a_rerun_seed_keeps_the_newest(tmp_path):
    runs = tmp_path / "runs"
    write_row(runs, attention="lbam", seed=0, acc=0.8)
    lr = ["experiment=exp", "attention=lbam", "seed=0", "optimizer.lr=0.1"]
    write_row(runs, attention="lbam", seed=0, acc=0.6, suffix="_lr", overrides=lr)
    write_row(runs, attention="lbam", seed=0, acc=0.9, suffix="_rerun", created_at="2025-02-01T00:00:00")
    with pytest.warns(ReportWarning, match="keeping the newer row only"):
        (group,) = group_rows(load_rows(tmp_path))
    accs = {s.label: [r["test_acc"] for r in s.ok] for s in group.settings}
    assert accs == {"lbam": [0.9], "lbam (optimizer.lr=0.1)": [0.6]}
    assert group.setting("lbam").ok[0]["run_name"].endswith("_rerun")


def test_delta_vs_none_is_paired_over_the_seeds_both_ran(tmp_path):
    runs = tmp_path / "runs"
    write_row(runs, attention="none", seed=0, acc=0.80)
    write_row(runs, attention="none", seed=2, acc=0.60)
    write_row(runs, attention="lbam", seed=0, acc=0.85)
    write_row(runs, attention="lbam", seed=1, acc=0.95)
    (group,) = group_rows(load_rows(tmp_path))
    # seed 0 only: +0.05 (the unpaired difference of means would be 0.90 - 0.70 = +0.20)
    assert setting_record(group, group.setting("lbam"))["delta_acc_vs_none"] == pytest.approx(0.05)
    assert setting_record(group, group.setting("none"))["delta_acc_vs_none"] == pytest.approx(0.0)


def test_tables_have_means_sample_stds_counts_and_failed_runs(results, capsys):
    with pytest.warns(ReportWarning):
        assert main(["tables", "--results-dir", str(results)]) == 0
    frame = pd.read_csv(results / "tables" / "exp.csv")
    quick = frame[frame.profile == "quick"].set_index("setting")
    assert quick.loc["none", "n"] == 3 and quick.loc["lbam", "n"] == 3
    assert quick.loc["none", "test_acc_mean"] == pytest.approx(0.82)
    assert quick.loc["none", "test_acc_std"] == pytest.approx(0.02)  # sample std, ddof=1
    assert quick.loc["lbam", "test_acc_mean"] == pytest.approx(0.88)
    assert quick.loc["lbam", "test_acc_std"] == pytest.approx(0.03)
    assert quick.loc["lbam", "delta_acc_vs_none"] == pytest.approx(0.06)
    assert quick.loc["lbam", "images_per_second"] == pytest.approx(101.0)
    assert quick.loc["lbam", "failed"] == 1  # the failed seed 3 is counted as failed, not averaged
    assert quick.loc["lbam (kernel_size=3)", "n"] == 1
    assert math.isnan(quick.loc["lbam (kernel_size=3)", "test_acc_std"])
    full = frame[frame.profile == "full"]
    assert len(full) == 1 and full.iloc[0]["test_acc_mean"] == pytest.approx(0.99) and full.iloc[0]["n"] == 1

    md = (results / "tables" / "exp.md").read_text()
    assert "| none | 3 | 1,000 | 0 |" in md
    assert "82.00 ± 2.00" in md and "88.00 ± 3.00" in md and "+6.00" in md
    assert "99.00 ± –" in md  # the full-profile row stays alone
    assert "profile **quick**" in md and "profile **full**" in md and "device cpu (2 threads, Test CPU)" in md
    assert "**Failed runs: 1**" in md and "lbam_s3_quick" in md and "RuntimeError: CUDA OOM" in md
    # paired test: per-seed McNemar on predictions joined by id
    assert "s0: b=1 c=6 p=0.125" in md and "s1: b=0 c=5 p=0.0625" in md and "s2: b=8 c=0 p=0.007812" in md
    assert "p < 0.05 in 1/3 seeds (1 favour LBAM, 0 the baseline)" in md
    assert "seed(s) 1: fewer than 6 discordant samples" in md
    assert "| lbam | none | 3 | +6.00 ± 1.00 |" in md
    # the kernel_size=3 ablation has a single seed: said plainly
    assert "only 1 seed (< 3): too few to conclude anything" in md
    tex = (results / "tables" / "exp.tex").read_text()
    assert r"\begin{tabular}" in tex and r"82.00 $\pm$ 2.00" in tex


def test_synthetic_dataset_is_marked(tmp_path):
    write_row(tmp_path / "runs", dataset="synthetic_bccd", synthetic=True)
    assert main(["tables", "--results-dir", str(tmp_path)]) == 0
    assert "synthetic_bccd (SYNTHETIC)" in (tmp_path / "tables" / "exp.md").read_text()


def test_every_figure_is_written_and_non_empty(results):
    readme = results.parent / "README.md"
    readme.write_text("# x\n<!-- results:start -->\n<!-- results:end -->\n")
    with pytest.warns(ReportWarning):
        assert main(["--results-dir", str(results), "--readme", str(readme)]) == 0
    figures = sorted(p.name for p in (results / "figures").iterdir())
    kinds = ("acc_vs_params", "acc_bar", "curves", "confusion")
    assert figures == sorted(f"exp_{profile}_{k}.png" for profile in ("full", "quick") for k in kinds)
    for name in figures:
        data = (results / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "exp_quick_acc_bar.png" in readme.read_text()


@pytest.mark.parametrize("content", [None, "not json"])
def test_no_usable_results_exit_non_zero_with_a_message(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "runs" / "e").mkdir(parents=True)
        (tmp_path / "runs" / "e" / "bad.json").write_text(content)
    with pytest.warns(ReportWarning) if content else contextlib.nullcontext():
        assert main(["--results-dir", str(tmp_path)]) == 1
    assert "no usable result rows" in capsys.readouterr().err


def test_readme_check_passes_after_update_and_fails_after_hand_edit(results, capsys):
    readme = results.parent / "README.md"
    readme.write_text("# lbam\n\nintro\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\n## Layout\n")
    args = ["readme", "--results-dir", str(results), "--readme", str(readme)]
    with pytest.warns(ReportWarning):
        assert main([*args, "--check"]) == 1
        assert main(args) == 0
        assert main([*args, "--check"]) == 0
    text = readme.read_text()
    assert text.startswith("# lbam\n\nintro\n\n<!-- results:start -->\n") and text.endswith(
        "<!-- results:end -->\n\n## Layout\n"
    )
    assert "88.00 ± 3.00" in text
    # Figures are linked only once drawn.
    assert "figures/" not in text
    with pytest.warns(ReportWarning):
        assert main(["figures", "--results-dir", str(results)]) == 0
        assert main(args) == 0
    text = readme.read_text()
    assert "(results/figures/exp_quick_acc_bar.png)" in text
    assert (
        "wall time (sum of training time over runs): 4 min 00 s" in text
    )  # 8 quick rows (one failed) × 30 s
    assert "command: `python -m lbam.train experiment=exp`" in text
    capsys.readouterr()
    readme.write_text(text.replace("88.00 ± 3.00", "89.00 ± 3.00"))
    with pytest.warns(ReportWarning):
        assert main([*args, "--check"]) == 1
    out = capsys.readouterr().out
    assert "stale" in out and "89.00 ± 3.00" in out and "88.00 ± 3.00" in out
