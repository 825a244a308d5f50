"""Tables per experiment: results/tables/<experiment>.{md,csv,tex}, one row per setting and context, and
<experiment>_pairs.csv, LBAM vs each baseline. Mean ± sample std (ddof = 1) over the ok seeds; failed runs are
counted and listed, never averaged."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd

from lbam.io import atomic_write
from lbam.report.bootstrap import RESAMPLES
from lbam.report.figures import figures_markdown
from lbam.report.load import RULE, load_state, speed_cell, speeds
from lbam.report.rows import GROUP, Results, Run, groups, title
from lbam.report.stats import MC_BAND, MIN_SEEDS, TESTS, compare, compare_all, delta_vs_none

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
    ok = g["status"] == "ok"
    agg |= {"load_average": ("load_ok", "mean"), "loaded": ("loaded", "sum")}
    load = pd.to_numeric(g["load_average"], errors="coerce")
    grouped = g.assign(load_ok=load.where(ok), loaded=ok & (load_state(g) == "loaded")).groupby(
        [*GROUP, "context", "setting"], sort=False
    )
    out = grouped.agg(**agg).reset_index()
    # images/s: the mean over the runs that were not loaded, else (every run loaded) marked with its load
    speed = [speeds(rows) for _, rows in grouped]
    out["images_per_second"], out["images_per_second_load"] = [s for s, _ in speed], [ld for _, ld in speed]
    out["delta_vs_none"] = [delta.get(k, math.nan) for k in zip(out["context"], out["setting"])]
    return out


def load_cell(load: float, loaded: int, n: int) -> str:
    """'not recorded', '1.7', or '3.9 (2 of 3 runs loaded)'."""
    if math.isnan(load):
        return "not recorded"
    return f"{load:.1f}" + (f" ({loaded} of {n} runs loaded)" if loaded else "")


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
    cells["images/s"] = [
        speed_cell(v, ld) for v, ld in zip(s["images_per_second"], s["images_per_second_load"])
    ]
    cells["load (1 min)"] = [load_cell(ld, k, n) for ld, k, n in zip(s["load_average"], s["loaded"], s["n"])]
    return pd.DataFrame(cells | {"failed": s["failed"]})


def pval(p: float) -> str:
    return num(p, 3) if p >= 1e-3 or math.isnan(p) else f"{p:.1e}"


def interval(low: float, high: float) -> str:
    return DASH if math.isnan(low) else f"[{100 * low:+.2f}, {100 * high:+.2f}]"


def pairs_table(p: pd.DataFrame) -> pd.DataFrame:
    """One comparison per line: Δ, then per method its interval, Holm p of the three tests and verdict, then
    the verdict stated (the common one of (a) and (b)) and McNemar per seed."""
    ci = f"{100 * (1 - 2 * p['alpha'].iloc[0]):g} %"
    cells = {"comparison": [f"{a} − {b}" for a, b in zip(p["setting"], p["baseline"])], "n": p["n"]}
    cells |= {"Δ bal. acc (pp)": [pct(m, s, signed=True) for m, s in zip(p["mean"], p["std"])]}
    for method, pre, name in (("t", "", "(a) seeds"), ("boot", "boot_", "(b) seeds + test")):
        holms = zip(*(p[f"{pre}{t}_holm"].map(pval) for t in TESTS))
        if pre:  # the bootstrap's Monte Carlo error beside each of its p's
            holms = zip(*(
                [f"{pval(v)} ± {e:.1g}" if e > 0 else pval(v) for v, e in zip(p[f"{pre}{t}_holm"], p[f"{pre}{t}_holm_se"].fillna(0))]
                for t in TESTS
            ))  # fmt: skip
        cells |= {
            f"{name}: {ci} CI (pp)": [interval(lo, hi) for lo, hi in zip(p[pre + "low"], p[pre + "high"])]
        }
        cells |= {f"{name}: Holm p diff / NI / TOST": [" / ".join(h) for h in holms]}
        cells |= {f"{name}: verdict": p[f"finding_{method}"]}
    cells |= {"verdict": p["finding"], "McNemar b/c per seed": p["mcnemar"]}
    return pd.DataFrame(cells)


def tests_caption(p: pd.DataFrame) -> str:
    """How the verdicts are reached, with the experiment's α and margin."""
    alpha, margin = p["alpha"].iloc[0], 100 * p["margin"].iloc[0]
    ci = f"{100 * (1 - 2 * alpha):g} %"
    limited = (
        ""
        if p["claims"].all()
        else (
            " Outside the primary sizes the plan draws no equivalence or non-inferiority claim: there only the "
            "difference test speaks (*inconclusive* = no difference found)."
        )
    )
    return (
        "LBAM vs the baselines and every module vs none, on the same test crops, paired by seed; Δ = A − B "
        "balanced accuracy (pp), recomputed from the predictions. Three tests per comparison, each "
        "Holm-corrected within its family (each LBAM setting vs the others; every setting vs none), size and "
        f"test type, α = {alpha:g}: difference (two-sided), non-inferiority (H0: Δ ≤ −{margin:g} pp) and "
        f"equivalence (TOST, ±{margin:g} pp; the margin stated in advance). A comparison in both families gets "
        "the larger of its two Holm p's and one verdict, shown under A − none. Each test twice: (a) over the "
        f"seeds, paired t-test, {ci} t-interval; (b) over the seeds and the test smears, a paired two-level "
        f"bootstrap ({RESAMPLES:,} resamples of the seeds and of the smears, the same for both settings), {ci} "
        "percentile interval; resampling seeds and smears independently counts their interaction twice, so (b) "
        "over-estimates the variance and is conservative. *differ*: the difference test rejects; *equivalent*: "
        "TOST rejects; *non-inferior*: only non-inferiority rejects; *inconclusive*: none, or fewer than "
        f"{MIN_SEEDS} seeds; *at the threshold*: a bootstrap p within {MC_BAND:g} Monte Carlo SE of α would "
        "decide the verdict. A verdict is stated only where (a) and (b) agree." + limited
    )


