"""Tables per experiment: results/tables/<experiment>.{md,csv,tex}, one row per setting and context, and
<experiment>_pairs.csv, LBAM vs each baseline. Mean ± sample std (ddof = 1) over the ok seeds; failed runs are
counted and listed, never averaged."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd

from lbam.io import atomic_write
from lbam.report.figures import figures_markdown
from lbam.report.rows import GROUP, Results, Run, groups, title
from lbam.report.stats import MIN_SEEDS, compare, delta_vs_none

METRICS = {
    "test_acc": "test acc (%)",
    "test_balanced_acc": "balanced acc (%)",
    "test_macro_f1": "macro-F1 (%)",
}
DASH = "–"


def summarize(g: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """One row per (context, setting) of a group: n ok seeds, failed runs, metric means and sample stds, cost,
    and Δ balanced accuracy vs `none` paired over seeds."""
    delta = delta_vs_none(g, runs)
    g = g.assign(failed=g["status"] == "failed", ok_seed=g["seed"].astype(str).where(g["status"] == "ok"))
    agg = {k: (k, "first") for k in ("shown", "x", "whole", "attention")}
    agg |= {"n": ("test_acc", "count"), "failed": ("failed", "sum")}
    agg |= {"seeds": ("ok_seed", lambda s: " ".join(s.dropna()))}
    for k in METRICS:
        agg |= {f"{k}_mean": (k, "mean"), f"{k}_std": (k, "std")}  # pandas' std: ddof = 1
    agg |= {k: (k, "first") for k in ("params", "attention_params", "flops")}
    agg |= {"images_per_second": ("images_per_second", "mean")}
    out = g.groupby([*GROUP, "context", "setting"], sort=False).agg(**agg).reset_index()
    out["delta_vs_none"] = [delta.get(k, math.nan) for k in zip(out["context"], out["setting"])]
    return out


def pct(mean: float, std: float = math.nan, signed: bool = False) -> str:
    """'99.49 ± 0.12' (%), or '+0.31' (pp) when signed; no ± without a std (n = 1)."""
    if math.isnan(mean):
        return DASH
    return f"{100 * mean:{'+' if signed else ''}.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def num(x: float, digits: int = 0, scale: float = 1.0) -> str:
    return DASH if x is None or math.isnan(x) else f"{x / scale:,.{digits}f}"


def md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True)


def table(s: pd.DataFrame) -> pd.DataFrame:
    """A summary's cells as shown in the md and tex tables (and the README's)."""
    cells = {"setting": s["setting"], "n": s["n"], "attn params": s["attention_params"].map(num)}
    cells |= {"params": s["params"].map(num), "MFLOPs": [num(f, 2, 1e6) for f in s["flops"]]}
    cells |= {
        name: [pct(m, sd) for m, sd in zip(s[f"{k}_mean"], s[f"{k}_std"])] for k, name in METRICS.items()
    }
    cells |= {"Δ bal. acc vs none (pp)": [pct(d, signed=True) for d in s["delta_vs_none"]]}
    return pd.DataFrame(cells | {"images/s": s["images_per_second"].map(num), "failed": s["failed"]})


def pval(p: float) -> str:
    return num(p, 3) if p >= 1e-3 or math.isnan(p) else f"{p:.1e}"


def pairs_table(p: pd.DataFrame) -> pd.DataFrame:
    ci = [
        DASH if math.isnan(lo) else f"[{100 * lo:+.2f}, {100 * hi:+.2f}]"
        for lo, hi in zip(p["low"], p["high"])
    ]
    cells = {"LBAM": p["lbam"], "baseline": p["baseline"], "n": p["n"]}
    cells |= {"Δ bal. acc (pp)": [pct(m, s, signed=True) for m, s in zip(p["mean"], p["std"])]}
    cells |= {"paired t p": p["p"].map(pval), "Holm p": p["p_holm"].map(pval)}
    cells |= {f"{100 * (1 - 2 * p['alpha'].iloc[0]):g} % CI (pp)": ci, "McNemar b/c per seed": p["mcnemar"]}
    return pd.DataFrame(cells | {"verdict": p["verdict"]})


def tests_caption(p: pd.DataFrame) -> str:
    """How the verdicts are reached, with the experiment's α and margin."""
    alpha, margin = p["alpha"].iloc[0], 100 * p["margin"].iloc[0]
    return (
        "LBAM vs each baseline tested on the same samples, paired by seed; Δ = LBAM − baseline balanced "
        "accuracy (pp). *differ*: two-sided paired t-test over the seeds (scipy.stats), Holm-corrected "
        f"over the baselines, p < {alpha:g}; *equivalent*: the {100 * (1 - 2 * alpha):g} % CI of Δ inside "
        f"±{margin:g} pp (TOST); *non-inferior*: its lower end > −{margin:g} pp (the margin stated in advance; "
        f"not adjusted for multiplicity); *inconclusive*: none of these, or fewer than {MIN_SEEDS} seeds."
    )


