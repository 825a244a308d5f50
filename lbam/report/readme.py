"""The README results block, rendered deterministically from the rows, learning curves first: per group the
balanced accuracy per setting (and training-set size) with its cost, the LBAM findings, the provenance, and
links to the full tables and figures."""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path

import pandas as pd

from lbam.report.bridge import bridges
from lbam.report.bridge import figure_path as bridge_figure
from lbam.report.bridge import section as bridge_section
from lbam.report.declared import commands
from lbam.report.evidence import changed_count, direction_line, power_line
from lbam.report.figures import figure_paths, n_by_size
from lbam.report.forest import forest_path
from lbam.report.load import load_summary, speed_cell, speeds
from lbam.report.rows import ReportError, Results, analysis, groups, title, without
from lbam.report.sensitivity import sensitivity
from lbam.report.stats import DISAGREE, FINDINGS, MIN_SEEDS, NONE, THRESHOLD, VS_NONE, compare_all
from lbam.report.tables import (
    DASH,
    interval,
    md,
    pct,
    skipped_note,
    summarize,
    table,
    tests_caption,
)
from lbam.report.validate import commit_label, data_note

START, END = "<!-- results:start -->", "<!-- results:end -->"
SHORT = {
    "differ": "differ",
    "equivalent": "equiv.",
    "non-inferior": "NI",
    "inconclusive": "inc.",
    THRESHOLD: "thr.",
}


def _label(ctx: str, x: float, whole: bool, curve: str | None) -> str:
    """A context's row label: on a curve its training-set size (and other overrides), else its overrides."""
    rest = without(ctx, curve)
    if math.isnan(x):
        return rest or "default"
    return f"{x:g}" + (" (all)" if whole else "") + (f" ({rest})" if rest else "")


def _cell(r: pd.Series, other: str) -> str:
    """'se (+0.01; a [-0.62, +0.64], b [-0.92, +0.93])': the other setting, Δ and both intervals, (a) over seeds
    and (b) with the test smears; where (a) and (b) disagree, both verdicts, short ('a: equiv., b: inc.')."""
    cis = f"; a {interval(r['low'], r['high'])}, b {interval(r['boot_low'], r['boot_high'])}"
    cis = "" if math.isnan(r["low"]) else cis
    both = (
        f"; a: {SHORT[r['finding_t']]}, b: {SHORT[r['finding_boot']]}"
        if r["finding"] in (DISAGREE, THRESHOLD)
        else ""
    )
    return f"{other} ({pct(r['mean'], signed=True)}{cis}{both})"


def verdict_summary(p: pd.DataFrame, first: str) -> pd.DataFrame:
    """Per size (or overrides) and family, the comparisons under the verdict (a) and (b) share, "at the
    threshold" or "a/b disagree". A comparison in two families is shown once, under "A − none"."""
    rows = []
    for (label, family), pf in p.groupby([first, "family"], sort=False):
        vs_none = family == VS_NONE
        pf = pf if vs_none else pf[pf["families"] == 1]
        ab = f"A − {NONE}" if vs_none else f"{pf['setting'].iloc[0] if len(pf) else '?'} − B"
        cells = [
            (r["finding"], _cell(r, r["setting"] if vs_none else r["baseline"])) for _, r in pf.iterrows()
        ]
        rows.append({first: label, "Δ = A − B": ab} | {f: ", ".join(c for g, c in cells if g == f) or DASH for f in (*FINDINGS, THRESHOLD, DISAGREE)})  # fmt: skip
    return pd.DataFrame(rows)


def ceiling_summary(p: pd.DataFrame, first: str) -> str:
    """One line: per size the crops wrong in some run and in every run, and the highest reachable accuracy."""
    c = p.drop_duplicates(first)
    per = [f"{lb}: {a} / {len(w.split())} → {100 * b:.2f} %" for lb, a, w, b in zip(c[first], c["ceiling_wrong_any"], c["ceiling_wrong_all"], c["ceiling_best"])]  # fmt: skip
    always = sorted({i for w in c["ceiling_wrong_all"] for i in w.split()})
    named = (
        f"; wrong in every run: {', '.join(always[:5])}{' …' if len(always) > 5 else ''}" if always else ""
    )
    return (
        f"Ceiling ({c['ceiling_crops'].iloc[0]} test crops wrong in at least one run / in every run → the highest "
        f"reachable balanced accuracy): {'; '.join(per)}{named}."
    )


def sensitivity_line(p: pd.DataFrame, q: pd.DataFrame, n: int) -> str:
    """How many stated verdicts change with the audited crops removed (the full tables have the table)."""
    changed, stated = changed_count(p, q)
    best = sorted({f"{100 * b:.2f} %" for b in q["ceiling_best"]})
    return (
        f"Label-audit sensitivity ({n} audited crops removed from the test set; table in the full tables): "
        f"{changed} of the {stated} stated verdicts change; highest reachable balanced accuracy then "
        f"{', '.join(best)}."
    )


