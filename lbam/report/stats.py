"""Paired comparisons of the settings of each context (runs that differ in the attention alone) on balanced
accuracy recomputed from the predictions, as results/runs/embodiment1_curve/PLAN.md fixes them:

- families: each LBAM setting vs every non-LBAM setting (F1, one family per LBAM setting) and every setting vs
  `none` (F2); Δ = setting − baseline, paired by seed;
- three tests per comparison, each Holm-corrected within (family, context, test type): difference (two-sided,
  H0: Δ = 0), non-inferiority (H0: Δ ≤ −margin) and equivalence (TOST: the larger of the two one-sided p);
- each computed twice: (a) over seeds only, a paired t-test with its (1 − 2α) t-interval; (b) over seeds and
  test smears, the paired two-level bootstrap of `lbam.report.bootstrap` with its percentile interval;
- verdict per method: *differ* if the difference test rejects, *equivalent* if TOST rejects, *non-inferior*
  if non-inferiority rejects (and not equivalent), else *inconclusive*; the verdict stated is the common one
  of (a) and (b), else "a/b disagree";
- per seed, McNemar's exact test on the two runs' predictions; per context, the ceiling of the test set
  (crops wrong in every run cap the balanced accuracy any setting can reach).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from lbam.report import bootstrap as boot
from lbam.report.outcomes import balanced_acc, ceiling, counts, mcnemar_counts, outcomes, without
from lbam.report.rows import GROUP, ReportError, Run, analysis

MIN_SEEDS = 3
FINDINGS = ("differ", "equivalent", "non-inferior", "inconclusive")
DISAGREE = "a/b disagree"
TESTS = ("p", "p_ni", "p_tost")  # difference, non-inferiority, equivalence (TOST)
METHODS = {"t": "", "boot": "boot_"}  # (a) seeds only, (b) seeds and test smears: prefix of their columns
NONE = "none"
VS_NONE = "each vs none"  # family F2


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: binomial(b + c, 1/2) on the discordant pairs b, c."""
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n)


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values: the i-th smallest of m (i = 0, 1, …) becomes
    max over j ≤ i of min(1, (m − j)·p_(j))."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(np.minimum(1.0, p[order] * np.arange(len(p), 0, -1)))
    return adjusted.tolist()


def paired_t(d: list[float], alpha: float = 0.05, margin: float = 0.01) -> dict[str, float]:
    """n, d̄, the sample std s of the d_i (ddof = 1), the (1 − 2α) CI d̄ ± t_{1−α, n−1}·s/√n and three p-values
    of t-statistics on n − 1 degrees of freedom: two-sided for Δ = 0 (p), one-sided for Δ ≤ −margin (p_ni),
    and TOST, the larger of p_ni and the one-sided p for Δ ≥ +margin (p_tost). Only n and d̄ below MIN_SEEDS;
    the Holm-adjusted p_holm, p_ni_holm and p_tost_holm are nan, left to `compare`."""
    n = len(d)
    mean = sum(d) / n if d else math.nan
    holms = [f"{t}_holm" for t in TESTS]  # left to `compare`, which knows the family
    r = {"n": n, "mean": mean} | dict.fromkeys(("std", "low", "high", *TESTS, *holms), math.nan)
    if n < MIN_SEEDS:
        return r
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    if std < 1e-12:  # the same difference on every seed: every t is ±∞ (or 0/0 at a bound): the sign decides
        p_ni, p_up = float(mean <= -margin), float(mean >= margin)
        p = {"p": 1.0 if mean == 0 else 0.0, "p_ni": p_ni, "p_tost": max(p_ni, p_up)}
        return r | {"std": 0.0, "low": mean, "high": mean} | p
    se = std / math.sqrt(n)
    half = stats.t.ppf(1 - alpha, n - 1) * se
    p_ni = float(stats.t.sf((mean + margin) / se, n - 1))
    p_up = float(stats.t.cdf((mean - margin) / se, n - 1))
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return r | {"std": std, "low": mean - half, "high": mean + half, "p": p, "p_ni": p_ni, "p_tost": max(p_ni, p_up)}  # fmt: skip


def verdict(r: dict, margin: float, alpha: float, method: str = "t") -> tuple[str, str]:
    """(finding, verdict in words) of one method's Holm-adjusted p-values; the finding is the first of FINDINGS
    that holds."""
    pre, m = METHODS[method], f"{100 * margin:g} pp"
    if r["n"] < MIN_SEEDS:
        return "inconclusive", f"inconclusive: {r['n']} paired seed(s), the tests need ≥ {MIN_SEEDS}"
    p = {t: r[f"{pre}{t}_holm"] for t in TESTS}
    found = []
    if p["p"] < alpha:
        found.append(("differ", f"differ: {'higher' if r['mean'] > 0 else 'lower'} (Holm p = {p['p']:.3g})"))
    if p["p_tost"] < alpha:
        found.append(("equivalent", f"equivalent within ±{m} (TOST Holm p = {p['p_tost']:.3g})"))
    elif p["p_ni"] < alpha:
        found.append(("non-inferior", f"non-inferior: ≥ baseline − {m} (Holm p = {p['p_ni']:.3g})"))
    if not found:
        return "inconclusive", f"inconclusive (Holm p = {p['p']:.3g}; NI Holm p = {p['p_ni']:.3g})"
    return found[0][0], "; ".join(text for _, text in found)


