"""The statistics of PLAN.md (embodiment1_curve) against hand-computed cases: the paired two-level bootstrap
against every resample enumerated and a literal resampled test set, its p-values and interval, TOST and
non-inferiority against scipy's one-sided t, Holm per family and test type, the families, the (a)/(b)
verdicts, the ceiling, the label-audit sensitivity analysis and the forest plot, from crafted rows."""

import itertools
import math
import statistics
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sst

from lbam.config import run_name
from lbam.metrics import classification_metrics, confusion_matrix
from lbam.report import bootstrap as boot
from lbam.report import main
from lbam.report.outcomes import balanced_acc, ceiling, counts, outcomes, without
from lbam.report.rows import ReportError, Run, load_results
from lbam.report.stats import DISAGREE, VS_NONE, compare, holm, paired_t
from lbam.results import Row, write_row
from tests.report_rows import declare, vouch


@pytest.fixture(autouse=True)
def sweeps(monkeypatch):
    """The made-up experiment declares the sweep its rows come from (else they are "other runs")."""
    every = {"attention": "none,se,cbam,bam,eca,lbam", "seed": "range(0,100)"}
    grids = ["", "dataset.train_subset=25,100"]
    declare(monkeypatch, "exp", every, grids=grids, settings=["attention=lbam attention.residual=false"])


CLASSES = ["WBC", "RBC", "Platelets"]
W, R, P = 0, 1, 2

# The hand case: two smears of three crops, two settings, three seeds. Class totals: WBC 1, RBC 3, Platelets 2.
TEST = {"s0#0": W, "s0#1": R, "s0#2": P, "s1#0": R, "s1#1": R, "s1#2": P}
WRONG = {  # (setting, seed): crops predicted wrong
    ("A", 0): set(), ("A", 1): set(), ("A", 2): {"s1#2"},
    ("B", 0): {"s0#0"}, ("B", 1): {"s1#0"}, ("B", 2): set(),
}  # fmt: skip


def fake_run(setting: str, seed: int, test=TEST, wrong=WRONG) -> Run:
    preds = {i: (t, (t + 1) % 3 if i in wrong[setting, seed] else t) for i, t in test.items()}
    row = types.SimpleNamespace(seed=seed, class_names=CLASSES)
    return Run(row, Path(f"{setting}_s{seed}.json"), preds)


def hand_outcomes():
    keys = sorted(WRONG)
    return outcomes([fake_run(s, k) for s, k in keys], [s for s, _ in keys])


def literal_bal_acc(setting: str, seed: int, smears: tuple[str, ...]) -> float:
    """Balanced accuracy on the resampled test set built literally (each drawn smear's crops, repeats kept),
    by the project's metric."""
    run = fake_run(setting, seed)
    crops = [i for s in smears for i in TEST if i.startswith(s + "#")]
    t, p = (torch.tensor([run.preds[i][k] for i in crops]) for k in (0, 1))
    return classification_metrics(confusion_matrix(t, p, 3), CLASSES)["test_balanced_acc"]


# Bootstrap


def test_balanced_acc_and_counts_by_hand():
    o = hand_outcomes()
    correct, total = counts(o)
    assert total.tolist() == [[1, 1, 1], [0, 2, 1]]  # smear s0: W R P; smear s1: R R P
    assert correct[o.run("B", 1)].tolist() == [[1, 1, 1], [0, 1, 1]]
    # A: 1, 1, (1 + 1 + 1/2)/3; B: (0 + 1 + 1)/3, (1 + 2/3 + 1)/3, 1
    expected = {("A", 0): 1, ("A", 1): 1, ("A", 2): 5 / 6, ("B", 0): 2 / 3, ("B", 1): 8 / 9, ("B", 2): 1}
    assert balanced_acc(o) == pytest.approx([expected[k] for k in o.keys])