def ceiling_line(r: pd.Series, where: str = "") -> str:
    """The ceiling of a context's test set (columns ceiling_* of `compare`)."""
    always = r["ceiling_wrong_all"].split()
    named = f" ({', '.join(always[:5])}{', …' if len(always) > 5 else ''})" if always else ""
    return (
        f"Ceiling{where}: {r['ceiling_wrong_any']} of {r['ceiling_crops']} test crops wrong in at least one of "
        f"{r['ceiling_runs']} runs, {len(always)} in every run{named}; highest reachable balanced accuracy "
        f"{100 * r['ceiling_best']:.2f} %."
    )


def findings_parts(pc: pd.DataFrame) -> list[str]:
    """One context's comparisons: the caption, a table per family (LBAM vs the baselines, every module vs
    none), the ceiling."""
    mc = "McNemar's exact test per seed: b = A right and B wrong, c = the reverse."
    parts = [f"{tests_caption(pc)} {mc}"]
    for family, pf in pc.groupby("family", sort=False):
        parts += [f"**{family}**", md(pairs_table(pf))]
    return [*parts, ceiling_line(pc.iloc[0])]


def short_label(shown: str, x: float, whole: bool) -> str:
    """A context in a table cell: its training-set size on a learning curve, else its overrides."""
    return (shown or "default") if math.isnan(x) else f"{x:g}" + (" (all)" if whole else "")


def heading(shown: str, x: float, whole: bool) -> str:
    if math.isnan(x):
        return f"overrides: {shown}" if shown else ""
    split = " (whole training split)" if whole else ""
    return f"train-set size {x:g}{split}" + (f" ({shown})" if shown else "")


def group_markdown(
    g: pd.DataFrame, s: pd.DataFrame, p: pd.DataFrame, pooled: pd.DataFrame | None = None
) -> str:
    seeds = ", ".join(map(str, sorted(set(g.loc[g["status"] == "ok", "seed"])))) or "none"
    parts = [
        f"## {title(g)}",
        f"Device {'; '.join(sorted(set(g['device'].astype(str))))} · seeds {seeds}. Accuracies in %, mean ± "
        "sample std (ddof = 1) over the n ok seeds; Δ vs `none` in pp, paired over the seeds both ran; "
        f"attention params and FLOPs of one {g['image_size'].iloc[0]}px image; images/s: training speed, left out "
        f"for loaded runs where a setting has others (load: mean 1-min load average; {RULE}).",
    ]
    for (ctx, shown, x, whole), sc in s.groupby(["context", "shown", "x", "whole"], sort=False, dropna=False):
        if heading(shown, x, whole):
            parts.append(f"### {heading(shown, x, whole)}")
        parts.append(md(table(sc)))
        pc = p[p["context"] == ctx] if len(p) else p
        if len(pc):
            parts += findings_parts(pc)
    if (
        len(p) and p["n"].max() >= MIN_SEEDS
    ):  # power and direction, beside the verdicts (the plan's amendment)
        from lbam.report import evidence  # it renders with this module's helpers

        p = p.assign(size=[short_label(sh, x, w) for sh, x, w in zip(p["shown"], p["x"], p["whole"])])
        parts += [
            evidence.power_caption(p["alpha"].iloc[0], p["margin"].iloc[0]),
            md(evidence.power_table(p, "size")),
        ]
        if pooled is not None and len(pooled):
            pooled = pooled.assign(
                size=[
                    short_label(sh, x, w) for sh, x, w in zip(pooled["shown"], pooled["x"], pooled["whole"])
                ]
            )
            parts += [evidence.DIRECTION_CAPTION, md(evidence.direction_table(p, pooled, "size"))]
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
        else f"the experiment has no file configs/experiment/{experiment}.yaml, so it declares no sweep"
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
        done = [(g, summarize(g, res.runs), *compare_all(g, res.runs)) for *_, g in parts]
        text = [f"# Results: {experiment}", *([skipped_note(res)] if res.skipped else [])]
        from lbam.report.sensitivity import sensitivity_files  # it renders with this module's helpers

        sens = sensitivity_files(res, [(g, p) for g, _, p, _ in done])
        body = [group_markdown(*d) for d in done] + [figures_markdown(res, experiment)]  # + links, recall
        from lbam.report.bridge import bridges, section  # it renders with this module's helpers

        if experiment in bridges(res):  # the steps side by side first, then each step's own tables
            body.insert(0, "\n\n".join(["## Steps side by side", *section(res, experiment)[1:]]))
        body += [sens.pop(".md").strip()] if ".md" in sens else []  # the label-audit sensitivity section
        files = {".md": "\n\n".join(text + body + other_runs(res, experiment)) + "\n"}
        files[".tex"] = "\n".join(latex(table(s), title(g)) for g, s, *_ in done)
        files[".csv"] = pd.concat(s for _, s, *_ in done).to_csv(index=False, float_format="%.6g")
        if any(len(p) for _, _, p, _ in done):
            files["_pairs.csv"] = pd.concat(p for _, _, p, _ in done).to_csv(index=False, float_format="%.6g")
        if any(len(q) for *_, q in done):
            files["_pooled.csv"] = pd.concat(q for *_, q in done).to_csv(index=False, float_format="%.6g")
        files |= sens
        for suffix, data in files.items():
            written.append(atomic_write(res.root / "tables" / f"{experiment}{suffix}", data))
    return written + other_runs_only(res)