def heading(shown: str, x: float, whole: bool) -> str:
    if math.isnan(x):
        return f"overrides: {shown}" if shown else ""
    split = " (whole training split)" if whole else ""
    return f"train-set size {x:g}{split}" + (f" ({shown})" if shown else "")


def group_markdown(g: pd.DataFrame, s: pd.DataFrame, p: pd.DataFrame) -> str:
    seeds = ", ".join(map(str, sorted(set(g.loc[g["status"] == "ok", "seed"])))) or "none"
    parts = [
        f"## {title(g)}",
        f"Device {'; '.join(sorted(set(g['device'].astype(str))))} · seeds {seeds}. Accuracies in %, mean ± "
        "sample std (ddof = 1) over the n ok seeds; Δ vs `none` in pp, paired over the seeds both ran; "
        f"attention params and FLOPs of one {g['image_size'].iloc[0]}px image; images/s: training speed.",
    ]
    for (ctx, shown, x, whole), sc in s.groupby(["context", "shown", "x", "whole"], sort=False, dropna=False):
        if heading(shown, x, whole):
            parts.append(f"### {heading(shown, x, whole)}")
        parts.append(md(table(sc)))
        pc = p[p["context"] == ctx] if len(p) else p
        if len(pc):
            mc = "McNemar's exact test per seed: b = LBAM right and baseline wrong, c = the reverse."
            parts += [f"{tests_caption(pc)} {mc}", md(pairs_table(pc))]
    failed = g[g["status"] == "failed"]
    if len(failed):
        errors = [(str(e).strip().splitlines() or ["?"])[-1][:160] for e in failed["error"].fillna("")]
        cols = failed[["setting", "shown", "seed", "run_name"]].rename(columns={"shown": "overrides"})
        parts += [f"**Failed runs: {len(failed)}** (in no mean)", md(cols.assign(error=errors))]
    return "\n\n".join(parts)


def skipped_note(res: Results) -> str:
    n = len(res.skipped)
    return f"**{n} invalid row file{'s' * (n != 1)} skipped (--skip-invalid): these tables are incomplete.**"


def latex(df: pd.DataFrame, caption: str) -> str:
    tex = df.to_latex(index=False, caption=caption, escape=True)
    for a, b in ((" · ", ", "), ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("×", r"$\times$"), ("–", "--")):
        tex = tex.replace(a, b)
    return tex


def other_runs(res: Results, experiment: str) -> list[str]:
    """The "Other runs" section of an experiment's md: its runs outside the declared sweep, in the same
    tables, compared only among themselves (never with the official runs, whose verdicts they cannot touch)."""
    other = res.other[res.other["experiment"] == experiment] if len(res.other) else res.other
    if not len(other):
        return []
    why = (
        "runs that are no point of the sweep declared in its experiment file (hydra.sweeper.params, "
        "sweeps.grids, sweeps.settings), e.g. trials with extra overrides"
        if res.sweeps.get(experiment)
        else f"the experiment has no file lbam/configs/experiment/{experiment}.yaml, so it declares no sweep"
    )
    parts = [f"## Other runs: {len(other)}", f"Never in the README; {why}. Compared only among themselves."]
    for *_, g in groups(other):
        text = group_markdown(g, summarize(g, res.runs), compare(g, res.runs))
        parts.append("\n".join("#" + line if line.startswith("#") else line for line in text.splitlines()))
    return parts


def other_runs_only(res: Results) -> list[Path]:
    """The md of each experiment that has other runs only (no official ones): their section alone."""
    written = []
    for experiment in sorted(set(res.other.get("experiment", ())) - set(res.frame["experiment"])):
        text = [f"# Results: {experiment}", *([skipped_note(res)] if res.skipped else [])]
        text.append("No official runs: none of its rows is a point of a declared sweep.")
        md_text = "\n\n".join(text + other_runs(res, experiment)) + "\n"
        written.append(atomic_write(res.root / "tables" / f"{experiment}.md", md_text))
    return written


def write_tables(res: Results) -> list[Path]:
    written = []
    for experiment, parts in itertools.groupby(groups(res.frame), key=lambda t: t[0]):
        done = [(g, summarize(g, res.runs), compare(g, res.runs)) for *_, g in parts]
        text = [f"# Results: {experiment}", *([skipped_note(res)] if res.skipped else [])]
        more = other_runs(res, experiment)
        body = [group_markdown(*d) for d in done] + [figures_markdown(res, experiment)]  # + links, recall
        files = {".md": "

".join(text + body + more) + "
"}
        files[".tex"] = "\n".join(latex(table(s), title(g)) for g, s, _ in done)
        files[".csv"] = pd.concat(s for _, s, _ in done).to_csv(index=False, float_format="%.6g")
        if any(len(p) for *_, p in done):
            files["_pairs.csv"] = pd.concat(p for *_, p in done).to_csv(index=False, float_format="%.6g")
        for suffix, data in files.items():
            written.append(atomic_write(res.root / "tables" / f"{experiment}{suffix}", data))
    return written + other_runs_only(res)
