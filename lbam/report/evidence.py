"""What stands beside the verdicts (PLAN.md amendment of 2026-12-07): per context the power the design had, the
direction of the module − none differences with the exploratory pooled test, and the count of stated verdicts.
Each a small table or line, for the README block and the full tables alike."""

from __future__ import annotations

import math

import pandas as pd

from lbam.report.tables import DASH, interval, pct, pval
from lbam.report.verdicts import MIN_SEEDS, changed_count, unique  # noqa: F401 (changed_count: re-exported)

VS_NONE = "each vs none"


def _range(values: pd.Series, scale: float = 100.0, digits: int = 1, unit: str = "") -> str:
    v = values.dropna()
    if v.empty:
        return DASH
    lo, hi = scale * v.min(), scale * v.max()
    same = math.isclose(lo, hi, abs_tol=10**-digits)
    return f"{lo:.{digits}f}{unit}" if same else f"{lo:.{digits}f}–{hi:.{digits}f}{unit}"


def power_table(p: pd.DataFrame, first: str) -> pd.DataFrame:
    """Per context (label column ``first``): seeds, the SD of the paired Δ, the Δ detectable with 80 % power at
    Holm's last (α) and first (α/m) step over seeds (a) and with the test smears (b), TOST's power at a true Δ of
    0 (first … last step), and the seeds TOST over seeds would need for 80 %; ranges over the comparisons."""
    rows = []
    for label, pc in unique(p).groupby(first, sort=False):
        pc = pc[pc["n"] >= MIN_SEEDS]
        if pc.empty:
            continue
        need = pd.concat([pc["seeds_for_tost_last"], pc["seeds_for_tost_first"]]).dropna()
        tost = {
            m: pd.concat([pc[f"tost_power_first_{m}"], pc[f"tost_power_last_{m}"]]) for m in ("t", "boot")
        }
        rows.append(
            {
                first: label,
                "seeds": _range(pc["n"], 1, 0),
                "SD of Δ (pp)": _range(pc["std"]),
                "detectable Δ, (a) (pp)": f"{_range(pc['detect_last_t'])} … {_range(pc['detect_first_t'])}",
                "detectable Δ, (b) (pp)": f"{_range(pc['detect_last_boot'])} … {_range(pc['detect_first_boot'])}",
                "TOST power at Δ = 0, (a)": _range(tost["t"], 100, 0, " %"),
                "TOST power at Δ = 0, (b)": _range(tost["boot"], 100, 0, " %"),
                "seeds for 80 % (a)": "> 100,000" if need.isin([math.inf]).any() else _range(need, 1, 0),
            }
        )
    return pd.DataFrame(rows)


def power_caption(alpha: float, margin: float) -> str:
    return (
        "Power of these comparisons, from the observed SD of the paired Δ (80 % power; Holm's last step α = "
        f"{alpha:g} … its first, α/m; ranges over the comparisons): the |Δ| a difference test detects, and the "
        f"power TOST (±{100 * margin:g} pp) had at a true Δ of 0; (a) over seeds, (b) with the test smears (the "
        "bootstrap's SE, itself an over-estimate). Where TOST's power is low, an *inconclusive* verdict is what the "
        "design could give, not evidence of a difference."
    )


def direction_table(p: pd.DataFrame, pooled: pd.DataFrame, first: str) -> pd.DataFrame:
    """Per context: how many module − none mean differences are negative, and the exploratory pooled test."""
    rows = []
    f2 = p[p["family"] == VS_NONE]
    for label, pc in f2.groupby(first, sort=False):
        q = pooled[pooled["context"] == pc["context"].iloc[0]] if len(pooled) else pooled
        r = {first: label, "module − none < 0": f"{int((pc['mean'] < 0).sum())} of {len(pc)}"}
        if len(q):
            s = q.iloc[0]
            r |= {
                "pooled Δ (pp)": pct(s["mean"], signed=True),
                "(a) 90 % CI": interval(s["low"], s["high"]),
                "(a) Holm p": pval(s["p_holm"]),
                "(b) 90 % CI": interval(s["boot_low"], s["boot_high"]),
                "(b) Holm p": f"{pval(s['boot_p_holm'])} ± {s['boot_p_holm_se']:.1g}",
            }
        rows.append(r)
    return pd.DataFrame(rows).fillna(DASH)


DIRECTION_CAPTION = (
    "Direction of the module − none differences, and an **exploratory** pooled test (declared after the data "
    "were seen): per seed the mean over the modules of (module − none), two-sided, (a) paired t-test over seeds, "
    "(b) the two-level bootstrap, Holm over the sizes tested."
)
