"""What accuracy costs: test balanced accuracy against three costs, each on its own panel: attention parameters,
FLOPs per image, and the measured training speed (images/s) with its device, compile state and load. One row of
panels per shown context (on a learning curve: the smallest and the largest training-set size). Error bars only
where n ≥ 2 seeds. Speeds leave loaded runs out where a setting has others; a setting whose every run was loaded is
drawn hollow, "measured under load X" (``lbam.report.load``). Markers that would hide each other (the same cost,
e.g. LBAM and LBAM residual=false: 3,058 parameters each) are offset sideways by a few points. Every panel carries
a scale bar the size of one test error in the smallest class, so that a difference of one crop does not read as
a gap, and the y axis spans at least eight such errors."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from lbam.report.figstyle import contexts, n_label, one_error, settings, spread_label, style
from lbam.report.load import load_state, load_summary
from lbam.report.rows import Results, title

MIN_SPAN = 8  # the y axis spans at least this many one-error steps
MARKER_PT = 7.0  # marker size; markers closer than this sideways share a column and are spread apart by it


def points(rows: pd.DataFrame) -> pd.DataFrame:
    """Per setting: n ok seeds, balanced accuracy (%) mean and sample std, costs, images/s mean and std over the
    runs that were not loaded, else (every run loaded: ``ips_load``, their mean load) over the loaded ones."""
    ok = rows[rows["status"] == "ok"].assign(acc=lambda d: 100 * d["test_balanced_acc"])
    ok = ok.assign(
        ips=pd.to_numeric(ok["images_per_second"], errors="coerce"), loaded=load_state(ok) == "loaded"
    )
    ok = ok.assign(load=pd.to_numeric(ok["load_average"], errors="coerce"))
    agg = {"n": ("acc", "count"), "acc": ("acc", "mean"), "acc_std": ("acc", "std")}
    agg |= {"attention_params": ("attention_params", "first"), "flops": ("flops", "first")}
    out = ok.groupby("setting", sort=False).agg(**agg)
    for setting, g in ok.groupby("setting", sort=False):
        clean = g[~g["loaded"] & g["ips"].notna()]
        use = clean if len(clean) else g[g["ips"].notna()]
        out.loc[setting, ["ips", "ips_std"]] = use["ips"].mean(), use["ips"].std()
        out.loc[setting, "ips_load"] = use["load"].mean() if len(use) and not len(clean) else np.nan
    return out


def offsets(x: np.ndarray, width_pt: float) -> np.ndarray:
    """Sideways offsets (points) for markers drawn at ``x`` (on the panel's scale) across ``width_pt`` points:
    markers less than a marker apart share a column, where their error bars would hide each other, so each such
    cluster is spread evenly around its place, a little more than a marker apart."""
    finite = x[~np.isnan(x)]
    span = np.ptp(finite) if len(finite) > 1 and np.ptp(finite) > 0 else 1.0
    pts = x / span * width_pt
    out, done = np.zeros(len(x)), np.isnan(x)
    for i in np.argsort(pts):
        if done[i]:
            continue
        idx = np.flatnonzero((np.abs(pts - pts[i]) < MARKER_PT) & ~done)
        out[idx] = (np.arange(len(idx)) - (len(idx) - 1) / 2) * 1.3 * MARKER_PT  # a little air between them
        done[idx] = True
    return out


def panel_scale(values: np.ndarray, symlog: bool) -> np.ndarray:
    """The panel's x as drawn: symlog (linthresh 10) for the parameters, else linear."""
    return np.sign(values) * np.log10(1 + np.abs(values) / 10) if symlog else values


def speed_label(g: pd.DataFrame) -> str:
    """What the images/s axis measured: device, compile state, sharing of the machine, processes."""
    ok = g[g["status"] == "ok"]
    devices = "; ".join(sorted(set(ok["device"].astype(str))))
    compiled = int(ok["compiled"].astype(bool).sum())
    state = "eager" if compiled == 0 else "compiled"
    if 0 < compiled < len(ok):
        state = f"compiled in {compiled} of {len(ok)} runs"
    parts = [f"training images/s, after epoch 1\n{devices}, {state}"]
    jobs = pd.to_numeric(ok.get("concurrent_jobs"), errors="coerce").max()
    if jobs > 1:
        parts.append(f"shared by up to {jobs:g} concurrent jobs")
    world = pd.to_numeric(ok.get("world_size"), errors="coerce").max()
    if world > 1:
        parts.append(f"summed over up to {world:g} processes")
    return ", ".join(parts) + f"\n{load_summary(g)}"


def n_text(n: pd.Series) -> str:
    """'n = 7 seeds per setting', or each setting's n when they differ."""
    if n.nunique() == 1:
        return f"{n_label(int(n.iloc[0]))} per setting"
    return "n: " + ", ".join(f"{s} {k}" for s, k in n.items())


def y_limits(p: pd.DataFrame, step: float) -> tuple[float, float]:
    lo = (p["acc"] - p["acc_std"].fillna(0)).min()
    hi = (p["acc"] + p["acc_std"].fillna(0)).max()
    span = max(hi - lo, MIN_SPAN * step)
    mid = (lo + hi) / 2
    top = min(mid + span / 2, 100.0)  # balanced accuracy ends at 100 %
    return top - span - 0.08 * span, top + 0.05 * span


def scale_bar(ax, step: float, name: str) -> None:
    """A vertical bar one minority-class error tall, at the panel's right edge."""
    low, high = ax.get_ylim()
    y0 = low + 0.06 * (high - low)
    trans = mtransforms.blended_transform_factory(ax.transAxes, ax.transData)
    ax.plot([0.96, 0.96], [y0, y0 + step], transform=trans, color="black", lw=3, solid_capstyle="butt")
    ax.text(0.94, y0 + step / 2, f"1 error in {name}\n= {step:.2f} pp", transform=trans, ha="right",
            va="center", fontsize=6.5)  # fmt: skip


def plot_cost(g: pd.DataFrame, res: Results):
    """The figure of one group (returned, not saved)."""
    shown, note = contexts(g, res, ends=True)
    colors = style(g)
    step, name = one_error(g, res)
    panels = [
        ("attention_params", "attention parameters (symlog)", None),
        ("flops", "FLOPs per image (M)", 1e-6),
        ("ips", speed_label(g), None),
    ]
    fig, axes = plt.subplots(len(shown), 3, figsize=(13, 3.6 * len(shown) + 1.4), squeeze=False, sharey="row")
    all_n = []
    for i, (ctx, label) in enumerate(shown):
        p = points(g[g["context"] == ctx])
        all_n += list(p["n"])
        axes[i, 0].set_ylim(*y_limits(p, step))
        for j, (col, xlabel, scale) in enumerate(panels):
            ax = axes[i, j]
            xs = (p[col] * (scale or 1)).to_numpy(float)
            if col == "attention_params":
                ax.set_xscale("symlog", linthresh=10)
            width_pt = 0.9 * ax.get_position().width * fig.get_figwidth() * 72  # the data, less the margins
            shift = offsets(panel_scale(xs, col == "attention_params"), width_pt)
            for k, (setting, r) in enumerate(p.iterrows()):
                if np.isnan(xs[k]):
                    continue
                yerr = r["acc_std"] if r["n"] >= 2 else None
                xerr = r["ips_std"] * (scale or 1) if col == "ips" and r["n"] >= 2 else None
                hollow = col == "ips" and not np.isnan(r["ips_load"])  # measured under load only
                where = mtransforms.offset_copy(ax.transData, fig=fig, x=shift[k], y=0, units="points")
                ax.errorbar(xs[k], r["acc"], yerr=yerr, xerr=xerr, ls="none", capsize=3, ms=7, mec="black",
                            mew=0.5, transform=where, **colors[setting], **({"mfc": "none"} if hollow else {}))  # fmt: skip
                if hollow:
                    ax.annotate(f"load {r['ips_load']:.1f}", (xs[k], r["acc"]), xytext=(shift[k], 6),
                                textcoords="offset points", fontsize=6, ha="center")  # fmt: skip
            # offset markers are drawn in a shifted transform, which autoscaling ignores: their data limits here
            spread = (p["ips_std"].fillna(0) * (p["n"] >= 2)).to_numpy(float) if col == "ips" else 0 * xs
            ax.update_datalim(
                [(x, y) for x, y in zip([*(xs - spread), *(xs + spread)], [*p["acc"]] * 2) if x == x]
            )
            ax.autoscale_view()
            if col == "ips" and p["ips"].isna().all():
                ax.text(0.5, 0.5, "no measured speed in these rows", transform=ax.transAxes, ha="center")
            ax.set_xlabel(xlabel, fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            scale_bar(ax, step, name)
        axes[i, 0].set_ylabel("test balanced accuracy (%)", fontsize=8)
        axes[i, 1].set_title(f"{label} · {n_text(p['n'])}", fontsize=9)
    handles = [
        Line2D([], [], ls="none", mec="black", mew=0.5, ms=7, label=s, **colors[s]) for s in settings(g)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False)
    rows_note = f"; rows: {note}" if note else ""
    fig.suptitle(
        f"cost vs accuracy · {title(g)}\ny: {spread_label(all_n)} (n: ok seeds, in each row's title)"
        f"{rows_note}\nscale bar: one test error in the smallest class, in balanced-accuracy points; markers that "
        "share a column are spread sideways; hollow: images/s measured under load (the load above it)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
