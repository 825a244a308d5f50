"""What every figure of the report shares: one colour and marker per setting (the same in every figure of a
group), the contexts a figure shows, honest seed-count labels, the test-set class counts, and saving."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lbam.report.rows import Results, analysis, without

RED = "#d62728"  # failed or suspect runs only: tab10's red is left out of the settings' colours
COLORS = [c for c in plt.get_cmap("tab10").colors if matplotlib.colors.to_hex(c) != RED]
MARKERS = "os^vPXhd<>p*"  # shapes of about one visual size: the shape tells settings apart, never a size
MAX_CONTEXTS = 6  # rows of panels per figure; more contexts are thinned to evenly spaced ones, ends kept


def settings(g: pd.DataFrame) -> list[str]:
    """The group's settings in the report's order (none, se, cbam, bam, eca, lbam, then variants)."""
    return list(dict.fromkeys(g["setting"]))


def style(g: pd.DataFrame) -> dict[str, dict]:
    """Colour and marker per setting, by the setting's place in the group."""
    return {
        s: {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)]}
        for i, s in enumerate(settings(g))
    }


def curve_key(g: pd.DataFrame, res: Results) -> str | None:
    return analysis(g, res.runs)["curve"]


def context_label(r: pd.Series, curve: str | None) -> str:
    """'train size 25', 'train size 4001 (whole split)', or the shown overrides ('default' without any)."""
    rest = without(r["shown"], curve)
    if curve and not math.isnan(r["x"]):
        label = f"train size {r['x']:g}" + (" (whole split)" if r["whole"] else "")
        return label + (f" ({rest})" if rest else "")
    return rest or "default"


def contexts(g: pd.DataFrame, res: Results, ends: bool = False, ok_only: bool = True):
    """(context, label) to draw, in the frame's order (by training-set size on a curve), and a note saying which
    were left out. ``ends``: on a learning curve only the smallest and the largest size."""
    rows = g[g["status"] == "ok"] if ok_only else g
    first = rows.drop_duplicates("context")
    curve = curve_key(g, res)
    keep = list(range(len(first)))
    if ends and curve and len(first) > 2:
        keep, note = [0, len(first) - 1], "the smallest and the largest training-set size"
    elif len(first) > MAX_CONTEXTS:
        keep = sorted({round(i * (len(first) - 1) / (MAX_CONTEXTS - 1)) for i in range(MAX_CONTEXTS)})
        note = f"{len(keep)} of {len(first)} contexts, evenly spaced"
    else:
        note = ""
    picked = [(first.iloc[i]["context"], context_label(first.iloc[i], curve)) for i in keep]
    return picked, note


def n_label(n: int) -> str:
    return "n = 1 seed" if n == 1 else f"n = {n} seeds"


def spread_label(ns: list[int], what: str = "sample std") -> str:
    """How a figure's error bars read: '± <what>' only when every point has n ≥ 2; never '±' with n = 1."""
    if ns and min(ns) >= 2:
        return f"mean ± {what} over seeds"
    if ns and max(ns) >= 2:
        return f"mean over seeds; bars: {what} where n ≥ 2"
    return "one seed per point, no error bars"


def class_names(g: pd.DataFrame, res: Results) -> list[str]:
    """The group's class names, one per label that occurs (a label without a name is shown as its number)."""
    ok = [res.runs[int(i)].row for i in g.loc[g["status"] == "ok", "run"]]
    names = max((list(r.class_names) for r in ok), key=len, default=[])
    labels = [
        max(max(tp) for tp in res.runs[int(i)].preds.values()) for i in g.loc[g["status"] == "ok", "run"]
    ]
    return names + [str(i) for i in range(len(names), max(labels, default=-1) + 1)]


def test_counts(g: pd.DataFrame, res: Results) -> np.ndarray:
    """Test samples per class of the group's ok runs (the largest count seen per class: runs of one group share
    their test split, checked when they are paired)."""
    k = len(class_names(g, res))
    counts = np.zeros(k, dtype=int)
    for i in g.loc[g["status"] == "ok", "run"]:
        targets = np.array([t for t, _ in res.runs[int(i)].preds.values()], dtype=int)
        counts = np.maximum(counts, np.bincount(targets, minlength=k))
    return counts


def one_error(g: pd.DataFrame, res: Results) -> tuple[float, str]:
    """One test error in the smallest class, in balanced-accuracy percentage points (balanced accuracy averages
    the recall of the classes present), and that class's name."""
    counts = test_counts(g, res)
    present = np.flatnonzero(counts)
    smallest = present[np.argmin(counts[present])]
    name = class_names(g, res)[smallest]
    return 100.0 / counts[smallest] / len(present), f"{name} ({counts[smallest]} test)"


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