def test_bootstrap_against_every_resample_enumerated():
    """All 3³ seed draws × 2² smear draws, equally likely: the vectorised resampled Δ̄ equals the literal one
    (the crops of the drawn smears, repeats kept, balanced accuracy by lbam.metrics) on every resample."""
    o = hand_outcomes()
    seed_draws = list(itertools.product(range(3), repeat=3))
    smear_draws = list(itertools.product(range(2), repeat=2))
    both = list(itertools.product(seed_draws, smear_draws))
    w = boot.multiplicities(np.array([sm for _, sm in both]), 2)
    seeds = boot.multiplicities(np.array([sd for sd, _ in both]), 3)
    ba = boot.resampled_balanced_acc(*counts(o), w)
    a, b = (np.array([o.run(s, k) for k in range(3)]) for s in "AB")
    dstar = boot.deltas(ba, a, b, seeds)
    for (sd, sm), got in zip(both, dstar):
        smears = tuple(o.smears[j] for j in sm)
        ref = statistics.fmean(literal_bal_acc("A", k, smears) - literal_bal_acc("B", k, smears) for k in sd)
        assert got == pytest.approx(ref, abs=1e-12)
    by = dict(zip(both, dstar))
    assert by[(0, 1, 2), (0, 1)] == pytest.approx((1 / 3 + 1 / 9 - 1 / 6) / 3)  # the sample itself: 5/54
    assert by[(2, 2, 2), (1, 1)] == pytest.approx(1 / 2 - 1)  # no WBC: A recalls RBC 4/4, Plt 0/2; B 1
    assert by[(0, 0, 0), (0, 0)] == pytest.approx(1 - 2 / 3)  # B misses both copies of the WBC
    # The exact p-values of the enumerated distribution, counted by hand from it.
    s = boot.summary(dstar, margin=0.1, alpha=0.05)
    n = len(dstar)
    assert s["p_ni"] == pytest.approx((1 + sum(by[k] <= -0.1 for k in by)) / (n + 1))
    up = (1 + sum(by[k] >= 0.1 for k in by)) / (n + 1)
    assert s["p_tost"] == pytest.approx(max(s["p_ni"], up))


def test_random_draws_approach_the_enumerated_distribution():
    o = hand_outcomes()
    a, b = (np.array([o.run(s, k) for k in range(3)]) for s in "AB")
    dstar = boot.resampled_deltas(*counts(o), [(a, b)], resamples=30_000, chunk=7_000)[0]
    again = boot.resampled_deltas(*counts(o), [(a, b)], resamples=30_000, chunk=7_000)[0]
    assert np.array_equal(dstar, again)  # the fixed generator seed: the same draws every time
    other = boot.resampled_deltas(*counts(o), [(a, b)], resamples=30_000, chunk=7_000, seed=5)[0]
    assert not np.array_equal(dstar, other)
    # Exact: P(Δ̄ ≤ 0) over the 108 enumerated resamples (same construction as above).
    both = list(
        itertools.product(itertools.product(range(3), repeat=3), itertools.product(range(2), repeat=2))
    )
    w = boot.multiplicities(np.array([sm for _, sm in both]), 2)
    exact = boot.deltas(
        boot.resampled_balanced_acc(*counts(o), w),
        a,
        b,
        boot.multiplicities(np.array([s for s, _ in both]), 3),
    )
    for d in (dstar, other):
        assert (d <= 0).mean() == pytest.approx((exact <= 0).mean(), abs=0.01)
        assert d.mean() == pytest.approx(exact.mean(), abs=0.005)


def test_pairs_of_one_shape_share_their_draws_and_a_pooled_pair_averages_its_runs():
    o = hand_outcomes()
    a, b = (np.array([o.run(s, k) for k in range(3)]) for s in "AB")
    pooled = np.stack([a, a])  # the mean of A twice is A: the same Δ̄ on every resample
    d = boot.resampled_deltas(*counts(o), [(a, b), (b, a), (pooled, b)], resamples=5_000, chunk=1_500)
    assert np.allclose(d[0], -d[1]) and np.allclose(d[0], d[2])


