"""Forest plot per group, results/figures/<experiment>[_<group>]_forest.png: one panel per context (training-set
size), one line per comparison (each LBAM setting vs the baselines, every module vs none): Δ̄ with its seed-only
t-interval and its seed + test-smear bootstrap interval, the ±margin lines, the marker coloured by the stated
verdict. Groups with no comparison over ≥ 3 seeds have no intervals and no forest plot."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

from lbam.report.rows import Results, groups, title
from lbam.report.stats import DISAGREE, THRESHOLD, compare

COLORS = {
    "differ": "tab:red",
    "equivalent": "tab:green",
    "non-inferior": "tab:blue",
    "inconclusive": "0.55",
    DISAGREE: "tab:orange",
    THRESHOLD: "gold",
}
T_COLOR, BOOT_COLOR = "0.15", "tab:purple"


def forest_path(res: Results, experiment: str, slug: str) -> Path:
    return res.root / "figures" / f"{'_'.join(filter(None, (experiment, slug)))}_forest.png"


def _panel_title(r: pd.Series, n: str) -> str:
    if math.isnan(r["x"]):
        return f"{r['shown'] or 'default'} (n = {n})"
    return f"{r['x']:g} training crops{' (all)' if r['whole'] else ''}\nn = {n} seeds"


def _lines(p: pd.DataFrame) -> list[tuple[str, tuple | None]]:
    """The y rows top-down: a header per family, then its comparisons (family, setting, baseline)."""
    out = []
    for family, pf in p.drop_duplicates(["family", "setting", "baseline"]).groupby("family", sort=False):
        out.append((family, None))
        out += [(f"{a} − {b}", (family, a, b)) for a, b in zip(pf["setting"], pf["baseline"])]
    return out


def forest(p: pd.DataFrame, heading: str, out: Path) -> Path:
    """Draw the forest plot of the comparisons ``p`` (of one group, from `compare`) into ``out``."""
    lines, contexts = _lines(p), list(dict.fromkeys(p["context"]))
    margin, alpha = 100 * p["margin"].iloc[0], p["alpha"].iloc[0]
    size = (1.2 + 3.1 * len(contexts), 1.6 + 0.3 * len(lines))
    fig, axes = plt.subplots(1, len(contexts), figsize=size, sharey=True, squeeze=False)
    for ax, ctx in zip(axes[0], contexts):
        pc = p[p["context"] == ctx].set_index(["family", "setting", "baseline"])
        reach = margin
        for y, (_, key) in enumerate(lines):
            if key is None or key not in pc.index:
                continue
            r = pc.loc[key]
            for off, lo, hi, color in ((-0.17, r["low"], r["high"], T_COLOR), (0.17, r["boot_low"], r["boot_high"], BOOT_COLOR)):  # fmt: skip
                if not math.isnan(lo):
                    ax.plot([100 * lo, 100 * hi], [y + off] * 2, color=color, lw=2, solid_capstyle="butt")
                    reach = max(reach, abs(100 * lo), abs(100 * hi))
            ax.plot(
                100 * r["mean"], y, "o", ms=6, color=COLORS.get(r["finding"], "black"), mec="black", mew=0.5
            )
        for y, (_, key) in enumerate(lines):
            if key is None:  # a family header: a band across the panel
                ax.axhspan(y - 0.5, y + 0.5, color="0.92", lw=0)
        ax.axvline(0, color="0.3", lw=0.8)
        for m in (-margin, margin):
            ax.axvline(m, color="tab:red", lw=0.9, ls="--")
        ax.set_xlim(-1.08 * reach, 1.08 * reach)
        ax.set_title(_panel_title(pc.iloc[0], "/".join(map(str, sorted(set(pc["n"]))))), fontsize=9)
        ax.set_xlabel("Δ balanced accuracy (pp)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(lines)), [label for label, _ in lines])
    for tick, (_, key) in zip(axes[0][0].get_yticklabels(), lines):
        tick.set_fontweight("bold" if key is None else "normal")
    axes[0][0].set_ylim(len(lines) - 0.5, -0.5)  # first line on top
    ci = f"{100 * (1 - 2 * alpha):g} %"
    handles = [
        Line2D([], [], color=T_COLOR, lw=2, label=f"(a) {ci} t-interval, seeds only"),
        Line2D([], [], color=BOOT_COLOR, lw=2, label=f"(b) {ci} bootstrap interval, seeds + test smears"),
        Line2D([], [], color="tab:red", ls="--", label=f"±{margin:g} pp margin"),
    ]
    handles += [Line2D([], [], ls="", marker="o", color=c, mec="black", label=f) for f, c in COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    what = "Paired Δ = A − B, mean over seeds (x scales differ per panel); marker colour: the verdict stated"
    fig.suptitle(f"{what} (orange: (a) and (b) disagree)\n{heading}", fontsize=9)
    fig.tight_layout(rect=(0, 0.07 if len(lines) > 12 else 0.1, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return out


def write_forest(res: Results) -> list[Path]:
    """A forest plot per group with intervals."""
    written = []
    for experiment, slug, g in groups(res.frame):
        if (g["status"] == "ok").any() and len(p := compare(g, res.runs)) and p["low"].notna().any():
            written.append(forest(p, title(g), forest_path(res, experiment, slug)))
    return written
