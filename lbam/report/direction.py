"""The direction of the module − none differences of one context (PLAN.md amendment of 2026-12-07): how many are
negative, and an **exploratory** pooled test of "attention modules vs none" (declared after the data were seen):
per seed, the mean over the module settings of (module − none) balanced accuracy; a paired t-test over the seeds
and the two-level bootstrap over seeds and test smears, both two-sided. Holm across the contexts is the caller's.
"""

from __future__ import annotations

import math

import numpy as np

from lbam.report import bootstrap

NONE = "none"


def pooled_runs(o, settings: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(A, B) run indices of the pooled comparison: A (modules, n), each seed's module runs, B (n,) its none run,
    over the seeds that every module and none ran (so each seed's mean is over the same modules); None with
    fewer than MIN_SEEDS such seeds or no module."""
    from lbam.report.stats import MIN_SEEDS  # stats imports this module

    ran = set(o.keys)
    seeds = sorted(seed for s, seed in o.keys if s == NONE and all((m, seed) in ran for m in settings))
    if not settings or len(seeds) < MIN_SEEDS:
        return None
    a = np.array([[o.run(m, s) for s in seeds] for m in settings], dtype=np.int64)
    return a, np.array([o.run(NONE, s) for s in seeds], dtype=np.int64)


def summarize(
    ba: np.ndarray, runs: tuple[np.ndarray, np.ndarray], dstar: np.ndarray, modules: int, alpha: float
) -> dict:
    """The pooled test of `pooled_runs` from ``ba`` (R,) per run and its resampled Δ̄ ``dstar`` (B,): the paired
    t-test over seeds and the bootstrap, both two-sided, with the (1 − 2α) intervals."""
    from lbam.report.stats import paired_t

    a, b = runs
    t = paired_t((ba[a].mean(0) - ba[b]).tolist(), alpha)
    boot = bootstrap.summary(dstar, margin=0.0, alpha=alpha)
    return {
        "modules": modules,
        "n": t["n"],
        "mean": t["mean"],
        "low": t["low"],
        "high": t["high"],
        "p": t["p"],
        "boot_low": boot["low"],
        "boot_high": boot["high"],
        "boot_p": boot["p"],
        "boot_p_se": boot["p_se"],
    }


# Below this a mean difference of balanced accuracies is a tie left by floating point (a real one between two runs
# on 878 test crops is at least ~1e-6): ECA − none at the curve's whole split is exactly 0 and computes as −1e-17.
TIE = 1e-9


def negatives(deltas) -> tuple[int, int]:
    """(negative, all) of the module − none mean differences of one context; a tie (|Δ| < TIE) is not negative."""
    known = [d for d in deltas if not math.isnan(d)]
    return sum(d < -TIE for d in known), len(known)
