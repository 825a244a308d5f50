"""Which classes a setting gets wrong: confusion matrices summed over the ok seeds and normalised per true class
(on a learning curve at the smallest and the largest training-set size), and the per-class recall table (mean ±
sample std over seeds) for the tables file. Both are counted from the per-sample predictions, the rows' ground
truth."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lbam.report.figstyle import (
    class_names,
    context_label,
    contexts,
    curve_key,
    n_label,
    settings,
    style,
    test_counts,
)
from lbam.report.rows import Results, title

DASH = "–"


def confusion(rows: pd.DataFrame, res: Results, k: int) -> np.ndarray:
    """Counts [true][pred] summed over the ok runs of ``rows``."""
    cm = np.zeros((k, k), dtype=int)
    for i in rows.loc[rows["status"] == "ok", "run"]:
        t, p = np.array(list(res.runs[int(i)].preds.values()), dtype=int).reshape(-1, 2).T
        np.add.at(cm, (t, p), 1)
    return cm


def draw_matrix(ax, cm: np.ndarray) -> None:
    totals = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, totals, out=np.full(cm.shape, np.nan), where=totals > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    k = len(cm)
    if k > 12:  # cells too small to read
        return
    size = 7 if k <= 4 else 5
    for (t, p), count in np.ndenumerate(cm):
        if totals[t, 0]:
            ink = "white" if frac[t, p] > 0.6 else "black"
            text = f"{100 * frac[t, p]:.1f}%\n{count:,}"
            ax.text(p, t, text, ha="center", va="center", fontsize=size, color=ink)


def plot_confusion(g: pd.DataFrame, res: Results):
    """The figure of one group (returned, not saved): a row of matrices per shown context, one per setting."""
    shown, note = contexts(g, res, ends=True)
    cols, colors = settings(g), style(g)
    names = class_names(g, res)
    k = len(names)
    side = max(1.9, 0.45 * k)
    fig, axes = plt.subplots(
        len(shown), len(cols), figsize=(side * len(cols) + 1.2, side * len(shown) + 1.6), squeeze=False
    )
    for i, (ctx, label) in enumerate(shown):
        for j, setting in enumerate(cols):
            ax = axes[i, j]
            rows = g[(g["context"] == ctx) & (g["setting"] == setting) & (g["status"] == "ok")]
            ax.set_xticks(range(k), names if i == len(shown) - 1 else [], rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(k), names if j == 0 else [], fontsize=7)
            if rows.empty:
                ax.text(0.5, 0.5, "no ok runs", transform=ax.transAxes, ha="center", fontsize=7)
                continue
            draw_matrix(ax, confusion(rows, res, k))
            ax.set_title(f"{setting}\n{n_label(len(rows))}", fontsize=8, color=colors[setting]["color"])
        axes[i, 0].set_ylabel(f"{label}\ntrue class", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("predicted class", fontsize=8)
    rows_note = f"; rows: {note}" if note else ""
    fig.suptitle(
        f"confusion matrices · {title(g)}\nsummed over the ok seeds; colour and %: share of the true class "
        f"(recall on the diagonal); below: count of test predictions{rows_note}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def recalls(rows: pd.DataFrame, res: Results, k: int) -> np.ndarray:
    """Recall per class (columns) of each ok run (rows); nan for a class absent from the test split."""
    out = []
    for i in rows.loc[rows["status"] == "ok", "run"]:
        cm = confusion(rows[rows["run"] == i], res, k)
        totals = cm.sum(axis=1)
        out.append(np.divide(np.diag(cm), totals, out=np.full(k, np.nan), where=totals > 0))
    return np.array(out).reshape(-1, k)


def cell(values: np.ndarray) -> str:
    """'98.46 ± 1.02' (%), mean ± sample std (ddof = 1); the mean alone for one seed."""
    values = values[~np.isnan(values)]
    if not len(values):
        return DASH
    text = f"{100 * values.mean():.2f}"
    return text + (f" ± {100 * values.std(ddof=1):.2f}" if len(values) > 1 else "")


def recall_markdown(g: pd.DataFrame, res: Results) -> str:
    """The per-class recall table of a group: one line per context and setting."""
    ok = g[g["status"] == "ok"]
    if ok.empty:
        return ""
    counts, names = test_counts(g, res), class_names(g, res)
    curve, lines = curve_key(g, res), []
    for (_, setting), rows in ok.groupby(["context", "setting"], sort=False):
        r = recalls(rows, res, len(counts))
        line = {"context": context_label(rows.iloc[0], curve), "setting": setting, "n": len(r)}
        lines.append(line | {f"{name} recall (%)": cell(r[:, c]) for c, name in enumerate(names)})
    test = ", ".join(f"{name} {count:,}" for name, count in zip(names, counts))
    caption = (
        "Recall per class (%): mean ± sample std (ddof = 1) over the n ok seeds, the mean alone when n = 1; "
        f"from the per-sample predictions. Test samples per class: {test}."
    )
    table = pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True)
    return f"{caption}\n\n{table}"
