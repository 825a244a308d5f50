"""lbam.report on fixture rows written here through lbam.results: validation, grouping, seed statistics,
fair pairing, Holm, the paired t-test with non-inferiority and equivalence, the learning curve, the README
block."""

import json
import math
import statistics

import pandas as pd
import pytest
from report_rows import N, declare, one_error_line, put, run_cli
from scipy import stats as sst

from lbam.report.rows import ReportError, groups, load_results
from lbam.report.stats import compare, holm, mcnemar_exact, paired_t, verdict
from lbam.report.tables import summarize

ATTENTIONS = "none,se,cbam,bam,eca,lbam"


@pytest.fixture(autouse=True)
def sweeps(monkeypatch):
    """The made-up experiments of these tests declare the sweeps their rows come from."""
    declare(
        monkeypatch,
        "exp",
        {"attention": ATTENTIONS, "seed": "range(0,10)"},
        grids=["", "dataset.train_subset=25,50", "dataset.train_subset=25 optimizer.lr=0.1"],
        settings=["attention=lbam attention.residual=false"],
    )
    declare(
        monkeypatch,
        "curve",
        {"attention": "none,bam,lbam", "dataset.train_subset": "25,50,null", "seed": "0,1,2"},
    )
    declare(monkeypatch, "quick", {"attention": ATTENTIONS, "seed": "range(0,10)"})


def summarize_all(res):
    return pd.concat(summarize(g, res.runs) for *_, g in groups(res.frame))


def summary_row(res, setting, context=""):
    s = summarize_all(res)
    return s.query(
        "setting == @setting and context == @context and profile == 'quick' and device_kind == 'cpu'"
    ).iloc[0]


# Validation


def test_invalid_row_json_is_an_error_naming_the_file(tmp_path, capsys):
    put(tmp_path, "none")
    bad = tmp_path / "runs" / "exp" / "broken.json"
    bad.write_text("{not json")
    rc, _, err = run_cli(capsys, "tables", "--results-dir", tmp_path)
    assert rc == 1
    one_error_line(err, bad, "unreadable row")
    assert not (tmp_path / "tables").exists()


def test_skip_invalid_warns_and_the_tables_say_so(tmp_path, capsys):
    put(tmp_path, "none")
    (tmp_path / "runs" / "exp" / "broken.json").write_text("{not json")
    rc, _, err = run_cli(capsys, "tables", "--results-dir", tmp_path, "--skip-invalid")
    assert rc == 0
    assert "warning: skipping" in err and "broken.json" in err
    assert "1 invalid row file skipped" in (tmp_path / "tables" / "exp.md").read_text()


def test_out_of_range_metric_is_an_error(tmp_path, capsys):
    path = put(tmp_path, "none")
    d = json.loads(path.read_text())
    d["test_acc"] = 1.7
    path.write_text(json.dumps(d))
    rc, _, err = run_cli(capsys, "tables", "--results-dir", tmp_path)
    assert rc == 1
    one_error_line(err, path, "test_acc=1.7")


def test_truncated_predictions_are_an_error(tmp_path, capsys):
    path = put(tmp_path, "none")
    preds = path.with_name(path.stem + ".preds.csv")
    preds.write_text("\n".join(preds.read_text().splitlines()[:11]) + "\n")
    rc, _, err = run_cli(capsys, "readme", "--results-dir", tmp_path, "--check")
    assert rc == 1
    one_error_line(err, preds, f"10 predictions but the row says n_test={N}")


def test_test_acc_must_agree_with_the_predictions(tmp_path):
    put(tmp_path, "none", wrong={1, 2}, test_acc=1.0)
    with pytest.raises(ReportError, match=r"test_acc=1\.0 but its predictions give 0\.9666666666666667"):
        load_results(tmp_path)


def test_a_curve_size_that_is_not_a_number_is_an_error(tmp_path):
    path = put(
        tmp_path, "none", overrides=["dataset.train_subset=abc"], analysis={"curve": "dataset.train_subset"}
    )
    with pytest.raises(ReportError, match="is not a number") as e:
        load_results(tmp_path)
    assert str(path) in str(e.value)