def section(g: pd.DataFrame, res: Results) -> list[str]:
    (p, pooled), curve = compare_all(g, res.runs), analysis(g, res.runs)["curve"]
    s = summarize(g, res.runs)
    first = "train size" if curve else "overrides"
    t = table(s)
    t[first] = [_label(c, x, w, curve) for c, x, w in zip(s["shown"], s["x"], s["whole"])]
    acc = t.pivot(index=first, columns="setting", values="balanced acc (%)")
    acc = acc.reindex(index=t[first].unique(), columns=t["setting"].unique())
    cost = t.drop_duplicates("setting").set_index("setting")  # a setting's cost is the same in every context
    acc.loc["attn params"], acc.loc["MFLOPs"] = cost["attn params"], cost["MFLOPs"]
    # Measured cost beside the counted ones: training images/s, the median over the setting's runs that were not
    # loaded, else marked with the load it was measured under (lbam.report.load).
    speed = {setting: speed_cell(*speeds(rows, "median")) for setting, rows in g.groupby("setting")}
    acc.loc["train img/s"] = [speed.get(c, DASH) for c in acc.columns]
    if curve and s["x"].nunique() > 1:  # 'over 60 seeds at 25, 25 at 100, 7 at 400 and 4001 training crops'
        per = n_by_size(s.groupby("x", sort=False)["n"].min()).removeprefix("n = ")
        seeds = per.replace(" at ", " seeds at ", 1) + " training crops"
    else:
        seeds = "/".join(map(str, sorted(set(s["n"])))) + " seed(s)"
    text = f"Test balanced accuracy (%), mean ± sample std over {seeds}"
    if curve:
        text += ", by training-set size (the seed draws the subsample and the initialisation; one test split)"
    if s["failed"].sum():
        text += f"; {s['failed'].sum()} failed run(s), listed in the full table"
    jobs = (
        int(g["concurrent_jobs"].max())
        if "concurrent_jobs" in g and g["concurrent_jobs"].notna().any()
        else 1
    )
    text += "; cost: attention parameters, FLOPs of one image, and training images/s (median over runs"
    text += (f", {jobs} runs sharing the machine" if jobs > 1 else "") + f"; {load_summary(g)})"
    head = f"#### {title(g)}" + (" — learning curve" if curve else "")
    out = [head, text + ":", md(acc.reset_index().fillna(DASH))]
    if len(p):
        p[first] = [_label(c, x, w, curve) for c, x, w in zip(p["shown"], p["x"], p["whole"])]
        drop, q = sensitivity(g, res)
        notes = [ceiling_summary(p, first)] + ([sensitivity_line(p, q, len(drop))] if drop else [])
        if p["n"].max() < MIN_SEEDS:  # no test can run: one sentence instead of a table of inconclusives
            few = f"Paired tests need ≥ {MIN_SEEDS} seeds ({p['n'].max()} here): no verdict."
            return [*out, " ".join([few, notes[0]])]  # the ceiling; no verdict, so no sensitivity count
        # In the README the main LBAM setting's family and every module vs none; all families in the full tables.
        shown = p[(p["family"] == VS_NONE) | ~p["setting"].str.contains("(", regex=False)]
        if len(hidden := sorted(set(p["family"]) - set(shown["family"]))):
            notes.append(f"In the full tables also: {'; '.join(hidden)}.")
        out += [tests_caption(p), md(verdict_summary(shown, first))]
        if len(pooled):
            pooled[first] = [
                _label(c, x, w, curve) for c, x, w in zip(pooled["shown"], pooled["x"], pooled["whole"])
            ]
        # The ceiling, the sensitivity, power and direction: one paragraph (the README stays a page long).
        out += [" ".join(filter(None, (*notes, power_line(p, first), direction_line(p, pooled, first))))]
    return out


def smoke_line(g: pd.DataFrame, res: Results) -> str:
    """A group with too few seeds for any test, in one sentence: its balanced accuracy per setting and where from."""
    ok = g[g["status"] == "ok"]
    acc = ok.groupby("setting", sort=False)["test_balanced_acc"].mean()
    rows = [res.runs[i].row for i in g["run"]]
    commits = ", ".join(sorted({commit_label(r.commit) for r in rows}))  # a +dirty tree stays visible
    seeds = ok.groupby("setting")["seed"].nunique().max() if len(ok) else 0
    failed = f"; {int((g['status'] == 'failed').sum())} failed" if (g["status"] == "failed").any() else ""
    note = data_note(rows)  # rows trained with dataset.verify=false on data that is not the pinned one
    return (
        f"**{title(g)}** ({len(rows)} runs, {seeds} seed(s), commit {commits}{failed}): test balanced accuracy "
        + ", ".join(f"{s} {pct(a)}" for s, a in acc.items())
        + f" %; too few seeds for a paired test (≥ {MIN_SEEDS})."
        + (f" **{note}.**" if note else "")
    )


