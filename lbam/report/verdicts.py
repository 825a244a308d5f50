"""The verdict rules of the analysis plans (embodiment1_curve's PLAN.md and its amendment of 2026-12-07,
embodiment1_bridge's PLAN.md): Holm's step-down adjustment with the Monte Carlo SE of each adjusted bootstrap p,
one verdict per comparison (a comparison in two families takes the larger adjusted p), and the finding of a
method's three tests, with "at the threshold" where a bootstrap p within MC_BAND Monte Carlo SE of α would
decide it."""

from __future__ import annotations

import itertools
import math

import numpy as np

FINDINGS = ("differ", "equivalent", "non-inferior", "inconclusive")
THRESHOLD = "at the threshold"  # (b) within Monte Carlo error of α where it decides the finding
DISAGREE = "a/b disagree"
MC_BAND = 2.0  # a bootstrap p within this many Monte Carlo SE of α decides nothing
MIN_SEEDS = 3
TESTS = ("p", "p_ni", "p_tost")  # difference, non-inferiority, equivalence (TOST)
METHODS = {"t": "", "boot": "boot_"}  # (a) seeds only, (b) seeds and test smears: prefix of their columns


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values: the i-th smallest of m (i = 0, 1, …) becomes
    max over j ≤ i of min(1, (m − j)·p_(j))."""
    return holm_se(p, [0.0] * len(p))[0]


def holm_se(p: list[float], se: list[float]) -> tuple[list[float], list[float]]:
    """Holm's adjusted p-values and their Monte Carlo SE: the multiplier (m − j) times the SE of the raw p_(j)
    that sets the running maximum (0 where the adjusted p is capped at 1)."""
    p, se = np.asarray(p, dtype=float), np.asarray(se, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * np.arange(len(p), 0, -1))
    scaled_se = np.where(scaled < 1.0, se[order] * np.arange(len(p), 0, -1), 0.0)
    adjusted, adjusted_se = np.empty_like(p), np.empty_like(p)
    best, best_se = -np.inf, 0.0
    for k, i in enumerate(order):
        if scaled[k] > best:
            best, best_se = scaled[k], scaled_se[k]
        adjusted[i], adjusted_se[i] = best, best_se
    return adjusted.tolist(), adjusted_se.tolist()


def finding_of(rejects: dict[str, bool], claims: bool = True) -> str:
    """The first of FINDINGS that the tests' decisions give; without ``claims`` (a context outside the primary
    ones) only the difference test speaks."""
    if rejects["p"]:
        return "differ"
    if claims and rejects["p_tost"]:
        return "equivalent"
    if claims and rejects["p_ni"]:
        return "non-inferior"
    return "inconclusive"


def decide(p: dict[str, float], se: dict[str, float], alpha: float, claims: bool = True) -> str:
    """The finding of Holm-adjusted p-values with Monte Carlo SEs: a test within MC_BAND SE of α is undecided;
    when deciding the undecided tests either way gives more than one finding, THRESHOLD."""
    open_ = [t for t in TESTS if abs(p[t] - alpha) < MC_BAND * se.get(t, 0.0)]
    found = {
        finding_of(
            {t: (p[t] < alpha if t not in open_ else dict(zip(open_, combo))[t]) for t in TESTS}, claims
        )
        for combo in itertools.product((False, True), repeat=len(open_))
    }
    return found.pop() if len(found) == 1 else THRESHOLD


def verdict(r: dict, margin: float, alpha: float, method: str = "t", claims: bool = True) -> tuple[str, str]:
    """(finding, verdict in words) of one method's Holm-adjusted p-values (with their MC SEs for the bootstrap);
    the finding is the first of FINDINGS that holds."""
    pre, m = METHODS[method], f"{100 * margin:g} pp"
    if r["n"] < MIN_SEEDS:
        return "inconclusive", f"inconclusive: {r['n']} paired seed(s), the tests need ≥ {MIN_SEEDS}"
    p = {t: r[f"{pre}{t}_holm"] for t in TESTS}
    se = {t: r.get(f"{pre}{t}_holm_se", 0.0) for t in TESTS}
    found = decide(p, se, alpha, claims)
    if found == THRESHOLD:
        near = ", ".join(
            f"{t} {p[t]:.3g} ± {se[t]:.2g}" for t in TESTS if abs(p[t] - alpha) < MC_BAND * se[t]
        )
        return THRESHOLD, f"at the threshold: Holm p within {MC_BAND:g} MC SE of α = {alpha:g} ({near})"
    words = []
    if p["p"] < alpha:
        words.append(f"differ: {'higher' if r['mean'] > 0 else 'lower'} (Holm p = {p['p']:.3g})")
    if claims and p["p_tost"] < alpha:
        words.append(f"equivalent within ±{m} (TOST Holm p = {p['p_tost']:.3g})")
    elif claims and p["p_ni"] < alpha:
        words.append(f"non-inferior: ≥ baseline − {m} (Holm p = {p['p_ni']:.3g})")
    if words:
        return found, "; ".join(words)
    if not claims:
        return found, f"no difference found (Holm p = {p['p']:.3g}); no equivalence claim at this size"
    return found, f"inconclusive (Holm p = {p['p']:.3g}; NI Holm p = {p['p_ni']:.3g})"


def one_verdict(recs: list[dict]) -> None:
    """A comparison in two families gets, per test and method, the larger Holm-adjusted p (and its SE)."""
    by: dict[tuple[str, str], list[dict]] = {}
    for r in recs:
        by.setdefault((r["setting"], r["baseline"]), []).append(r)
    for same in (v for v in by.values() if len(v) > 1):
        for pre in METHODS.values():
            for t in TESTS:
                key = f"{pre}{t}_holm"
                worst = max(same, key=lambda r: -math.inf if math.isnan(r[key]) else r[key])
                for r in same:
                    r[key], r[f"{key}_se"] = worst[key], worst.get(f"{key}_se", 0.0)
                    r["families"] = len(same)


def unique(p):
    """One record per comparison (a comparison in two families is one comparison, with one verdict)."""
    return p.drop_duplicates(["context", "setting", "baseline"])


def stated_count(p) -> tuple[int, int]:
    """(stated verdicts, comparisons): a verdict is stated where it is one of FINDINGS."""
    u = unique(p)
    return int(u["finding"].isin(FINDINGS).sum()), len(u)


def changed_count(p, q) -> tuple[int, int]:
    """(stated verdicts of ``p`` whose finding differs in ``q``, stated verdicts of ``p``)."""
    key = ["context", "setting", "baseline"]
    both = unique(p).merge(unique(q)[[*key, "finding"]], on=key, suffixes=("", "_q"))
    stated = both["finding"].isin(FINDINGS)
    return int((stated & (both["finding"] != both["finding_q"])).sum()), int(stated.sum())