def test_bootstrap_summary_by_hand():
    d = np.array([-0.02, -0.01, 0.0, 0.005, 0.03])  # B = 5: fractions are (1 + count) / 6
    s = boot.summary(d, margin=0.01, alpha=0.2)
    assert s["p_ni"] == pytest.approx(3 / 6)  # -0.02 and -0.01 lie at or below -m
    assert s["p_tost"] == pytest.approx(3 / 6)  # max(3/6, (1 + 1)/6)
    assert s["p"] == 1.0  # 2 · min(4/6, 4/6), capped
    assert (s["low"], s["high"]) == pytest.approx(tuple(np.quantile(d, [0.2, 0.8])))
    s = boot.summary(np.array([0.002, 0.004, 0.003]), margin=0.01, alpha=0.05)
    assert (s["p"], s["p_ni"], s["p_tost"]) == pytest.approx((2 / 4, 1 / 4, 1 / 4))
    # On a bound up to float noise counts as beyond it: a tie never rejects.
    assert boot.summary(np.array([-0.01 + 1e-15] * 3), 0.01, 0.05)["p_ni"] == 1.0


# Tests and Holm


def test_noninferiority_and_tost_against_scipys_one_sided_t():
    d, m = [0.004, -0.002, 0.006, 0.001, 0.003, -0.001], 0.01
    r = paired_t(d, alpha=0.05, margin=m)
    ni = sst.ttest_1samp(d, -m, alternative="greater").pvalue
    up = sst.ttest_1samp(d, m, alternative="less").pvalue
    assert r["p_ni"] == pytest.approx(ni) and r["p_tost"] == pytest.approx(max(ni, up))
    assert r["p"] == pytest.approx(sst.ttest_1samp(d, 0).pvalue)
    # TOST at α ⟺ the (1 − 2α) interval inside ±m
    assert (r["p_tost"] < 0.05) == (-m < r["low"] and r["high"] < m)


def test_holm_on_a_known_vector():
    # sorted 0.01 0.02 0.03 0.04 -> 4·0.01, 3·0.02, max(0.06, 2·0.03), max(0.06, 0.04)
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.3, math.inf]) == [0.6, 1.0]


def put(results, attention, seed, test, wrong=(), overrides=(), analysis=None, status="ok"):
    """One row over the test set ``test`` ({id: class}) with the crops in ``wrong`` predicted wrong."""
    ids, targets = list(test), list(test.values())
    preds = [(t + 1) % 3 if i in wrong else t for i, t in zip(ids, targets)]
    m = classification_metrics(confusion_matrix(torch.tensor(targets), torch.tensor(preds), 3), CLASSES)
    overrides = sorted(overrides)  # as the runner writes them
    name = run_name(attention, overrides, seed)
    row = Row(
        experiment="exp", run_name=name, profile="curve", seed=seed, overrides=overrides, dataset="bccd",
        synthetic=False, backbone="cnn4", attention=attention, attention_kwargs={}, placement="stage",
        width_mult=0.5, image_size=32, status=status, class_names=CLASSES, params=1, attention_params=1, macs=1,
        flops=1, n_train=25, n_test=len(ids), train_seconds=1.0, device="cpu (2 threads, x)",
        analysis=analysis or {"noninferiority_margin": 0.01, "alpha": 0.05, "curve": "dataset.train_subset"},
    )  # fmt: skip
    if status == "ok":
        row.test_acc, row.test_balanced_acc, row.test_macro_f1 = (m[k] for k in ("test_acc", "test_balanced_acc", "test_macro_f1"))  # fmt: skip
    else:
        row.error = "RuntimeError: loss is nan"
    return write_row(vouch(row), list(zip(ids, targets, preds)) if status == "ok" else None, results)