def test_no_rows_is_one_line(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "--results-dir", tmp_path)
    assert rc == 1
    one_error_line(err, "no valid result rows")


# Grouping and seed statistics


def test_mean_sample_std_and_groups(tmp_path):
    wrongs = {0: {1, 2, 3}, 1: {4}, 2: set(range(6))}
    for seed, wrong in wrongs.items():
        put(tmp_path, "lbam", seed, wrong)
        put(tmp_path, "none", seed, set(range(seed + 2)))
    put(tmp_path, "lbam", 3, set(), profile="full")  # another group: never averaged with quick
    put(tmp_path, "lbam", 4, set(), device="cuda: H100")  # another device kind
    res = load_results(tmp_path)
    r = summary_row(res, "lbam")
    accs = [1 - len(w) / N for w in wrongs.values()]
    assert r["n"] == 3 and r["seeds"] == "0 1 2"
    assert r["test_acc_mean"] == pytest.approx(statistics.fmean(accs))
    assert r["test_acc_std"] == pytest.approx(statistics.stdev(accs))  # ddof = 1
    quick = res.frame.query("profile == 'quick' and device_kind == 'cpu'").set_index(["setting", "seed"])
    bal = {k: res.runs[i].row.test_balanced_acc for k, i in quick["run"].items()}
    assert r["delta_vs_none"] == pytest.approx(
        statistics.fmean(bal["lbam", s] - bal["none", s] for s in range(3))
    )
    s = summarize_all(res)
    assert len(s[s["setting"] == "lbam"]) == 3  # quick-cpu, full-cpu, quick-cuda
    assert set(s[s["profile"] == "full"]["n"]) == {1}


def test_failed_runs_are_listed_never_averaged(tmp_path, capsys):
    put(tmp_path, "lbam", 0, {1})
    put(tmp_path, "lbam", 1, status="failed")
    put(tmp_path, "none", 0)
    res = load_results(tmp_path)
    r = summary_row(res, "lbam")
    assert (r["n"], r["failed"]) == (1, 1)
    assert r["test_acc_mean"] == pytest.approx(1 - 1 / N) and math.isnan(r["test_acc_std"])
    assert run_cli(capsys, "tables", "--results-dir", tmp_path)[0] == 0
    md = (tmp_path / "tables" / "exp.md").read_text()
    assert "**Failed runs: 1**" in md and "loss is nan" in md


# Pairing and tests


def test_mcnemar_exact_values():
    assert mcnemar_exact(1, 1) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 2**6)
    assert mcnemar_exact(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 2**10)


def test_holm_against_hand_computed_values():
    # sorted 0.01, 0.03, 0.04, 0.2 -> 4·0.01, 3·0.03, max(0.09, 2·0.04), max(0.09, 0.2)
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.02, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04]) and holm([]) == []


def test_paired_t_and_bounds_against_the_formula():
    d = [0.01, 0.02, -0.005, 0.015, 0.0]
    n = len(d)
    mean = sum(d) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) / math.sqrt(n)
    t = mean / se
    q = sst.t.ppf(0.95, n - 1)
    r = paired_t(d, alpha=0.05)
    assert r["n"] == n and r["mean"] == pytest.approx(mean)
    assert r["std"] == pytest.approx(statistics.stdev(d))
    assert r["p"] == pytest.approx(2 * sst.t.sf(abs(t), n - 1))
    assert r["p"] == pytest.approx(sst.ttest_rel([x + 0.5 for x in d], [0.5] * n).pvalue)
    assert (r["low"], r["high"]) == pytest.approx((mean - q * se, mean + q * se))


def test_paired_t_below_three_seeds_gives_the_mean_only():
    r = paired_t([0.01, 0.03])
    assert r["n"] == 2 and r["mean"] == pytest.approx(0.02)
    assert all(math.isnan(r[k]) for k in ("std", "p", "p_holm", "low", "high"))
    same = paired_t([0.25] * 4)  # no spread: t is infinite and the bounds are the mean itself
    assert (same["std"], same["p"], same["low"], same["high"]) == (0.0, 0.0, 0.25, 0.25)