def families(by: dict[str, pd.DataFrame]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(family, [(setting, baseline), …]) of one context's settings: each LBAM setting vs every non-LBAM
    setting (F1), then every setting vs none (F2)."""
    lbams = [s for s, rows in by.items() if rows["attention"].iloc[0] == "lbam"]
    others = [s for s in by if s not in lbams]
    out = [(f"{lb} vs baselines", [(lb, b) for b in others]) for lb in lbams if others]
    vs_none = [(s, NONE) for s in by if s != NONE]
    return out + ([(VS_NONE, vs_none)] if NONE in by and vs_none else [])


def pairs(a: pd.DataFrame, b: pd.DataFrame, runs: list[Run]) -> list[tuple[Run, Run]]:
    """The ok runs of two settings of one context, matched by seed; their test ids and targets must agree."""
    by_seed = {s: runs[i] for s, i in zip(b["seed"], b["run"])}
    out = [(runs[i], by_seed[s]) for s, i in zip(a["seed"], a["run"]) if s in by_seed]
    for x, y in out:
        if x.preds.keys() != y.preds.keys() or any(x.preds[i][0] != y.preds[i][0] for i in x.preds):
            raise ReportError(
                f"runs {x.path} and {y.path} differ in test samples or targets: cannot pair them"
            )
    return out


def _contexts(g: pd.DataFrame, runs: list[Run]):
    """(context, analysis, {setting: ok rows}) per context of one group."""
    for ctx, rows in g[g["status"] == "ok"].groupby("context", sort=False):
        yield ctx, analysis(rows, runs), dict(tuple(rows.groupby("setting", sort=False)))


def _outcomes(by: dict[str, pd.DataFrame], runs: list[Run], drop: set[str] | None):
    rows = pd.concat(by.values())
    o = outcomes([runs[i] for i in rows["run"]], list(rows["setting"]))
    return without(o, drop) if drop else o


def diffs(pp: list[tuple[Run, Run]]) -> list[float]:
    return [x.row.test_balanced_acc - y.row.test_balanced_acc for x, y in pp]


def _compare_context(ctx, a, by, runs, drop) -> list[dict]:
    alpha, margin = float(a["alpha"]), float(a["noninferiority_margin"])
    fams = families(by)
    if not fams:
        return []
    o = _outcomes(by, runs, drop)
    ba = balanced_acc(o)
    draws = boot.draw(len(o.smears), max(len(rows) for rows in by.values()))
    bstar = boot.resampled_balanced_acc(*counts(o), draws.smears)  # every run on every resample: (B, R)
    head = {"context": ctx, **next(iter(by.values()))[["shown", "x", "whole"]].iloc[0].to_dict()}
    c = ceiling(o)  # the context's, repeated on each of its records
    head |= {f"ceiling_{k}": " ".join(v) if k == "wrong_all" else v for k, v in c.items()}
    out = []
    for family, comparisons in fams:
        recs = []
        for sa, sb in comparisons:
            seeds = sorted(set(by[sa]["seed"]) & set(by[sb]["seed"]))
            ia = np.array([o.run(sa, s) for s in seeds], dtype=np.int64)
            ib = np.array([o.run(sb, s) for s in seeds], dtype=np.int64)
            r = head | {"family": family, "setting": sa, "baseline": sb}
            r |= paired_t((ba[ia] - ba[ib]).tolist(), alpha, margin)
            b = dict.fromkeys(("low", "high", *TESTS), math.nan)
            if len(seeds) >= MIN_SEEDS:
                dstar = boot.deltas(bstar, ia, ib, boot.seed_multiplicities(draws, len(seeds)))
                b = boot.summary(dstar, margin, alpha)
            mc = [(s, *mcnemar_counts(o, i, j)) for s, i, j in zip(seeds, ia, ib)]
            mc_text = "; ".join(f"s{s}: {x}/{y} p={mcnemar_exact(x, y):.3g}" for s, x, y in mc)
            recs.append(r | {f"boot_{k}": v for k, v in b.items()} | {"margin": margin, "alpha": alpha, "mcnemar": mc_text})  # fmt: skip
        for pre in METHODS.values():  # Holm within (family, context, test type), per method
            for test in TESTS:
                tested = [r for r in recs if not math.isnan(r[pre + test])]
                for r, p in zip(tested, holm([r[pre + test] for r in tested])):
                    r[f"{pre}{test}_holm"] = p
        for r in recs:
            r.update({f"{pre}{t}_holm": r.get(f"{pre}{t}_holm", math.nan) for pre in METHODS.values() for t in TESTS})  # fmt: skip
            (fa, ta), (fb, tb) = verdict(r, margin, alpha, "t"), verdict(r, margin, alpha, "boot")
            r |= {"finding_t": fa, "verdict_t": ta, "finding_boot": fb, "verdict_boot": tb}
            r["finding"] = fa if fa == fb else DISAGREE
            r["verdict"] = ta if fa == fb else f"inconclusive ({DISAGREE}: (a) {fa}, (b) {fb})"
        out += recs
    return out


def compare(g: pd.DataFrame, runs: list[Run], drop: set[str] | None = None) -> pd.DataFrame:
    """One record per (context, family, setting, baseline) of a group, both methods, Holm-corrected, with the
    context's ceiling (`lbam.report.outcomes.ceiling`, columns ceiling_*); ``drop``: sample ids removed from the
    test set (the label-audit sensitivity analysis)."""
    out = []
    for ctx, a, by in _contexts(g, runs):
        out += _compare_context(ctx, a, by, runs, drop)
    return pd.DataFrame([{**g[GROUP].iloc[0].to_dict(), **r} for r in out])


def delta_vs_none(g: pd.DataFrame, runs: list[Run]) -> dict[tuple[str, str], float]:
    """Mean over shared seeds of (setting − none) balanced accuracy, keyed by (context, setting)."""
    out = {}
    for ctx, _, by in _contexts(g, runs):
        for s, rows in by.items():
            d = diffs(pairs(rows, by[NONE], runs)) if NONE in by else []
            out[ctx, s] = sum(d) / len(d) if d else math.nan
    return out