def big_test(smears=8, per=9):
    """``smears`` smears of ``per`` crops, classes cycling W R P."""
    return {f"im{j}#{k}": (j * per + k) % 3 for j in range(smears) for k in range(per)}


def test_families_holm_per_family_and_test_type(tmp_path):
    test = big_test()
    ids = list(test)
    wrong = {"none": [0, 5, 2, 9], "se": [3, 1, 0, 4], "lbam": [1, 1, 2, 1], "lbam-r": [6, 0, 9, 2]}
    for att, ks in wrong.items():
        for seed, k in enumerate(ks):
            ov = ["dataset.train_subset=25"] + (["attention.residual=false"] if att == "lbam-r" else [])
            put(tmp_path, att.removesuffix("-r"), seed, test, set(ids[:k]), ov)
    res = load_results(tmp_path)
    p = compare(res.frame, res.runs)
    got = sorted(zip(p["family"], p["setting"], p["baseline"]))
    lb, lr = "lbam vs baselines", "lbam (residual=false) vs baselines"
    assert got == sorted([
        (lb, "lbam", "none"), (lb, "lbam", "se"),
        (lr, "lbam (residual=false)", "none"), (lr, "lbam (residual=false)", "se"),
        (VS_NONE, "se", "none"), (VS_NONE, "lbam", "none"), (VS_NONE, "lbam (residual=false)", "none"),
    ])  # fmt: skip
    o = outcomes([res.runs[i] for i in res.frame["run"]], list(res.frame["setting"]))
    ba = dict(zip(o.keys, balanced_acc(o)))
    holms = {}  # (family, setting, baseline, column) -> Holm within the family
    for family, pf in p.groupby("family"):
        for pre in ("", "boot_"):
            for t in ("p", "p_ni", "p_tost"):
                for (_, r), h in zip(pf.iterrows(), holm(pf[pre + t].tolist())):
                    holms[family, r["setting"], r["baseline"], f"{pre}{t}_holm"] = h
        for _, r in pf.iterrows():
            d = [ba[r["setting"], s] - ba[r["baseline"], s] for s in range(4)]
            assert r["mean"] == pytest.approx(statistics.fmean(d))
            assert r["p_tost"] == pytest.approx(paired_t(d, 0.05, 0.01)["p_tost"])
    # One verdict per comparison: lbam − none is in two families and takes the larger of its two Holm p's
    # (the more conservative) in both; a comparison in one family keeps its family's.
    for _, r in p.iterrows():
        for col in [c for c in holms if c[0] == r["family"] and c[1:3] == (r["setting"], r["baseline"])]:
            mine = [h for (f, s, b, c), h in holms.items() if (s, b, c) == (*col[1:3], col[3])]
            assert r[col[3]] == pytest.approx(max(mine)) and len(mine) == (
                2 if r["baseline"] == "none" and r["setting"] != "se" else 1
            )
    both = p[(p["setting"] == "lbam") & (p["baseline"] == "none")]
    assert len(both) == 2 and both["p"].nunique() == 1 and both["finding"].nunique() == 1
    assert (both["families"] == 2).all()
    cols = {c for *_, c in holms}
    assert any(holms[lb, "lbam", "none", c] != holms[VS_NONE, "lbam", "none", c] for c in cols), (
        "the case must give the two families different Holm p's, or the rule is not exercised"
    )


