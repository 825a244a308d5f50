"""Your runs beside the reference. The committed rows (results/runs) are the reference; your runs write to
results/local (``paths.results_dir``). Per setting (experiment, context, setting) that you ran: the reference's
test balanced accuracy (mean ± sample std, its seeds' range, n), yours (mean, n), the difference, whether yours
lies within the reference's seed range (with one reference seed: whether it is the same), whether the configs
agree (the seed aside), and for both the device and threads, the load (``lbam.report.load``) and images/s.
``make plots`` prints it and writes results/local/tables/vs_reference.{md,csv}; it never touches the reference."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lbam.io import atomic_write
from lbam.report.load import load_summary, speed_cell, speeds
from lbam.report.rows import Results
from lbam.report.tables import md

KEY = ["experiment", "context", "setting"]
SEEDED = {"seed", "dataset.subset_seed"}  # config keys that follow the seed: not a difference of setting


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _config(res: Results, rows: pd.DataFrame) -> dict:
    """The flattened config of the rows' first run, less the keys that follow the seed."""
    conf = _flat(res.runs[int(rows["run"].iloc[0])].row.config)
    return {k: v for k, v in conf.items() if k not in SEEDED}


def _config_note(mine: dict, ref: dict) -> str:
    keys = sorted(k for k in mine.keys() | ref.keys() if mine.get(k) != ref.get(k))
    if not keys:
        return "same"
    shown = [f"{k} {mine.get(k)} vs {ref.get(k)}" for k in keys[:2]]
    return "differs: " + ", ".join(shown) + (f" (+{len(keys) - 2})" if len(keys) > 2 else "")


def _all(res: Results) -> pd.DataFrame:
    """Official and other runs together: a setting is matched by what it is, not by whether it was declared."""
    return pd.concat([res.frame, res.other], ignore_index=True) if len(res.other) else res.frame


def _acc(rows: pd.DataFrame) -> pd.Series:
    return 100 * rows.loc[rows["status"] == "ok", "test_balanced_acc"].astype(float)


def compare_with_reference(mine: Results, ref: Results) -> pd.DataFrame:
    """One line per setting of yours: the reference's numbers beside yours (NaN where the reference has none)."""
    theirs = _all(ref)
    lines = []
    for key, rows in _all(mine).groupby(KEY, sort=False):
        r = theirs[(theirs[KEY] == pd.Series(key, index=KEY)).all(axis=1)] if len(theirs) else theirs
        a, b = _acc(rows), _acc(r)
        line = dict(zip(KEY, key)) | {"n": len(a), "mean": a.mean(), "ref_n": len(b), "ref_mean": b.mean()}
        line |= {"ref_std": b.std(), "ref_min": b.min(), "ref_max": b.max(), "delta": a.mean() - b.mean()}
        if len(b) >= 2:
            line["within"] = "yes" if b.min() <= a.mean() <= b.max() else "no"
            if len(a) >= 2:
                line["within"] += f" ({int(a.between(b.min(), b.max()).sum())} of {len(a)} runs)"
        elif len(b) == 1 and len(a):
            line["within"] = "same" if abs(line["delta"]) < 5e-3 else "1 reference seed: differs"
        else:
            line["within"] = "no reference run" if not len(r) else "–"
        line["config"] = _config_note(_config(mine, rows), _config(ref, r)) if len(r) else "–"
        for side, rr in (("", rows), ("ref_", r)):
            ips, load = speeds(rr, "median") if len(rr) else (math.nan, math.nan)
            line[f"{side}ips"], line[f"{side}ips_load"] = ips, load
        lines.append(line)
    return pd.DataFrame(lines)


def _side(res: Results, rows: pd.DataFrame) -> str:
    """'7 runs · cpu (2 threads, AMD EPYC) · load not recorded · commit efc4c1efb388'."""
    commits = sorted({(res.runs[int(i)].row.commit or "unknown")[:12] for i in rows["run"]})
    devices = "; ".join(sorted(set(rows["device"].astype(str))))
    return f"{len(rows)} runs · {devices} · {load_summary(rows)} · commit {', '.join(commits)}"


def markdown(table: pd.DataFrame, mine: Results, ref: Results) -> str:
    parts = [
        "# Your runs beside the reference",
        f"Yours: `{mine.root}`; the reference: `{ref.root}`. Balanced accuracy in %: the reference "
        "as mean ± sample std over its seeds [lowest, highest] (n), yours as the mean over your seeds (n); Δ = "
        "yours − the reference's mean (pp); *in the reference's range*: whether your mean lies within the "
        "reference seeds' range (with one reference seed: whether it is the same). Images/s: median over the "
        "runs that were not loaded, else marked with the load it was measured under.",
    ]
    theirs, own = _all(ref), _all(mine)
    for experiment, t in table.groupby("experiment", sort=False):
        ref_rows = theirs[theirs["experiment"] == experiment] if len(theirs) else theirs
        parts += [f"## {experiment}", f"Yours: {_side(mine, own[own['experiment'] == experiment])}."]
        parts.append(f"Reference: {_side(ref, ref_rows)}." if len(ref_rows) else "Reference: no runs.")
        cells = {"context": [c or "default" for c in t["context"]], "setting": t["setting"]}
        cells["reference (n)"] = [
            "–" if not n else f"{m:.2f} ± {s:.2f} [{lo:.2f}, {hi:.2f}] ({n})" if n >= 2 else f"{m:.2f} (1)"
            for m, s, lo, hi, n in zip(t["ref_mean"], t["ref_std"], t["ref_min"], t["ref_max"], t["ref_n"])
        ]
        cells["yours (n)"] = ["–" if not n else f"{m:.2f} ({n})" for m, n in zip(t["mean"], t["n"])]
        cells["Δ (pp)"] = ["–" if math.isnan(d) else f"{d:+.2f}" for d in t["delta"]]
        cells["in the reference's range"], cells["config (yours vs reference)"] = t["within"], t["config"]
        cells["images/s: reference"] = [speed_cell(v, ld) for v, ld in zip(t["ref_ips"], t["ref_ips_load"])]
        cells["images/s: yours"] = [speed_cell(v, ld) for v, ld in zip(t["ips"], t["ips_load"])]
        parts.append(md(pd.DataFrame(cells)))
    return "\n\n".join(parts) + "\n"


def write_comparison(mine: Results, ref: Results) -> tuple[list[Path], str]:
    """(files written under your results folder's tables/, the markdown to print)."""
    table = compare_with_reference(mine, ref)
    text = markdown(table, mine, ref)
    out = mine.root / "tables"
    csv = table.to_csv(index=False, float_format="%.6g")
    return [atomic_write(out / "vs_reference.md", text), atomic_write(out / "vs_reference.csv", csv)], text
