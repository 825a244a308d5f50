"""Figures per group, results/figures/<experiment>[_<group>]_<kind>.png, and their links for the tables file:

- learning_curve (experiments with ``analysis.curve``): balanced accuracy vs training-set size, logit axis;
- training_curves: train loss and accuracy per run against step or epoch (lbam.report.training);
- confusion_matrices: per setting, summed over seeds (lbam.report.confusion, with the per-class recall table);
- cost_vs_accuracy: balanced accuracy vs attention parameters, FLOPs and images/s (lbam.report.cost); it
  replaces the former acc_vs_params figure.

Each plot function takes a group and the results and returns the Figure; ``write_figures`` saves them."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from lbam.report.confusion import plot_confusion, recall_markdown
from lbam.report.cost import plot_cost
from lbam.report.figstyle import curve_key, save, spread_label, style
from lbam.report.rows import Results, groups, title, without
from lbam.report.training import plot_training_curves

LOGIT_TICKS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999)


def lines(g: pd.DataFrame, curve: str | None = None):
    """(label, ok rows) per setting and context, the context without the curve's override."""
    ok = g[g["status"] == "ok"]
    line = [without(c, curve) for c in ok["shown"]]
    for (ctx, setting), rows in ok.assign(line=line).groupby(["line", "setting"], sort=False):
        yield (f"{setting} [{ctx}]" if ctx else setting), rows


def n_by_size(counts: pd.Series) -> str:
    """Which n goes with which size: 'n = 60 at 25, 25 at 100, 7 at 400 and 4001', or 'n = 7 at every size'."""
    if counts.nunique() == 1:
        return f"n = {counts.iloc[0]} at every size"
    sizes: dict[int, list[str]] = {}
    for x, n in counts.items():  # in size order
        sizes.setdefault(int(n), []).append(f"{x:g}")
    joined = [", ".join(xs[:-1]) + " and " + xs[-1] if len(xs) > 1 else xs[0] for xs in sizes.values()]
    return "n = " + ", ".join(f"{n} at {xs}" for n, xs in zip(sizes, joined))


def plot_learning_curve(g: pd.DataFrame, res: Results):
    """Balanced accuracy vs training-set size on a logit axis (equal heights for equal odds ratios, so 91 % at
    25 crops and 99 % at the whole split are both readable); mean per setting, bars ± sample std where n ≥ 2;
    settings offset sideways at each size so that their bars do not hide each other."""
    fig, ax = plt.subplots(figsize=(11, 5.5))
    found, colors, ns, lo, hi = list(lines(g, curve_key(g, res))), style(g), [], 1.0, 0.0
    counts = {n_by_size(rows.groupby("x")["test_balanced_acc"].count()) for _, rows in found}
    same = (
        counts.pop() if len(counts) == 1 else None
    )  # one n per size for every line: said once, in the title
    for k, (label, rows) in enumerate(found):
        st = rows.groupby("x")["test_balanced_acc"].agg(["mean", "std", "count"]).sort_index()
        ns += list(st["count"])
        m = np.clip(st["mean"].to_numpy(), 1e-4, 1 - 1e-4)  # a logit axis cannot show 0 % or 100 %
        s = np.where(st["count"] >= 2, st["std"].fillna(0), 0.0)
        low, high = np.clip(m - s, 1e-4, 1 - 1e-4), np.clip(m + s, 1e-4, 1 - 1e-4)
        lo, hi = min(lo, low.min()), max(hi, high.max())
        x = st.index.to_numpy() * np.exp(0.03 * (k - (len(found) - 1) / 2))  # sideways offset, log x
        label += "" if same else f" ({n_by_size(st['count'])})"
        label += f": {int(rows['attention_params'].iloc[0]):,} attn params"
        setting = rows["setting"].iloc[0]
        lbam = rows["attention"].iloc[0] == "lbam"  # highlighted: thick, on top
        ax.errorbar(x, m, yerr=[m - low, high - m], ms=5, capsize=2, label=label, lw=2.4 if lbam else 1.1,
                    alpha=1.0 if lbam else 0.8, zorder=3 if lbam else 2, **colors[setting])  # fmt: skip
    ax.set_yscale("logit")
    ax.set_ylim(max(lo - (1 - lo) * 0.3, 1e-4), min(1 - (1 - hi) * 0.7, 1 - 1e-5))
    ax.yaxis.set_major_locator(FixedLocator(LOGIT_TICKS))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xscale("log")
    sizes = sorted(set(g["x"].dropna()))
    ax.set_xticks(sizes, [f"{x:g}" for x in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training-set size (samples, log scale; settings offset sideways for legibility)")
    ax.set_ylabel(f"test balanced accuracy (%), logit scale\n{spread_label(ns)}")
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        title=f"ok seeds per setting: {same}" if same else "n: ok seeds per size",
        title_fontsize=7,
    )
    fig.suptitle(f"learning curve\n{title(g)}", fontsize=10)
    fig.tight_layout()
    return fig


PLOTS = {
    "learning_curve": plot_learning_curve,
    "training_curves": plot_training_curves,
    "confusion_matrices": plot_confusion,
    "cost_vs_accuracy": plot_cost,
}


def figure_paths(res: Results) -> list[tuple[str, str, pd.DataFrame, str, Path]]:
    """(experiment, slug, group, kind, path) of every figure the rows allow: the one source of their names.
    Training curves need any run (a failed one shows there); the others an ok run."""
    out = []
    for experiment, slug, g in groups(res.frame):
        ok = (g["status"] == "ok").any()
        kinds = ["learning_curve"] if ok and curve_key(g, res) else []
        kinds += ["training_curves"] + (["confusion_matrices", "cost_vs_accuracy"] if ok else [])
        for kind in kinds:
            name = "_".join(filter(None, (experiment, slug, kind)))
            out.append((experiment, slug, g, kind, res.root / "figures" / f"{name}.png"))
    return out


def write_figures(res: Results) -> list[Path]:
    return [save(PLOTS[kind](g, res), path) for *_, g, kind, path in figure_paths(res)]


def figures_markdown(res: Results, experiment: str) -> str:
    """For the experiment's tables file: per group, links to its figures (written by `python -m lbam.report
    figures`) and the attention maps where drawn, and the per-class recall table."""
    parts = []
    paths = figure_paths(res)
    for e, slug, g in groups(res.frame):
        if e != experiment:
            continue
        links = [f"[{kind.replace('_', ' ')}](../figures/{p.name})" for e2, s2, _, kind, p in paths if (e2, s2) == (e, slug)]  # fmt: skip
        maps = res.root / "figures" / f"{experiment}_attention_maps.png"
        if maps.is_file():
            links.append(f"[attention maps](../figures/{maps.name})")
        parts += [f"## Figures and per-class recall: {title(g)}", "Figures: " + " · ".join(links)]
        if recall := recall_markdown(g, res):
            parts.append(recall)
    return "\n\n".join(parts) + "\n" if parts else ""