def test_a_and_b_disagree_when_the_test_set_decides(tmp_path):
    """B misses the one platelet of smear im1 on every seed: Δ = (1/5)/3 on each seed, so over seeds alone it
    is a constant > 0 inside ±10 pp (differ, and equivalent), but resampling the two smears gives Δ = 0 a
    quarter of the time (im0 drawn twice) and Δ = 1/3 another quarter (im1 twice): (b) rejects neither Δ = 0
    nor Δ ≥ +10 pp, and finds non-inferiority only."""
    test = {f"im0#{k}": c for k, c in enumerate([W, W, W, R, R, R, P, P, P, P])} | {
        "im1#0": W,
        "im1#1": R,
        "im1#2": P,
    }
    a = {"noninferiority_margin": 0.1, "alpha": 0.05}
    for seed in range(3):
        put(tmp_path, "lbam", seed, test, analysis=a)
        put(tmp_path, "bam", seed, test, {"im1#2"}, analysis=a)
    res = load_results(tmp_path)
    r = compare(res.frame, res.runs).iloc[0]
    assert r["mean"] == pytest.approx(1 / 15) and r["std"] == 0.0
    assert (r["finding_t"], r["finding_boot"], r["finding"]) == ("differ", "non-inferior", DISAGREE)
    assert "equivalent" in r["verdict_t"]
    assert r["boot_p_tost"] == pytest.approx(0.25, abs=0.02) and r["boot_p"] == pytest.approx(0.5, abs=0.04)
    assert r["verdict"].startswith("inconclusive (a/b disagree")


def test_a_failed_run_leaves_its_seed_out_of_the_pair(tmp_path):
    test = big_test()
    for seed in range(4):
        put(tmp_path, "none", seed, test, set(list(test)[:seed]))
        put(tmp_path, "lbam", seed, test, status="failed" if seed == 3 else "ok")
    res = load_results(tmp_path)
    r = compare(res.frame, res.runs).iloc[0]
    assert r["n"] == 3 and not math.isnan(r["boot_low"])


# Ceiling and the label audit


def test_ceiling_on_crafted_predictions():
    test = {"a#0": W, "a#1": R, "b#0": P, "b#1": P, "c#0": R, "c#1": W}
    wrong = {("x", 0): {"a#0", "b#0"}, ("x", 1): {"b#0", "c#0"}, ("y", 0): {"b#0"}}
    o = outcomes([fake_run(s, k, test, wrong) for s, k in wrong], [s for s, _ in wrong])
    c = ceiling(o)
    assert (c["runs"], c["crops"], c["wrong_any"], c["wrong_all"]) == (3, 6, 3, ["b#0"])
    assert c["best"] == pytest.approx((1 + 1 + 1 / 2) / 3)  # only b#0 wrong: platelets 1 of 2


def test_removing_audited_crops():
    o = without(hand_outcomes(), {"s0#0", "s1#2"})  # the only WBC goes: balanced accuracy over RBC, platelets
    assert list(o.ids) == ["s0#1", "s0#2", "s1#0", "s1#1"] and o.smears == ("s0", "s1")
    expected = {("A", 0): 1, ("A", 1): 1, ("A", 2): 1, ("B", 0): 1, ("B", 1): (2 / 3 + 1) / 2, ("B", 2): 1}
    assert balanced_acc(o) == pytest.approx([expected[k] for k in o.keys])
    assert without(hand_outcomes(), {"s1#0", "s1#1", "s1#2"}).smears == ("s0",)  # an emptied smear goes


