"""Training curves of a group: did every run train? One column of panels per setting; per context (on a learning
curve: per training-set size) a row of train loss (log scale) and a row of train accuracy, with the validation
accuracy dashed where a row has it. Line: median over the ok seeds; band: their min–max. A failed run, or an ok
run whose loss did not fall, is drawn in red and named in its panel; a failed run without history is named.

The x axis is the optimiser step for a step budget (``trainer.max_steps``: a 25-crop set runs 300 one-batch
epochs, the whole split 3 long ones, so epochs do not compare), else the epoch. A row keeps epoch numbers
(thinned to ≤ 50 per run), so the step after epoch e is e × ceil(images per full epoch / batch size), capped at
the run's step count; without a recorded batch size, e × steps / epochs."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lbam.report.figstyle import RED, contexts, n_label, settings, style
from lbam.report.rows import Results, title
from lbam.results import Row

STEP, EPOCH = "optimiser step", "epoch"


def step_budget(g: pd.DataFrame, res: Results) -> bool:
    """The group trains to a step budget: a row's config says so, or its ok runs share the step count but not
    the epoch count (rows without a config)."""
    for i in g["run"]:
        max_steps = (res.runs[int(i)].row.config.get("trainer") or {}).get("max_steps")
        if isinstance(max_steps, int) and max_steps > 0:
            return True
    ok = g[g["status"] == "ok"]
    return ok["steps"].nunique() == 1 and ok["epochs"].nunique() > 1


def steps_of(row: Row, epoch: pd.Series, images: pd.Series) -> np.ndarray:
    """The optimiser step at the end of each epoch (see the module docstring)."""
    batch = (row.datamodule or {}).get("batch_size") or (row.config.get("dataset") or {}).get("batch_size")
    full = images.max()
    if batch and full > 0:
        per_epoch = math.ceil(full / batch)
    else:
        per_epoch = row.steps / row.epochs if row.epochs else 1.0
    return np.minimum(epoch.to_numpy() * per_epoch, row.steps or np.inf)


def history(row: Row, by_step: bool) -> pd.DataFrame:
    """One line per kept epoch: x, train loss, train accuracy (%), validation accuracy (%) or nan."""
    entries = [e for e in row.history if isinstance(e, dict)]  # the schema checks a list, not its entries
    h = pd.DataFrame(entries, columns=["epoch", "train_loss", "train_acc", "val_acc", "images"])
    h = h.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"]).sort_values("epoch")
    h["x"] = steps_of(row, h["epoch"], h["images"].fillna(0)) if by_step else h["epoch"]
    h[["train_acc", "val_acc"]] *= 100
    return h


def trouble(row: Row, h: pd.DataFrame) -> str | None:
    """Why a run is drawn in red: it failed, or its recorded loss went non-finite or never fell."""
    if row.status != "ok":
        return (row.error or "failed").split(":")[0]
    loss = h["train_loss"].to_numpy()
    if len(loss) and not np.isfinite(loss).all():
        return "non-finite loss"
    if len(loss) > 1 and loss[-1] >= loss[0]:
        return "loss did not fall"
    return None


def band(curves: list[pd.DataFrame], col: str) -> pd.DataFrame:
    """Median, min and max over runs of ``col`` on the union of their x values (each run interpolated within
    its own range, nothing extrapolated)."""
    xs = np.unique(np.concatenate([c["x"].to_numpy() for c in curves]))
    ys = [np.interp(xs, c["x"], c[col], left=np.nan, right=np.nan) for c in curves if c[col].notna().any()]
    if not ys:
        return pd.DataFrame(columns=["median", "min", "max"])
    y = pd.DataFrame(np.vstack(ys), columns=xs)
    return pd.DataFrame({"median": y.median(), "min": y.min(), "max": y.max()})


def draw_panel(ax_loss, ax_acc, rows: pd.DataFrame, res: Results, by_step: bool, color) -> bool:
    """One setting in one context; returns whether a validation accuracy was drawn."""
    good, notes, red, has_val = [], [], False, False
    for _, r in rows.iterrows():
        row = res.runs[int(r["run"])].row
        h = history(row, by_step)
        why = trouble(row, h)
        if row.status == "ok" and len(h):
            good.append(h)  # a suspect ok run stays in the band (n counts it) and is drawn in red on top
        if why is None:
            notes += [] if len(h) else [f"seed {row.seed}: no history"]
            continue
        red = True
        notes.append(f"seed {row.seed}: {why}" + ("" if len(h) else " (no history)"))
        if len(h):
            ls = "-" if row.status == "ok" else "--"
            ax_loss.plot(h["x"], h["train_loss"], color=RED, lw=1.2, ls=ls, zorder=4)
            ax_acc.plot(h["x"], h["train_acc"], color=RED, lw=1.2, ls=ls, zorder=4)
    for col, ax, ls in (("train_loss", ax_loss, "-"), ("train_acc", ax_acc, "-"), ("val_acc", ax_acc, "--")):
        b = band(good, col) if good else pd.DataFrame()
        if b.empty:
            continue
        has_val |= col == "val_acc"
        ax.plot(b.index, b["median"], color=color, lw=1.4, ls=ls)
        if len(good) > 1:
            ax.fill_between(b.index, b["min"], b["max"], color=color, alpha=0.25, lw=0)
    n_ok = int((rows["status"] == "ok").sum())
    text = n_label(n_ok) + "".join(f"\n{n}" for n in notes)
    ax_loss.text(0.97, 0.95, text, transform=ax_loss.transAxes, ha="right", va="top", fontsize=7,
                 color=RED if red else "black", bbox={"fc": "white", "alpha": 0.7, "lw": 0})  # fmt: skip
    return has_val


def plot_training_curves(g: pd.DataFrame, res: Results):
    """The figure of one group (returned, not saved)."""
    by_step = step_budget(g, res)
    shown, note = contexts(g, res, ok_only=False)
    cols, colors = settings(g), style(g)
    fig, axes = plt.subplots(
        2 * len(shown), len(cols), figsize=(2.1 * len(cols) + 1, 1.6 * 2 * len(shown) + 1.4),
        sharex=True, sharey="row", squeeze=False,
    )  # fmt: skip
    has_val = False
    for i, (ctx, label) in enumerate(shown):
        for j, setting in enumerate(cols):
            ax_loss, ax_acc = axes[2 * i, j], axes[2 * i + 1, j]
            rows = g[(g["context"] == ctx) & (g["setting"] == setting)]
            if len(rows):
                has_val |= draw_panel(ax_loss, ax_acc, rows, res, by_step, colors[setting]["color"])
            else:
                ax_loss.text(0.5, 0.5, "no runs", transform=ax_loss.transAxes, ha="center", fontsize=7)
            ax_loss.set_yscale("log")
            for ax in (ax_loss, ax_acc):
                ax.grid(alpha=0.3)
                ax.tick_params(which="both", labelsize=7)  # a log axis under one decade labels minor ticks
            if i == 0:
                ax_loss.set_title(setting, fontsize=9, color=colors[setting]["color"])
        axes[2 * i, 0].set_ylabel(f"{label}\ntrain loss (log)", fontsize=8)
        axes[2 * i + 1, 0].set_ylabel(f"{label}\naccuracy (%)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel(STEP if by_step else EPOCH, fontsize=8)
    ns = g[g["status"] == "ok"].groupby(["context", "setting"]).size()
    several = len(ns) and ns.max() > 1
    spread = "line: median, band: min–max over the ok seeds" if several else "one run per panel"
    what = "median over ok seeds" if several else "the run"
    handles = [Line2D([], [], color="gray", lw=1.4, label=f"train loss / train accuracy: {what}")]
    if several:
        handles.append(Patch(color="gray", alpha=0.25, label="min–max over ok seeds"))
    if has_val:
        handles.append(Line2D([], [], color="gray", ls="--", label="validation accuracy"))
    handles.append(
        Line2D([], [], color=RED, label="failed (dashed), loss non-finite or not falling: named in its panel")
    )
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    x_note = "x: optimiser step (step budget; from epoch × batches per epoch)" if by_step else "x: epoch"
    shown_note = f"; rows: {note}" if note else ""
    fig.suptitle(
        f"training curves · {title(g)}\n{spread}; {x_note}\nhistory thinned to ≤ 50 epochs per run{shown_note}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig
