"""A bridge experiment (``analysis.bridge``: the override whose values are its steps, e.g. ``dataset.image_size``;
results/runs/embodiment1_bridge/PLAN.md): each step is a group of its own, analysed like any other
(`lbam.report.stats`); here the steps are set side by side. Per comparison and step: Δ, both intervals and the
verdict, and whether the first step's verdict *holds* (the same stated verdict), *changes* (both are differ,
equivalent or non-inferior, and differ) or is *undetermined* (otherwise); per step the accuracy of each setting,
the cost and the power; the learning curve's verdicts at the same training-set size beside them; a figure of
Δ against the step. The README block shows this section instead of one section per step."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from lbam.report import evidence
from lbam.report.figstyle import save
from lbam.report.forest import COLORS
from lbam.report.rows import Results, analysis, groups
from lbam.report.stats import compare_all
from lbam.report.tables import DASH, interval, md, num, pct
from lbam.report.verdicts import FINDINGS, unique

CLAIMS = ("differ", "equivalent", "non-inferior")


def bridge_key(res: Results, experiment: str) -> str | None:
    """The experiment's step override (``analysis.bridge``), or None when it is no bridge."""
    g = res.frame[res.frame["experiment"] == experiment]
    return analysis(g, res.runs).get("bridge") if len(g) else None


def bridges(res: Results) -> list[str]:
    return [e for e in sorted(set(res.frame["experiment"])) if bridge_key(res, e)]


def step_of(g: pd.DataFrame, key: str) -> float:
    """The group's value of the step override (every run of a group shares it)."""
    for o in g["context"].iloc[0].split():
        name, _, value = o.partition("=")
        if name == key:
            return float(value)
    return float(g[key.rsplit(".", 1)[-1]].iloc[0]) if key.rsplit(".", 1)[-1] in g else math.nan


def steps(res: Results, experiment: str) -> list[tuple[float, pd.DataFrame, pd.DataFrame]]:
    """(step value, group, comparisons) in step order."""
    key = bridge_key(res, experiment)
    out = [
        (step_of(g, key), g, compare_all(g, res.runs)[0]) for e, _, g in groups(res.frame) if e == experiment
    ]
    return sorted(out, key=lambda t: t[0])


def holds(first: str, this: str) -> str:
    """Does the first step's verdict hold at this step (PLAN.md's rule)?"""
    if first in FINDINGS and this == first:
        return "holds"
    if first in CLAIMS and this in CLAIMS:
        return f"changes ({first} → {this})"
    return "undetermined"


def curve_reference(res: Results, g: pd.DataFrame) -> dict[tuple[str, str], str]:
    """The learning curve's verdicts at the bridge's training-set size ((setting, baseline) -> finding), when the
    curve's rows are here; {} otherwise."""
    size = next((o.split("=", 1)[1] for o in g["context"].iloc[0].split() if o.startswith("dataset.train_subset=")), None)  # fmt: skip
    for *_, cg in groups(res.frame):
        if analysis(cg, res.runs).get("curve") == "dataset.train_subset" and size is not None:
            p = unique(compare_all(cg, res.runs)[0])
            p = p[p["x"] == float(size)]
            return {(a, b): f for a, b, f in zip(p["setting"], p["baseline"], p["finding"])}
    return {}


def verdict_table(res: Results, experiment: str) -> tuple[pd.DataFrame, str]:
    """One line per comparison: per step Δ (a and b intervals) and verdict, whether the first step's verdict
    holds, and the curve's verdict; with the name of the curve column (empty without the curve)."""
    found = steps(res, experiment)
    key = bridge_key(res, experiment)
    name = key.rsplit(".", 1)[-1]
    ref = curve_reference(res, found[0][1]) if found else {}
    comps = list(
        dict.fromkeys(
            (a, b) for _, _, p in found for a, b in zip(unique(p)["setting"], unique(p)["baseline"])
        )
    )
    first = {(a, b): f for a, b, f in zip(unique(found[0][2])["setting"], unique(found[0][2])["baseline"], unique(found[0][2])["finding"])} if found else {}  # fmt: skip
    rows = []
    for a, b in comps:
        r = {"Δ = A − B": f"{a} − {b}"}
        for step, _, p in found:
            u = unique(p)
            hit = u[(u["setting"] == a) & (u["baseline"] == b)]
            label = f"{name} {step:g}"
            if hit.empty:
                r[label] = DASH
                continue
            h = hit.iloc[0]
            r[label] = f"{pct(h['mean'], signed=True)}; a {interval(h['low'], h['high'])}, b {interval(h['boot_low'], h['boot_high'])}: **{h['finding']}**"  # fmt: skip
            if step != found[0][0]:
                r[f"{label}: {found[0][0]:g}'s verdict"] = holds(first.get((a, b), DASH), h["finding"])
        rows.append(r)
    curve = "learning curve, same size" if ref else ""
    if ref:
        for r, (a, b) in zip(rows, comps):
            r[curve] = ref.get((a, b), DASH)
    return pd.DataFrame(rows), curve


