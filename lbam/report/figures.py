"""Figures per group, results/figures/<experiment>[_<group>]_<kind>.png: learning_curve (experiments with
``analysis.curve``: balanced accuracy vs training-set size, one line per setting, LBAM highlighted) or
acc_vs_params (the others: balanced accuracy vs attention parameters, marker area ∝ FLOPs)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from lbam.report.rows import Results, analysis, groups, title, without

COLORS = plt.get_cmap("tab10").colors * 3


def figure_paths(res: Results) -> list[tuple[str, str, pd.DataFrame, str, Path]]:
    """(experiment, slug, group, kind, path) of every figure the rows allow: the one source of their names."""
    out = []
    for experiment, slug, g in groups(res.frame):
        kind = "learning_curve" if analysis(g, res.runs)["curve"] else "acc_vs_params"
        name = "_".join(filter(None, (experiment, slug, kind)))
        if (g["status"] == "ok").any():
            out.append((experiment, slug, g, kind, res.root / "figures" / f"{name}.png"))
    return out


def lines(g: pd.DataFrame, curve: str | None = None):
    """(label, ok rows) per setting and context, the context without the curve's override."""
    ok = g[g["status"] == "ok"]
    line = [without(c, curve) for c in ok["shown"]]
    for (ctx, setting), rows in ok.assign(line=line).groupby(["line", "setting"], sort=False):
        yield (f"{setting} [{ctx}]" if ctx else setting), rows


def plot_learning_curve(g: pd.DataFrame, res: Results, ax) -> None:
    for (label, rows), color in zip(lines(g, analysis(g, res.runs)["curve"]), COLORS):
        st = rows.groupby("x")["test_balanced_acc"].agg(["mean", "std"]).sort_index().fillna({"std": 0.0})
        x, m, s = st.index.to_numpy(), 100 * st["mean"].to_numpy(), 100 * st["std"].to_numpy()
        label = f"{label}: {int(rows['attention_params'].iloc[0]):,} attn params"
        lbam = rows["attention"].iloc[0] == "lbam"  # highlighted: thick, on top
        style = {"lw": 2.8, "zorder": 3} if lbam else {"lw": 1.2, "alpha": 0.7}
        ax.plot(x, m, marker="o", color=color, label=label, **style)
        ax.fill_between(x, m - s, m + s, color=color, alpha=0.2 if lbam else 0.06, lw=0)
    ax.set_xscale("log")
    sizes = sorted(set(g["x"].dropna()))
    ax.set_xticks(sizes, [f"{x:g}" for x in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training-set size (samples, log scale)")
    ax.legend(fontsize=7, loc="lower right")


def plot_acc_vs_params(g: pd.DataFrame, res: Results, ax) -> None:
    found = list(lines(g))
    top = max(float(rows["flops"].iloc[0]) for _, rows in found) or 1.0
    for (label, rows), color in zip(found, COLORS):
        m, s = 100 * rows["test_balanced_acc"].mean(), 100 * rows["test_balanced_acc"].std()
        x, flops = int(rows["attention_params"].iloc[0]), float(rows["flops"].iloc[0])
        ax.errorbar(x, m, yerr=0 if math.isnan(s) else s, fmt="none", ecolor=color, capsize=3)
        label = f"{label} (n={len(rows)}, {flops / 1e6:,.1f} MFLOPs)"
        ax.scatter(x, m, s=40 + 360 * flops / top, color=color, alpha=0.8, edgecolors="black", label=label)
    ax.set_xlabel("attention parameters")
    ax.legend(
        fontsize=7, title="marker area ∝ FLOPs", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1)
    )


def write_figures(res: Results) -> list[Path]:
    paths = []
    for _, _, g, kind, path in figure_paths(res):
        fig, ax = plt.subplots(figsize=(8, 5))
        (plot_learning_curve if kind == "learning_curve" else plot_acc_vs_params)(g, res, ax)
        ax.set_ylabel("test balanced accuracy (%), mean ± std over seeds")
        ax.grid(alpha=0.3)
        fig.suptitle(f"{kind.replace('_', ' ')}\n{title(g)}", fontsize=10)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths
