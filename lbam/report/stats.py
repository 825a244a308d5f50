"""Paired comparisons of each LBAM setting with each baseline of its context (runs that differ in the
attention alone), on balanced accuracy:

- per seed, McNemar's exact test on the per-sample predictions (the runs' test ids and targets must agree);
- across seeds (n ≥ 3), a paired t-test of d_i = LBAM_i − baseline_i, Holm-corrected over the baselines;
- non-inferiority: the one-sided (1 − α) lower confidence bound of d̄ exceeds −margin; equivalence (TOST):
  the (1 − 2α) confidence interval lies inside ±margin. The experiment states the margin in advance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from lbam.report.rows import GROUP, ReportError, Run, analysis

MIN_SEEDS = 3
FINDINGS = ("differ", "equivalent", "non-inferior", "inconclusive")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: binomial(b + c, 1/2) on the discordant pairs b, c."""
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n)


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values: the i-th smallest of m (i = 0, 1, …) becomes
    max over j ≤ i of min(1, (m − j)·p_(j))."""
    s = pd.Series(p, dtype=float).sort_values(kind="stable")
    return (s * np.arange(len(s), 0, -1)).clip(upper=1.0).cummax().sort_index().tolist()


def paired_t(d: list[float], alpha: float = 0.05) -> dict[str, float]:
    """n, d̄, the sample std s of the d_i (ddof = 1), the two-sided p of t = d̄ / (s/√n) on n − 1 degrees of
    freedom and the (1 − 2α) CI d̄ ± t_{1−α, n−1}·s/√n (low: the one-sided (1 − α) lower bound); only n and
    d̄ below MIN_SEEDS. p_holm is left to `compare`."""
    n = len(d)
    mean = sum(d) / n if d else math.nan
    r = {"n": n, "mean": mean} | dict.fromkeys(("std", "p", "p_holm", "low", "high"), math.nan)
    if n < MIN_SEEDS:
        return r
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    if std < 1e-12:  # the same difference on every seed: t is ±∞ (or 0/0 when it is 0)
        return r | {"std": 0.0, "p": 1.0 if mean == 0 else 0.0, "low": mean, "high": mean}
    se = std / math.sqrt(n)
    half = stats.t.ppf(1 - alpha, n - 1) * se
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return r | {"std": std, "p": p, "low": mean - half, "high": mean + half}


def verdict(r: dict, margin: float, alpha: float) -> tuple[str, str]:
    """(finding, verdict in words); the finding is the first of FINDINGS that holds."""
    m = f"{100 * margin:g} pp"
    if r["n"] < MIN_SEEDS:
        return (
            "inconclusive",
            f"inconclusive: {r['n']} paired seed(s), the across-seed test needs ≥ {MIN_SEEDS}",
        )
    found = []
    if r["p_holm"] < alpha:
        side = "higher" if r["mean"] > 0 else "lower"
        found.append(("differ", f"differ: LBAM {side} (paired t, Holm p = {r['p_holm']:.3g})"))
    if -margin < r["low"] and r["high"] < margin:
        found.append(("equivalent", f"equivalent within ±{m} (TOST)"))
    elif r["low"] > -margin:
        found.append(("non-inferior", f"non-inferior (LBAM ≥ baseline − {m})"))
    if not found:
        return "inconclusive", f"inconclusive (Holm p = {r['p_holm']:.3g}; lower bound ≤ −{m})"
    return found[0][0], "; ".join(text for _, text in found)


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


def mcnemar(x: Run, y: Run) -> str:
    """'s<seed>: b/c p=…' with b = samples x gets right and y wrong, c = the reverse."""
    b = sum(x.preds[i][1] == t != y.preds[i][1] for i, (t, _) in x.preds.items())
    c = sum(x.preds[i][1] != t == y.preds[i][1] for i, (t, _) in x.preds.items())
    return f"s{x.row.seed}: {b}/{c} p={mcnemar_exact(b, c):.3g}"


def diffs(pp: list[tuple[Run, Run]]) -> list[float]:
    return [x.row.test_balanced_acc - y.row.test_balanced_acc for x, y in pp]


def compare(g: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """One record per (context, LBAM setting, baseline setting) of a group; Holm over each LBAM setting's
    baselines in its context."""
    out = []
    for ctx, a, by in _contexts(g, runs):
        alpha, margin = float(a["alpha"]), float(a["noninferiority_margin"])
        lbams = [s for s, rows in by.items() if rows["attention"].iloc[0] == "lbam"]
        for lb in lbams:
            head = {"context": ctx, **by[lb][["shown", "x", "whole"]].iloc[0].to_dict(), "lbam": lb}
            family = []
            for base in (s for s in by if s not in lbams):
                pp = pairs(by[lb], by[base], runs)
                tail = {"margin": margin, "alpha": alpha, "mcnemar": "; ".join(mcnemar(x, y) for x, y in pp)}
                family.append(head | {"baseline": base} | paired_t(diffs(pp), alpha) | tail)
            tested = [r for r in family if not math.isnan(r["p"])]
            for r, p in zip(tested, holm([r["p"] for r in tested])):
                r["p_holm"] = p
            out += [r | dict(zip(("finding", "verdict"), verdict(r, margin, alpha))) for r in family]
    return pd.DataFrame([{**g[GROUP].iloc[0].to_dict(), **r} for r in out])


def delta_vs_none(g: pd.DataFrame, runs: list[Run]) -> dict[tuple[str, str], float]:
    """Mean over shared seeds of (setting − none) balanced accuracy, keyed by (context, setting)."""
    out = {}
    for ctx, _, by in _contexts(g, runs):
        for s, rows in by.items():
            d = diffs(pairs(rows, by["none"], runs)) if "none" in by else []
            out[ctx, s] = sum(d) / len(d) if d else math.nan
    return out