def accuracy_table(res: Results, experiment: str) -> pd.DataFrame:
    """Per step: each setting's balanced accuracy (mean ± std over seeds, %), MFLOPs of one image, and the
    median training images/s with the median load average of those runs."""
    rows = []
    name = bridge_key(res, experiment).rsplit(".", 1)[-1]
    for step, g, _ in steps(res, experiment):
        ok = g[g["status"] == "ok"]
        r = {name: f"{step:g}", "seeds": str(ok.groupby("setting")["seed"].nunique().min())}
        for s, rows_s in ok.groupby("setting", sort=False):
            r[s] = pct(rows_s["test_balanced_acc"].mean(), rows_s["test_balanced_acc"].std())
        flops = ok.groupby("setting", sort=False)["flops"].first()
        r["MFLOPs"] = " / ".join(num(f, 1, 1e6) for f in flops)
        speed = ok.groupby("setting", sort=False)["images_per_second"].median()
        r["train img/s"] = " / ".join(num(v) for v in speed)
        load = (
            ok["load_average"].median()
            if "load_average" in ok and ok["load_average"].notna().any()
            else math.nan
        )
        r["load (median)"] = num(load, 1)
        rows.append(r)
    return pd.DataFrame(rows).fillna(DASH)


def figure_path(res: Results, experiment: str) -> Path:
    return res.root / "figures" / f"{experiment}_bridge.png"


def plot_bridge(res: Results, experiment: str) -> Path | None:
    """Δ against the step, one panel per comparison: the mean with its (a) t-interval and (b) bootstrap
    interval, the ±margin band, the marker coloured by the stated verdict."""
    found = steps(res, experiment)
    if not found or not any(len(p) and p["n"].max() >= 3 for *_, p in found):
        return None
    name = bridge_key(res, experiment).rsplit(".", 1)[-1]
    comps = list(
        dict.fromkeys((a, b) for *_, p in found for a, b in zip(unique(p)["setting"], unique(p)["baseline"]))
    )
    fig, axes = plt.subplots(1, len(comps), figsize=(3.6 * len(comps), 3.6), sharey=True, squeeze=False)
    margin = 100 * found[0][2]["margin"].iloc[0]
    for ax, (a, b) in zip(axes[0], comps):
        ax.axhspan(-margin, margin, color="0.92", zorder=0)
        ax.axhline(0, color="0.5", lw=0.8)
        for k, (*_, p) in enumerate(found):
            u = unique(p)
            hit = u[(u["setting"] == a) & (u["baseline"] == b)]
            if hit.empty:
                continue
            h = hit.iloc[0]
            ax.plot([k - 0.08] * 2, [100 * h["low"], 100 * h["high"]], color="0.15", lw=2.5, label="(a) seeds" if k == 0 else None)  # fmt: skip
            ax.plot([k + 0.08] * 2, [100 * h["boot_low"], 100 * h["boot_high"]], color="tab:purple", lw=2.5, label="(b) seeds + test" if k == 0 else None)  # fmt: skip
            ax.plot(
                k, 100 * h["mean"], "o", ms=7, color=COLORS.get(h["finding"], "black"), mec="black", mew=0.5
            )
            ax.annotate(h["finding"], (k, 100 * h["high"]), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)  # fmt: skip
        ax.set_xticks(range(len(found)), [f"{s:g}" for s, *_ in found])
        ax.set_xlim(-0.5, len(found) - 0.5)
        ax.set_title(f"{a} − {b}", fontsize=9)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(f"Δ balanced accuracy (pp), 90 % intervals\ngrey band: ±{margin:g} pp")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{experiment}: paired Δ per step (marker colour: stated verdict)", fontsize=10)
    fig.tight_layout()
    return save(fig, figure_path(res, experiment))


def section(res: Results, experiment: str, compact: bool = False) -> list[str]:
    """A bridge's section: the accuracy table, the verdicts per step, power per step (``compact``, for the README
    block: in one sentence; else the table)."""
    found = steps(res, experiment)
    g0 = found[0][1]
    r = g0.iloc[0]
    head = f"#### {experiment}: {r.dataset} · profile {r.profile} · {r.device_kind} · {r.backbone} ×{r.width_mult:g} — steps of {bridge_key(res, experiment)}"  # fmt: skip
    verdicts, curve = verdict_table(res, experiment)
    last = "; the last column: the learning curve at the same training-set size" if curve else ""
    p = pd.concat([pp.assign(step=f"{s:g}") for s, _, pp in found])
    text = [
        head,
        "Test balanced accuracy (%), mean ± sample std over seeds, per step; cost per setting (in the order of "
        "the columns) and the training speed, with the machine's median load average during those runs:",
        md(accuracy_table(res, experiment)),
        "Paired comparisons per step, tested as in the learning curve (both methods, Holm within each family "
        "and step, one verdict per comparison; intervals 90 %; verdicts in bold). Whether the first step's "
        f"verdict holds: *holds*, *changes*, or *undetermined* (PLAN.md){last}:",
        md(verdicts),
    ]
    if compact:
        return [*text, evidence.power_line(p, "step")]
    return [
        *text,
        evidence.power_caption(p["alpha"].iloc[0], p["margin"].iloc[0]),
        md(evidence.power_table(p, "step")),
    ]
