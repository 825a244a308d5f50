"""What stands beside the verdicts (PLAN.md amendment of 2026-12-07): per context the power the design had, the
direction of the module − none differences with the exploratory pooled test, and the count of stated verdicts.
Each a small table or line, for the README block and the full tables alike."""

from __future__ import annotations

import math

import pandas as pd

from lbam.report.direction import negatives
from lbam.report.tables import DASH, interval, pct, pval
from lbam.report.verdicts import MIN_SEEDS, changed_count, unique  # noqa: F401 (changed_count: re-exported)

VS_NONE = "each vs none"


def _med(values: pd.Series, scale: float = 100.0, digits: int = 1, unit: str = "") -> str:
    v = values.replace([math.inf, -math.inf], math.nan).dropna()
    return DASH if v.empty else f"{scale * v.median():.{digits}f}{unit}"


def power_table(p: pd.DataFrame, first: str) -> pd.DataFrame:
    """Per context (label column ``first``), medians over its comparisons: seeds, the SD of the paired Δ, the Δ
    detectable with 80 % power at Holm's last (α) … first (α/m) step over seeds (a) and with the test smears
    (b), TOST's power at a true Δ of 0 (last … first step), the seeds TOST over seeds would need for 80 %, and
    of the inconclusive verdicts, how many TOST could have turned into equivalence with 80 % power."""
    rows = []
    for label, pc in unique(p).groupby(first, sort=False):
        pc = pc[pc["n"] >= MIN_SEEDS]
        if pc.empty:
            continue
        r = {first: label, "seeds": _med(pc["n"], 1, 0), "SD of Δ (pp)": _med(pc["std"])}
        for m, name in (("t", "(a)"), ("boot", "(b)")):
            r[f"detectable Δ {name} (pp)"] = (
                f"{_med(pc[f'detect_last_{m}'])} … {_med(pc[f'detect_first_{m}'])}"
            )
        for m, name in (("t", "(a)"), ("boot", "(b)")):
            r[f"TOST power {name}"] = f"{_med(pc[f'tost_power_last_{m}'], 100, 0)} … {_med(pc[f'tost_power_first_{m}'], 100, 0, ' %')}"  # fmt: skip
        need = pc["seeds_for_tost_last"]
        r["seeds for TOST 80 % (a)"] = "> 100,000" if (need == math.inf).mean() > 0.5 else _med(need, 1, 0)
        inc = pc[pc["finding"] == "inconclusive"] if pc["claims"].all() else pc.iloc[0:0]
        if len(inc):
            could = [int((inc[f"tost_power_last_{m}"] >= 0.8).sum()) for m in ("t", "boot")]
            r["inconclusive: TOST could (a) / (b)"] = f"{could[0]} / {could[1]} of {len(inc)}"
        rows.append(r)
    return pd.DataFrame(rows).fillna(DASH)


def power_caption(alpha: float, margin: float) -> str:
    return (
        "Power, from the observed SD of the paired Δ (medians over the comparisons; 80 % power; Holm's last step "
        f"α = {alpha:g} … its first, α/m): the |Δ| a difference test detects, the power TOST (±{100 * margin:g} pp) "
        "had at a true Δ of 0, and the seeds TOST over seeds alone would need for 80 % at α; (a) over seeds, (b) "
        "with the test smears (the bootstrap's SE, itself an over-estimate). Last column: of the inconclusive "
        "verdicts, how many TOST could have turned into equivalence with ≥ 80 % power (at α, true Δ = 0); where "
        "it could not, *inconclusive* is what the design could give, not evidence of a difference."
    )


def direction_table(p: pd.DataFrame, pooled: pd.DataFrame, first: str) -> pd.DataFrame:
    """Per context: how many module − none mean differences are negative, and the exploratory pooled test."""
    rows = []
    f2 = p[p["family"] == VS_NONE]
    for label, pc in f2.groupby(first, sort=False):
        q = pooled[pooled["context"] == pc["context"].iloc[0]] if len(pooled) else pooled
        below, known = negatives(pc["mean"])
        r = {first: label, "module − none < 0": f"{below} of {known}"}
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


def power_line(p: pd.DataFrame, first: str) -> str:
    """The power table in one sentence per context, for the README block (the table is in the full tables)."""
    t = power_table(p, first)
    if t.empty:
        return ""
    parts = []
    for _, r in t.iterrows():
        could = r.get("inconclusive: TOST could (a) / (b)", DASH)
        could = "" if could == DASH else f"; inconclusive verdicts TOST could have turned: {could}"
        parts.append(
            f"{r[first]}: SD {r['SD of Δ (pp)']} pp, detectable Δ {r['detectable Δ (a) (pp)']} pp (a) and "
            f"{r['detectable Δ (b) (pp)']} pp (b), TOST power {r['TOST power (a)']} (a) and {r['TOST power (b)']} "
            f"(b), 80 % TOST needs {r['seeds for TOST 80 % (a)']} seeds{could}"
        )
    return "**Power** (medians over the comparisons; Holm's last … first step; full tables: the table): " + "; ".join(parts) + "."  # fmt: skip


def direction_line(p: pd.DataFrame, pooled: pd.DataFrame, first: str) -> str:
    """The direction table in one sentence, for the README block."""
    t = direction_table(p, pooled, first)
    if t.empty:
        return ""
    counts = ", ".join(f"{r['module − none < 0']} at {r[first]}" for _, r in t.iterrows())
    tested = [r for _, r in t.iterrows() if r.get("pooled Δ (pp)", DASH) != DASH]
    pooled_text = "; ".join(
        f"{r[first]}: {r['pooled Δ (pp)']} pp, (a) {r['(a) 90 % CI']} Holm p {r['(a) Holm p']}, (b) "
        f"{r['(b) 90 % CI']} Holm p {r['(b) Holm p']}"
        for r in tested
    )
    text = f"**Direction:** module − none differences below 0: {counts}."
    if tested:
        text += f" Exploratory pooled test (declared after the data were seen; per seed the mean over the modules of module − none, two-sided, Holm over sizes): {pooled_text}."  # fmt: skip
    return text