def test_sensitivity_tables_and_readme(tmp_path, capsys):
    test = big_test()
    ids = list(test)
    for seed in range(3):
        for att, wrong in (("none", {ids[0], ids[4 + seed]}), ("lbam", {ids[0]}), ("bam", {ids[0], ids[1]})):
            put(tmp_path, att, seed, test, wrong, ["dataset.train_subset=25"])
    audit = tmp_path / "label_audit" / "labels.csv"
    audit.parent.mkdir()
    audit.write_text(f"id,label,reason\n{ids[0]},WBC,looks like a platelet\nnot#1,RBC,not in this test set\n")
    res = load_results(tmp_path)
    p, q = compare(res.frame, res.runs), compare(res.frame, res.runs, {ids[0]})
    assert p["ceiling_wrong_all"].iloc[0] == ids[0] and q["ceiling_wrong_all"].iloc[0] == ""
    assert q["ceiling_best"].iloc[0] == 1.0 and q["ceiling_crops"].iloc[0] == len(ids) - 1
    # lbam − bam: bam also misses ids[1] (an RBC, 24 in all; 23 without ids[0], a WBC): Δ = (1/24)/3 on all crops.
    row = q[(q["setting"] == "lbam") & (q["baseline"] == "bam")].iloc[0]
    assert row["mean"] == pytest.approx(1 / 24 / 3)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert main(["tables", "--results-dir", str(tmp_path)]) == 0
    md = (tmp_path / "tables" / "exp.md").read_text()
    assert "## Label-audit sensitivity" in md and f"({ids[0]})" in md
    assert "Ceiling at 25, audited crops removed: " in md and "**each vs none**" in md
    assert "(b) seeds + test: 90 % CI (pp)" in md and "(a) seeds: Holm p diff / NI / TOST" in md
    assert (tmp_path / "tables" / "exp_sensitivity.csv").read_text().count("\n") == len(q) + 1
    assert main(["readme", "--results-dir", str(tmp_path), "--readme", str(readme)]) == 0
    block = readme.read_text()
    assert "Label-audit sensitivity (1 audited crops removed" in block and "Ceiling (" in block
    capsys.readouterr()


def test_a_malformed_audit_list_is_one_line(tmp_path, capsys):
    test = big_test()
    for seed in range(3):
        put(tmp_path, "none", seed, test)
        put(tmp_path, "lbam", seed, test)
    (tmp_path / "label_audit").mkdir()
    (tmp_path / "label_audit" / "labels.csv").write_text("sample,label\nx#1,RBC\n")
    assert main(["tables", "--results-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labels.csv: header" in err and "Traceback" not in err


# Forest plot


def test_forest_plot_from_crafted_rows(tmp_path, capsys):
    test = big_test()
    ids = list(test)
    for size in (25, 100):
        for seed in range(3):
            for att, k in (("none", 2 + seed), ("se", 1), ("bam", seed), ("lbam", 1 + seed % 2)):
                put(tmp_path, att, seed, test, set(ids[:k]), [f"dataset.train_subset={size}"])
            put(tmp_path, "lbam", seed, test, set(ids[3:6]), [f"dataset.train_subset={size}", "attention.residual=false"])  # fmt: skip
    assert main(["figures", "--results-dir", str(tmp_path)]) == 0
    out = tmp_path / "figures" / "exp_forest.png"
    assert str(out) in capsys.readouterr().out and out.stat().st_size > 20_000


def test_no_forest_plot_without_intervals(tmp_path, capsys):
    test = big_test()
    put(tmp_path, "none", 0, test)
    put(tmp_path, "lbam", 0, test, {"im0#0"})
    assert main(["figures", "--results-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "figures" / "exp_forest.png").exists()
    capsys.readouterr()


def test_runs_that_differ_in_test_set_cannot_be_compared(tmp_path):
    test = big_test()
    for seed in range(3):
        put(tmp_path, "none", seed, test)
    put(tmp_path, "lbam", 0, {**test, "extra#0": R})
    res = load_results(tmp_path)
    with pytest.raises(ReportError, match="differ in test samples or targets"):
        compare(res.frame, res.runs)


def test_readme_without_enough_seeds_says_so_in_one_line(tmp_path, capsys):
    test = big_test()
    put(tmp_path, "none", 0, test)
    put(tmp_path, "lbam", 0, test, {"im0#0"})
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert main(["readme", "--results-dir", str(tmp_path), "--readme", str(readme)]) == 0
    block = readme.read_text()
    line = next(x for x in block.splitlines() if x.startswith("**exp:"))
    assert "(2 runs, 1 seed(s), commit unknown): test balanced accuracy none 100.00, lbam " in line
    assert (
        "too few seeds for a paired test (≥ 3)" in line and "| differ" not in block and "| none" not in block
    )
    capsys.readouterr()