@pytest.mark.parametrize(
    "rec, finding",
    [
        (
            {"n": 2, "mean": 0.0} | dict.fromkeys(("p_holm", "p_ni_holm", "p_tost_holm"), math.nan),
            "inconclusive",
        ),
        ({"n": 5, "mean": 0.05, "p_holm": 0.001, "p_ni_holm": 0.001, "p_tost_holm": 0.9}, "differ"),
        ({"n": 5, "mean": 0.001, "p_holm": 0.6, "p_ni_holm": 0.001, "p_tost_holm": 0.01}, "equivalent"),
        ({"n": 5, "mean": 0.01, "p_holm": 0.08, "p_ni_holm": 0.01, "p_tost_holm": 0.3}, "non-inferior"),
        ({"n": 5, "mean": -0.005, "p_holm": 0.7, "p_ni_holm": 0.2, "p_tost_holm": 0.2}, "inconclusive"),
    ],
)
def test_verdicts(rec, finding):
    got, text = verdict(rec, margin=0.01, alpha=0.05)
    assert got == finding and text.startswith(finding)


def test_pairs_only_runs_that_differ_in_the_attention_alone(tmp_path):
    for seed in range(3):
        put(tmp_path, "lbam", seed, overrides=["dataset.train_subset=25"])
        put(tmp_path, "lbam", seed, overrides=["dataset.train_subset=25", "attention.residual=false"])
        put(tmp_path, "bam", seed, {seed}, overrides=["dataset.train_subset=25"])
        put(tmp_path, "bam", seed, overrides=["dataset.train_subset=50"])
        put(tmp_path, "se", seed, overrides=["optimizer.lr=0.1", "dataset.train_subset=25"])
    p = compare(load_results(tmp_path).frame, load_results(tmp_path).runs)
    assert sorted(zip(p["setting"], p["baseline"], p["context"])) == [
        ("lbam", "bam", "dataset.train_subset=25"),
        ("lbam (residual=false)", "bam", "dataset.train_subset=25"),
    ]
    assert set(p["n"]) == {3}


@pytest.mark.parametrize("what", ["ids", "targets"])
def test_pairing_different_test_sets_is_an_error_naming_both_runs(tmp_path, what):
    a = put(tmp_path, "lbam", 0)
    other = [f"other{i}" for i in range(N)] if what == "ids" else None
    targets = [(i + 1) % 3 for i in range(N)] if what == "targets" else None
    b = put(tmp_path, "bam", 0, ids=other, targets=targets)
    res = load_results(tmp_path)
    with pytest.raises(ReportError) as e:
        compare(res.frame, res.runs)
    assert str(a) in str(e.value) and str(b) in str(e.value)


def test_holm_and_noninferiority_from_rows(tmp_path):
    """Five seeds, LBAM vs three baselines: the table's p, Holm p and bounds are the formula's, on balanced
    accuracy recomputed from the predictions (600 samples, 200 per class; k WBC errors: 1 − k/600)."""
    n, a = 600, {"noninferiority_margin": 0.01, "alpha": 0.05}
    ids, targets = [f"img{i // 10}#{i % 10}" for i in range(n)], [i % 3 for i in range(n)]
    errors = {
        "lbam": [1, 0, 2, 0, 1],
        "none": [20, 16, 22, 18, 19],
        "bam": [1, 1, 2, 0, 2],
        "se": [7, 0, 9, 0, 6],
    }
    for att, ks in errors.items():
        for seed, k in enumerate(ks):
            put(tmp_path, att, seed, set(range(0, 3 * k, 3)), ids=ids, targets=targets, analysis=a, n=n)
    res = load_results(tmp_path)
    p = compare(res.frame, res.runs)
    p = p[p["family"] == "lbam vs baselines"].set_index("baseline")
    raw = {}
    for base in ("none", "bam", "se"):
        d = [(kb - ka) / n for ka, kb in zip(errors["lbam"], errors[base])]
        raw[base] = 2 * sst.t.sf(abs(statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(5))), 4)
        lower = statistics.fmean(d) - sst.t.ppf(0.95, 4) * statistics.stdev(d) / math.sqrt(5)
        assert p.at[base, "p"] == pytest.approx(raw[base])
        assert p.at[base, "low"] == pytest.approx(lower)
    for base, adj in zip(raw, holm(list(raw.values()))):
        assert p.at[base, "p_holm"] == pytest.approx(adj)
    assert p.at["none", "finding_t"] == "differ" and "higher" in p.at["none", "verdict_t"]
    assert p.at["bam", "finding_t"] == "equivalent"
    assert p.at["se", "finding_t"] == "non-inferior"