def ran(g: pd.DataFrame, res: Results) -> str:
    """The declared multiruns that made the group's (official) rows, with the values present."""
    sweep = res.sweeps[g["experiment"].iloc[0]]
    return commands(sweep, [(int(c), res.runs[i].row) for c, i in zip(g["cell"], g["run"])])


def provenance(g: pd.DataFrame, res: Results) -> str:
    """Runs, devices, commits, dates, training time, and the declared multiruns that made them."""
    rows = [res.runs[i].row for i in g["run"]]
    dates = sorted(r.created_at[:10] for r in rows if r.created_at) or ["?"]
    commits = sorted({commit_label(r.commit) for r in rows})  # a +dirty tree stays visible (#31)
    hours = sum(r.train_seconds or 0.0 for r in rows) / 3600
    note = data_note(rows)  # rows trained with dataset.verify=false on data that is not the pinned one
    return (
        f"Provenance: runs {len(rows)} · {'; '.join(sorted({str(r.device) for r in rows}))} · commit "
        f"{', '.join(commits)} · {dates[0]} … {dates[-1]} · training {hours:.2f} h summed over runs · "
        f"{ran(g, res)}." + (f" **{note}.**" if note else "")
    )


def render_block(res: Results, link_prefix: str = "results") -> str:
    """The block between the markers; links are ``link_prefix/...``, to figures that exist."""
    parts = [
        "_Generated by `python -m lbam.report --reference` (`make plots REFERENCE=1`) from `results/runs`; do not "
        "edit "
        "(`python -m lbam.report readme --check` fails when this block is stale)._"
    ]
    if res.skipped:
        parts.append(skipped_note(res))
    figures = figure_paths(res)
    steps, shown = bridges(res), set()  # a bridge is one section, its steps side by side, after the curves
    order = sorted(
        groups(res.frame), key=lambda t: (not analysis(t[2], res.runs)["curve"], t[0] not in steps)
    )
    for experiment, slug, g in order:
        if experiment in steps:
            if experiment not in shown:
                shown.add(experiment)
                parts += bridge_parts(res, experiment, link_prefix)
            continue
        links = [f"[full tables]({link_prefix}/tables/{experiment}.md)"]
        for e, sl, _, kind, path in figures:
            if (e, sl) == (experiment, slug) and path.is_file():
                links.append(f"[{kind.replace('_', ' ')}]({link_prefix}/figures/{path.name})")
        maps = res.root / "figures" / f"{experiment}_attention_maps.png"
        if maps.is_file():
            links.append(f"[attention maps]({link_prefix}/figures/{maps.name})")
        if (forest := forest_path(res, experiment, slug)).is_file():
            links.append(f"[forest plot]({link_prefix}/figures/{forest.name})")
        if g.groupby("setting")["seed"].nunique().max() < MIN_SEEDS:  # a smoke test: one line, no table
            parts.append(f"{smoke_line(g, res)} {' · '.join(links)}")
            continue
        parts += [*section(g, res), f"{provenance(g, res)} {' · '.join(links)}"]
    # The verdicts' caption once per distinct α and margin.
    return (
        "\n\n".join(p for i, p in enumerate(parts) if not (p.startswith("LBAM vs") and p in parts[:i])) + "\n"
    )


def bridge_parts(res: Results, experiment: str, link_prefix: str) -> list[str]:
    """A bridge's section (lbam.report.bridge), its provenance over every step, and its links."""
    g = res.frame[res.frame["experiment"] == experiment]
    links = [f"[full tables]({link_prefix}/tables/{experiment}.md)"]
    if (fig := bridge_figure(res, experiment)).is_file():
        links.append(f"[Δ per step]({link_prefix}/figures/{fig.name})")
    *text, power = bridge_section(res, experiment, compact=True)
    return [*text, f"{power} {provenance(g, res)} {' · '.join(links)}"]  # power and provenance: one paragraph


def update_readme(readme: str | Path, res: Results, check: bool = False) -> tuple[bool, str]:
    """Fill the README block from the rows; with ``check`` only compare. Returns (up to date, diff)."""
    readme = Path(readme)
    try:
        old = readme.read_text(encoding="utf-8")
    except OSError as e:
        raise ReportError(f"cannot read {readme} ({e.strerror}); pass --readme PATH") from None
    start, end = old.find(START), old.find(END)
    if start < 0 or end < start:
        raise ReportError(f"{readme} has no '{START}' … '{END}' pair to fill in")
    prefix = Path(os.path.relpath(res.root.resolve(), readme.resolve().parent)).as_posix()
    new = old[: start + len(START)] + "\n" + render_block(res, prefix) + old[end:]
    diff = difflib.unified_diff(
        old.splitlines(True), new.splitlines(True), "README (committed)", "README (from rows)"
    )
    if not check and new != old:
        readme.write_text(new, encoding="utf-8")
    return new == old, "".join(diff)
