"""Figures per experiment group: results/figures/<experiment>[_<group>]_<kind>.png."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from lbam.report.rows import Group, group_slug, groups_by_experiment
from lbam.report.stats import mean_std

KINDS = ("acc_vs_params", "acc_bar", "curves", "confusion")


def _has(group: Group, kind: str) -> bool:
    ok = group.ok_rows
    if kind == "curves":
        return any(r.get("history") for r in ok)
    if kind == "confusion":
        return any(r.get("confusion_matrix") for r in ok)
    return bool(ok)


def figure_paths(groups: list[Group], figures_dir: str | Path) -> list[tuple[Group, str, Path]]:
    """(group, kind, path) of every figure the rows allow; the single source of figure names."""
    out = []
    for experiment, exp_groups in groups_by_experiment(groups).items():
        for g in exp_groups:
            slug = group_slug(g, exp_groups)
            stem = f"{experiment}_{slug}" if slug else experiment
            out += [(g, k, Path(figures_dir) / f"{stem}_{k}.png") for k in KINDS if _has(g, k)]
    return out


def _colors(n: int):
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _acc(setting) -> tuple[float, float, int]:
    return mean_std([100 * float(r["test_acc"]) for r in setting.ok])


def plot_acc_vs_params(group: Group, ax) -> None:
    settings = [s for s in group.settings if s.ok]
    max_flops = max(float(s.ok[0]["flops"]) for s in settings) or 1.0
    for s, color in zip(settings, _colors(len(settings))):
        mean, std, n = _acc(s)
        flops = float(s.ok[0]["flops"])
        x = int(s.ok[0]["attention_params"])
        ax.errorbar(x, mean, yerr=0 if math.isnan(std) else std, fmt="none", ecolor=color, capsize=3)
        ax.scatter(
            x,
            mean,
            s=40 + 360 * flops / max_flops,
            color=color,
            alpha=0.8,
            edgecolors="black",
            label=f"{s.label} (n={n}, {flops / 1e6:,.1f} MFLOPs)",
        )
    low, high = ax.get_ylim()
    ax.set_ylim(low, min(high, 100.5))  # accuracy cannot exceed 100 %
    ax.set_xlabel("attention parameters (count)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.legend(
        fontsize=7,
        title="marker area ∝ FLOPs",
        title_fontsize=7,
        markerscale=0.5,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
    )
    ax.grid(alpha=0.3)


def plot_acc_bar(group: Group, ax) -> None:
    settings = [s for s in group.settings if s.ok]
    stats = [_acc(s) for s in settings]
    means = [m for m, _, _ in stats]
    stds = [0 if math.isnan(sd) else sd for _, sd, _ in stats]
    xs = np.arange(len(settings))
    ax.bar(xs, means, yerr=stds, capsize=4, color=_colors(len(settings)), edgecolor="black")
    for x, (m, _, n), sd in zip(xs, stats, stds):
        ax.annotate(
            f"{m:.1f}\nn={n}",
            (x, m + sd),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_xticks(xs, [s.label for s in settings], rotation=30, ha="right", fontsize=8)
    low = min(m - s for m, s in zip(means, stds))
    ax.set_ylim(max(0.0, low - 10), min(100.0, max(m + s for m, s in zip(means, stds)) + 8))
    ax.set_xlabel("attention module")
    ax.set_ylabel("test accuracy (%), mean; error bar = sample std (ddof=1)")
    ax.grid(axis="y", alpha=0.3)


def _mean_curve(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    by_epoch = defaultdict(list)
    for r in rows:
        for h in r.get("history") or []:
            if h.get(key) is not None:
                by_epoch[int(h["epoch"])].append(float(h[key]))
    epochs = sorted(by_epoch)
    return epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]


def plot_curves(group: Group, axes) -> None:
    settings = [s for s in group.settings if any(r.get("history") for r in s.ok)]
    for s, color in zip(settings, _colors(len(settings))):
        for ax, key, scale in ((axes[0], "train_loss", 1.0), (axes[1], "train_acc", 100.0)):
            epochs, values = _mean_curve(s.ok, key)
            ax.plot(
                epochs,
                [v * scale for v in values],
                marker="o",
                ms=3,
                color=color,
                label=f"{s.label} (n={len(s.ok)})",
            )
    axes[0].set_ylabel("training loss (cross-entropy)")
    axes[1].set_ylabel("training accuracy (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("loss, mean over seeds", fontsize=9)
    axes[1].set_title("accuracy, mean over seeds", fontsize=9)


def plot_confusion(group: Group, fig) -> None:
    settings = [s for s in group.settings if any(r.get("confusion_matrix") for r in s.ok)]
    cols = min(3, len(settings))
    nrows = math.ceil(len(settings) / cols)
    for i, s in enumerate(settings):
        ax = fig.add_subplot(nrows, cols, i + 1)
        rows = [r for r in s.ok if r.get("confusion_matrix")]
        cm = np.sum([np.asarray(r["confusion_matrix"], dtype=np.int64) for r in rows], axis=0)
        names = list(rows[0].get("class_names") or range(cm.shape[0]))
        totals = cm.sum(axis=1, keepdims=True)
        ax.imshow(cm / np.maximum(totals, 1), cmap="Blues", vmin=0, vmax=1)
        for (t, p), v in np.ndenumerate(cm):
            frac = v / max(int(totals[t, 0]), 1)
            ax.text(
                p, t, str(v), ha="center", va="center", fontsize=7, color="white" if frac > 0.5 else "black"
            )
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(
            f"{s.label}: counts summed over {len(rows)} seed(s)\n(colour = row fraction)", fontsize=8
        )


def render_figure(group: Group, kind: str, path: Path) -> Path:
    """Draw one figure kind of a group to path (PNG)."""
    if kind == "confusion":
        n = sum(any(r.get("confusion_matrix") for r in s.ok) for s in group.settings)
        cols = min(3, n)
        fig = plt.figure(figsize=(4.2 * cols, 4.0 * math.ceil(n / cols)))
        plot_confusion(group, fig)
    elif kind == "curves":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        plot_curves(group, axes)
    else:
        fig, ax = plt.subplots(figsize=(7.5, 5))
        (plot_acc_vs_params if kind == "acc_vs_params" else plot_acc_bar)(group, ax)
    what = {
        "acc_vs_params": "test accuracy vs attention parameters",
        "acc_bar": "test accuracy per attention",
        "curves": "training curves",
        "confusion": "test confusion matrices",
    }[kind]
    fig.suptitle(f"{what}\n{group.title()}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_figures(groups: list[Group], results_dir: str | Path) -> list[Path]:
    """Write every figure the rows allow under results_dir/figures; returns the paths."""
    return [render_figure(g, k, p) for g, k, p in figure_paths(groups, Path(results_dir) / "figures")]