# Learning curve, figures and README


def _curve(tmp_path, seeds=3):
    a = {"curve": "dataset.train_subset", "noninferiority_margin": 0.01, "alpha": 0.05}
    for seed in range(seeds):
        for size, extra in ((25, 6), (50, 3), ("null", 1)):  # null: the whole training split (n_train)
            ov = [f"dataset.train_subset={size}"]
            put(
                tmp_path, "none", seed, set(range(extra + 2 + seed)), ov, "curve", analysis=a, profile="curve"
            )
            put(tmp_path, "bam", seed, set(range(extra + seed)), ov, "curve", analysis=a, profile="curve")
            put(tmp_path, "lbam", seed, set(range(extra + seed)), ov, "curve", analysis=a, profile="curve")
    put(tmp_path, "none", 0, experiment="quick")
    put(tmp_path, "lbam", 0, {3}, experiment="quick")


def test_learning_curve_figure_tables_and_readme(tmp_path, capsys):
    _curve(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nafter\n")
    rc, out, err = run_cli(
        capsys, "--results-dir", tmp_path, "--readme", readme, "--experiments-dir", tmp_path / "e"
    )
    assert rc == 0, err
    assert (tmp_path / "figures" / "curve_learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "quick_cost_vs_accuracy.png").is_file()
    md = (tmp_path / "tables" / "curve.md").read_text()
    assert (
        md.index("train-set size 25")
        < md.index("train-set size 50")
        < md.index("train-set size 200 (whole training split) (dataset.train_subset=null)")
    )
    assert "attention maps of curve skipped" in out
    text = readme.read_text()
    block = text[text.index("results:start") : text.index("results:end")]
    assert block.index("learning curve") < block.index("quick:")  # the curve's finding leads
    assert "| 25 " in block and "| 200 (all) " in block and "equivalent" in block
    # identical predictions: Δ = 0 on every seed and every resample, equivalent within ±1 pp
    assert "bam (+0.00; a [+0.00, +0.00], b [+0.00, +0.00])" in block
    assert "curve_learning_curve.png" in block and text.endswith("after\n")
    assert len(block.splitlines()) < 60


def test_readme_check_flags_a_stale_block(tmp_path, capsys):
    _curve(tmp_path, seeds=1)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert run_cli(capsys, "readme", "--results-dir", tmp_path, "--readme", readme)[0] == 0
    first = readme.read_text()
    rc, out, _ = run_cli(capsys, "readme", "--check", "--results-dir", tmp_path, "--readme", readme)
    assert rc == 0 and "up to date" in out
    assert run_cli(capsys, "readme", "--results-dir", tmp_path, "--readme", readme)[0] == 0
    assert readme.read_text() == first  # deterministic
    put(tmp_path, "bam", 5, experiment="quick")
    rc, out, _ = run_cli(capsys, "readme", "--check", "--results-dir", tmp_path, "--readme", readme)
    assert rc == 1 and "stale" in out
    # the quick group (one seed, no test) is one line, which now has a third run and a bam
    assert any(
        line.startswith("+**quick:") and "(3 runs," in line and ", bam " in line for line in out.splitlines()
    )
    assert readme.read_text() == first  # --check never writes


def test_readme_without_markers_is_one_line(tmp_path, capsys):
    put(tmp_path, "none")
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    rc, _, err = run_cli(capsys, "readme", "--results-dir", tmp_path, "--readme", readme)
    assert rc == 1
    one_error_line(err, readme, "results:start")
