"""Paired comparisons of the settings of each context (runs that differ in the attention alone) on balanced
accuracy recomputed from the predictions, as results/runs/embodiment1_curve/PLAN.md fixes them:

- families: each LBAM setting vs every non-LBAM setting (F1, one family per LBAM setting) and every setting vs
  `none` (F2); Δ = setting − baseline, paired by seed;
- three tests per comparison, each Holm-corrected within (family, context, test type): difference (two-sided,
  H0: Δ = 0), non-inferiority (H0: Δ ≤ −margin) and equivalence (TOST: the larger of the two one-sided p);
- each computed twice: (a) over seeds only, a paired t-test with its (1 − 2α) t-interval; (b) over seeds and
  test smears, the paired two-level bootstrap of `lbam.report.bootstrap` with its percentile interval;
- one verdict per comparison: a comparison in two families (lbam − none) takes, per test and method, the
  larger of its Holm-adjusted p-values (the amendment of 2026-12-07);
- verdict per method: *differ* if the difference test rejects, *equivalent* if TOST rejects, *non-inferior*
  if non-inferiority rejects (and not equivalent), else *inconclusive*; equivalence and non-inferiority only
  in the experiment's primary contexts (``analysis.primary``; all when null). A bootstrap test whose adjusted
  p lies within 2 Monte Carlo SE of α is undecided, and where deciding it either way changes the finding, (b)
  is *at the threshold*. The verdict stated is the common one of (a) and (b), else "at the threshold" or
  "a/b disagree";
- per seed, McNemar's exact test on the two runs' predictions; per context, the ceiling of the test set
  (crops wrong in every run cap the balanced accuracy any setting can reach).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from lbam.report import bootstrap as boot
from lbam.report import direction, power
from lbam.report.outcomes import balanced_acc, ceiling, counts, mcnemar_counts, outcomes, without
from lbam.report.rows import GROUP, ReportError, Run, analysis
from lbam.report.verdicts import (  # noqa: F401 (re-exported: the report's modules import them from here)
    DISAGREE,
    FINDINGS,
    MC_BAND,
    METHODS,
    MIN_SEEDS,
    TESTS,
    THRESHOLD,
    finding_of,
    holm,
    holm_se,
    one_verdict,
    verdict,
)

NONE = "none"
VS_NONE = "each vs none"  # family F2


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: binomial(b + c, 1/2) on the discordant pairs b, c."""
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n)


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


def _claims(a: dict, x: float) -> bool:
    """Whether a context may carry equivalence and non-inferiority verdicts: the experiment's primary contexts
    (``analysis.primary``, values of its curve's x axis), or every context when it names none."""
    primary = a.get("primary")
    return primary is None or (not math.isnan(x) and any(math.isclose(x, float(v)) for v in primary))


def _holm(recs: list[dict]) -> None:
    """Holm within (family, context, test type), per method, with the bootstrap's MC SEs carried along."""
    for pre in METHODS.values():
        for test in TESTS:
            tested = [r for r in recs if not math.isnan(r[pre + test])]
            se = [r.get(f"{pre}{test}_se", 0.0) for r in tested]
            adjusted, adjusted_se = holm_se([r[pre + test] for r in tested], se)
            for r, p, e in zip(tested, adjusted, adjusted_se):
                r[f"{pre}{test}_holm"], r[f"{pre}{test}_holm_se"] = p, e
    for r in recs:
        for pre in METHODS.values():
            for t in TESTS:
                r.setdefault(f"{pre}{t}_holm", math.nan)
                r.setdefault(f"{pre}{t}_holm_se", 0.0 if pre == "" else math.nan)


