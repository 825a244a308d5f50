"""The rules of the curve plan's amendment of 2026-12-07 on hand-computed cases: Holm with Monte Carlo SEs, the
bootstrap p's MC SE, "at the threshold", one verdict per comparison in two families (in test_report_stats),
the claims allowed outside the primary sizes, the power formulas, the exploratory pooled direction test, the
bootstrap's bias on a simulated crossed design, and the committed curve's verdicts under 5 other generator
seeds."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sst

from lbam.report import bootstrap as boot
from lbam.report import power
from lbam.report.direction import negatives
from lbam.report.rows import groups, load_results
from lbam.report.stats import compare_all
from lbam.report.verdicts import FINDINGS, THRESHOLD, decide, holm_se, verdict
from tests.report_rows import declare
from tests.test_report_stats import big_test, put

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.05


def test_holm_carries_the_mc_se_of_the_p_that_sets_it():
    # sorted 0.01 0.02 0.03 0.04 -> 4·0.01, 3·0.02, max(3·0.02, 2·0.03), max(…, 0.04): SEs ×4, ×3, ×3, ×3
    adjusted, se = holm_se([0.03, 0.01, 0.04, 0.02], [0.003, 0.001, 0.004, 0.002])
    assert adjusted == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert se == pytest.approx([0.006, 0.004, 0.006, 0.006])
    capped, capped_se = holm_se([0.6, 0.5], [0.01, 0.01])
    assert capped == [1.0, 1.0] and capped_se == [0.0, 0.0]  # at 1, nowhere near α


def test_bootstrap_p_values_carry_their_mc_se():
    d = np.array([-0.02, -0.01, 0.0, 0.005, 0.03])  # B = 5: fractions (1 + count) / 6
    s = boot.summary(d, margin=0.01, alpha=0.2)
    assert s["p_ni_se"] == pytest.approx(math.sqrt(3 / 6 * 3 / 6 / 5))
    assert s["p_tost_se"] == pytest.approx(s["p_ni_se"])  # TOST's p is the NI side here
    assert s["p_se"] == pytest.approx(2 * math.sqrt(4 / 6 * 2 / 6 / 5))  # twice the smaller tail's (4/6)
    assert s["se"] == pytest.approx(np.std(d, ddof=1))


@pytest.mark.parametrize(
    ("p", "se", "claims", "found"),
    [
        # far from α: decided
        (
            {"p": 0.2, "p_ni": 0.01, "p_tost": 0.3},
            {"p": 0.002, "p_ni": 0.002, "p_tost": 0.002},
            True,
            "non-inferior",
        ),
        # the difference test within 2 SE of α: differ or non-inferior, so at the threshold
        (
            {"p": 0.052, "p_ni": 0.01, "p_tost": 0.3},
            {"p": 0.002, "p_ni": 0.001, "p_tost": 0.003},
            True,
            THRESHOLD,
        ),
        # 2.5 SE away: decided
        (
            {"p": 0.055, "p_ni": 0.01, "p_tost": 0.3},
            {"p": 0.002, "p_ni": 0.001, "p_tost": 0.003},
            True,
            "non-inferior",
        ),
        # NI undecided but TOST rejects: equivalent either way, so stated
        (
            {"p": 0.4, "p_ni": 0.049, "p_tost": 0.01},
            {"p": 0.01, "p_ni": 0.002, "p_tost": 0.001},
            True,
            "equivalent",
        ),
        # TOST undecided and NI rejects: equivalent or non-inferior
        (
            {"p": 0.4, "p_ni": 0.01, "p_tost": 0.051},
            {"p": 0.01, "p_ni": 0.001, "p_tost": 0.002},
            True,
            THRESHOLD,
        ),
        # outside the primary sizes TOST and NI do not speak: an undecided TOST changes nothing
        (
            {"p": 0.4, "p_ni": 0.01, "p_tost": 0.051},
            {"p": 0.01, "p_ni": 0.001, "p_tost": 0.002},
            False,
            "inconclusive",
        ),
        # the difference rejects for sure: an undecided TOST cannot change "differ"
        (
            {"p": 0.001, "p_ni": 0.9, "p_tost": 0.049},
            {"p": 0.0005, "p_ni": 0.01, "p_tost": 0.002},
            True,
            "differ",
        ),
    ],
)
def test_at_the_threshold_only_where_mc_error_could_change_the_finding(p, se, claims, found):
    assert decide(p, se, ALPHA, claims) == found


def test_the_verdict_names_the_undecided_test():
    r = {"n": 25, "mean": -0.004, "boot_p_holm": 0.052, "boot_p_ni_holm": 0.01, "boot_p_tost_holm": 0.3}
    r |= {"boot_p_holm_se": 0.002, "boot_p_ni_holm_se": 0.001, "boot_p_tost_holm_se": 0.003}
    finding, words = verdict(r, 0.01, ALPHA, "boot")
    assert finding == THRESHOLD and "p 0.052 ± 0.002" in words and "p_ni" not in words
    # the t-test has no Monte Carlo error: its p decides on its own
    t = {"n": 25, "mean": -0.004, "p_holm": 0.052, "p_ni_holm": 0.01, "p_tost_holm": 0.3}
    assert verdict(t, 0.01, ALPHA, "t")[0] == "non-inferior"


def test_power_formulas_by_hand():
    se = 0.4
    assert power.detectable(se, 0.05) == pytest.approx((sst.norm.ppf(0.975) + sst.norm.ppf(0.8)) * se)
    assert power.detectable(se, 0.01, 9) == pytest.approx((sst.t.ppf(0.995, 9) + sst.t.ppf(0.8, 9)) * se)
    assert power.tost_power(se, 1.0, 0.05) == pytest.approx(2 * sst.norm.cdf(1 / se - sst.norm.ppf(0.95)) - 1)
    assert power.tost_power(2.0, 1.0, 0.05) == 0.0  # the interval cannot fit inside ±margin
    # the 25-crop arithmetic: SD 3.58 pp, 60 seeds, α = 0.05: 1.3 pp detectable, TOST power 38 %
    assert power.detectable(3.58 / math.sqrt(60), 0.05, 59) == pytest.approx(1.32, abs=0.01)
    assert power.tost_power(3.58 / math.sqrt(60), 1.0, 0.05, 59) == pytest.approx(0.38, abs=0.01)
    n = power.seeds_for_tost(3.58, 1.0, 0.05)
    assert power.tost_power(3.58 / math.sqrt(n), 1.0, 0.05, n - 1) >= 0.8
    assert power.tost_power(3.58 / math.sqrt(n - 1), 1.0, 0.05, n - 2) < 0.8
    assert power.seeds_for_tost(0.0, 1.0, 0.05) is None


def test_the_pooled_direction_test_by_hand(tmp_path, monkeypatch):
    """Two modules and none over 4 seeds; the pooled Δ of a seed is the mean of its two module − none Δs."""
    declare(
        monkeypatch,
        "exp",
        {"attention": "none,se,lbam", "seed": "range(0,4)"},
        grids=["dataset.train_subset=25,400"],
    )
    test = big_test()
    ids = list(test)
    wrong = {"none": [0, 1, 0, 2], "se": [2, 3, 1, 2], "lbam": [1, 3, 4, 2]}  # crops wrong per seed (first k)
    a = {"noninferiority_margin": 0.01, "alpha": ALPHA, "curve": "dataset.train_subset", "primary": [25]}
    for size in (25, 400):
        for att, ks in wrong.items():
            for seed, k in enumerate(ks):
                put(tmp_path, att, seed, test, set(ids[:k]), [f"dataset.train_subset={size}"], analysis=a)
    res = load_results(tmp_path)
    p, pooled = compare_all(res.frame, res.runs)
    assert pooled["x"].tolist() == [25.0]  # the exploratory test at the primary sizes only
    ba = {r.row.seed: {} for r in res.runs}
    for r in res.runs:
        if "=25" in r.row.overrides[0]:
            ba[r.row.seed][r.row.attention] = r.row.test_balanced_acc
    d = [(ba[s]["se"] + ba[s]["lbam"]) / 2 - ba[s]["none"] for s in range(4)]
    row = pooled.iloc[0]
    assert row["modules"] == 2 and row["n"] == 4 and row["mean"] == pytest.approx(np.mean(d))
    assert (
        row["p"] == pytest.approx(sst.ttest_1samp(d, 0).pvalue) and row["p_holm"] == row["p"]
    )  # one context
    assert 0 < row["boot_p"] <= 1 and row["boot_p_se"] > 0 and row["boot_low"] <= row["boot_high"]
    # outside the primary sizes: no equivalence or non-inferiority verdict, only the difference test speaks
    at400 = p[p["x"] == 400]
    assert not at400["claims"].any() and set(at400["finding_t"]) <= {"differ", "inconclusive"}
    assert p[p["x"] == 25]["claims"].all()


def test_the_two_level_bootstrap_is_conservative_for_a_crossed_design():
    """Δ_sj = a_s + b_j + c_sj (seed, smear, interaction; one crop per smear, so balanced accuracy is the mean
    over smears): the true variance of Δ̄ is σa²/n + σb²/J + σc²/(nJ). Resampling seeds and smears independently
    over-estimates it when the interaction matters, and does not when it is absent."""
    rng = np.random.default_rng(0)
    n, j, sims = 8, 12, 150

    def ratio(sa: float, sb: float, sc: float) -> tuple[float, float]:
        true = sa**2 / n + sb**2 / j + sc**2 / (n * j)
        boot_var, means = [], []
        for _ in range(sims):
            delta = rng.normal(0, sa, (n, 1)) + rng.normal(0, sb, (1, j)) + rng.normal(0, sc, (n, j))
            correct = np.zeros((2 * n, j, 1))
            correct[:n, :, 0] = 0.5 + delta / 100  # setting A's runs: per-smear "accuracy"
            correct[n:, :, 0] = 0.5  # setting B
            pair = (np.arange(n), np.arange(n, 2 * n))
            dstar = boot.resampled_deltas(
                correct, np.ones((j, 1)), [pair], resamples=2_000, seed=int(rng.integers(1e9))
            )
            boot_var.append(dstar[0].var() * 100**2)
            means.append(delta.mean())
        return float(np.mean(boot_var) / true), float(np.var(means, ddof=1) / true)

    with_interaction, mc_truth = ratio(0.5, 0.5, 2.0)
    assert mc_truth == pytest.approx(1.0, abs=0.3)  # the formula is the simulated truth
    assert with_interaction > 1.4  # conservative: the interaction is counted more than once
    without_interaction, _ = ratio(0.5, 0.5, 0.0)
    assert without_interaction < 1.05


@pytest.mark.parametrize(("experiment", "at_least"), [("embodiment1_curve", 40), ("embodiment1_bridge", 6)])
def test_no_stated_verdict_flips_with_the_bootstrap_generator_seed(experiment, at_least):
    """The committed learning curve and bridge, as the README states them, under 5 other generator seeds: every
    stated verdict (one of FINDINGS) comes out the same."""
    if not (ROOT / "results" / "runs" / experiment).is_dir():
        pytest.skip(f"no committed {experiment}")
    res = load_results(ROOT / "results")
    found = [g for e, _, g in groups(res.frame) if e == experiment]  # a bridge: one group per step
    refs = [compare_all(g, res.runs)[0] for g in found]
    assert sum(r["finding"].isin(FINDINGS).sum() for r in refs) >= at_least
    for g, ref in zip(found, refs):
        stated = ref["finding"].isin(FINDINGS)
        for seed in (1, 2, 3, 4, 5):
            other, _ = compare_all(g, res.runs, seed=seed)
            flips = ref[stated & (ref["finding"] != other["finding"])]
            assert flips.empty, (
                f"seed {seed}: {flips[['x', 'setting', 'baseline', 'finding']].to_dict('records')}"
            )


def test_a_floating_point_tie_is_not_counted_as_negative():
    """ECA − none at the curve's whole split is exactly 0 (its runs get the same crops right), but the mean of the
    per-seed differences of balanced accuracies computes as about −1e-17: the direction count must not call it
    negative, while a real difference, however small, still counts."""
    assert negatives([-1.3877787807814457e-17, -0.004, 0.002, float("nan")]) == (1, 3)
    assert negatives([1e-17, 0.0]) == (0, 2)
    assert negatives([-2e-9]) == (1, 1)