def _compare_context(ctx, a, by, runs, drop, seed: int) -> tuple[list[dict], dict | None]:
    alpha, margin = float(a["alpha"]), float(a["noninferiority_margin"])
    fams = families(by)
    if not fams:
        return [], None
    o = _outcomes(by, runs, drop)
    ba = balanced_acc(o)
    head = {"context": ctx, **next(iter(by.values()))[["shown", "x", "whole"]].iloc[0].to_dict()}
    c = ceiling(o)  # the context's, repeated on each of its records
    head |= {f"ceiling_{k}": " ".join(v) if k == "wrong_all" else v for k, v in c.items()}
    claims = _claims(a, float(head["x"]))
    head["claims"] = claims
    comps = []  # (family, A, B, seeds, A's runs, B's runs), in family order
    for family, comparisons in fams:
        for sa, sb in comparisons:
            seeds = sorted(set(by[sa]["seed"]) & set(by[sb]["seed"]))
            ia = np.array([o.run(sa, s) for s in seeds], dtype=np.int64)
            ib = np.array([o.run(sb, s) for s in seeds], dtype=np.int64)
            comps.append((family, sa, sb, seeds, ia, ib))
    modules = [s for s in by if s != NONE]
    pooled = (
        direction.pooled_runs(o, modules) if NONE in by and a.get("primary") is not None and claims else None
    )
    booted = [(ia, ib) for *_, seeds, ia, ib in comps if len(seeds) >= MIN_SEEDS] + (
        [pooled] if pooled else []
    )
    dstars = iter(boot.resampled_deltas(*counts(o), booted, seed=seed)) if booted else iter(())
    out = []
    for family, sa, sb, seeds, ia, ib in comps:
        r = head | {"family": family, "setting": sa, "baseline": sb, "families": 1}
        r |= paired_t((ba[ia] - ba[ib]).tolist(), alpha, margin)
        b = dict.fromkeys(("low", "high", "se", *TESTS, *(f"{t}_se" for t in TESTS)), math.nan)
        if len(seeds) >= MIN_SEEDS:
            b = boot.summary(next(dstars), margin, alpha)
        m = sum(f == family for f, *_ in comps)
        r |= power.columns(r["std"], len(seeds), b["se"], m, alpha, margin)
        mc = [(s, *mcnemar_counts(o, i, j)) for s, i, j in zip(seeds, ia, ib)]
        mc_text = "; ".join(f"s{s}: {x}/{y} p={mcnemar_exact(x, y):.3g}" for s, x, y in mc)
        out.append(r | {f"boot_{k}": v for k, v in b.items()} | {"margin": margin, "alpha": alpha, "mcnemar": mc_text})  # fmt: skip
    for family in dict.fromkeys(f for f, *_ in comps):
        _holm([r for r in out if r["family"] == family])
    one_verdict(out)
    for r in out:
        (fa, ta), (fb, tb) = verdict(r, margin, alpha, "t", claims), verdict(r, margin, alpha, "boot", claims)
        r |= {"finding_t": fa, "verdict_t": ta, "finding_boot": fb, "verdict_boot": tb}
        if fa == fb:
            r["finding"], r["verdict"] = fa, ta
        elif fb == THRESHOLD:
            r["finding"], r["verdict"] = THRESHOLD, f"{THRESHOLD} ((a) {fa}; (b) {tb})"
        else:
            r["finding"], r["verdict"] = DISAGREE, f"inconclusive ({DISAGREE}: (a) {fa}, (b) {fb})"
    pool = None
    if pooled:  # the exploratory pooled test of the modules vs none, at the primary sizes
        pool = head | {"setting": "modules (pooled)", "baseline": NONE, "alpha": alpha}
        pool |= direction.summarize(ba, pooled, next(dstars), len(modules), alpha)
    return out, pool


_CACHE: dict[tuple, tuple[pd.DataFrame, pd.DataFrame]] = {}


def compare_all(
    g: pd.DataFrame, runs: list[Run], drop: set[str] | None = None, seed: int = boot.SEED
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparisons, pooled direction tests) of a group: one record per (context, family, setting, baseline),
    both methods, Holm-corrected, one verdict per comparison, with the context's ceiling (columns ceiling_*)
    and power columns; and per primary context the exploratory pooled test of the modules vs none, Holm over
    the contexts. ``drop``: sample ids removed from the test set (the label-audit sensitivity analysis);
    ``seed``: the bootstrap's generator seed. Cached per process (the bootstrap takes seconds)."""
    key = (id(runs), tuple(g["run"]), frozenset(drop or ()), seed)
    if key not in _CACHE:
        out, pools = [], []
        for ctx, a, by in _contexts(g, runs):
            recs, pool = _compare_context(ctx, a, by, runs, drop, seed)
            out += recs
            pools += [pool] if pool else []
        for pre in ("", "boot_"):
            tested = [r for r in pools if not math.isnan(r[f"{pre}p"])]
            ps, ses = [r[f"{pre}p"] for r in tested], [r.get(f"{pre}p_se", 0.0) for r in tested]
            for r, p, e in zip(tested, *holm_se(ps, ses)):
                r[f"{pre}p_holm"], r[f"{pre}p_holm_se"] = p, e
        first = g[GROUP].iloc[0].to_dict()
        _CACHE[key] = (
            pd.DataFrame([{**first, **r} for r in out]),
            pd.DataFrame([{**first, **r} for r in pools]),
        )
    p, q = _CACHE[key]
    return p.copy(), q.copy()


def compare(
    g: pd.DataFrame, runs: list[Run], drop: set[str] | None = None, seed: int = boot.SEED
) -> pd.DataFrame:
    """The comparisons of `compare_all`."""
    return compare_all(g, runs, drop, seed)[0]


def delta_vs_none(g: pd.DataFrame, runs: list[Run]) -> dict[tuple[str, str], float]:
    """Mean over shared seeds of (setting − none) balanced accuracy, keyed by (context, setting)."""
    out = {}
    for ctx, _, by in _contexts(g, runs):
        for s, rows in by.items():
            d = diffs(pairs(rows, by[NONE], runs)) if NONE in by else []
            out[ctx, s] = sum(d) / len(d) if d else math.nan
    return out
