"""Comparison tables per experiment: results/tables/<experiment>.{md,csv,tex}."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lbam.report.rows import Group, Setting, groups_by_experiment
from lbam.report.stats import ALPHA, comparisons, mean_std

METRICS = (
    ("test_acc", "test acc (%)"),
    ("test_balanced_acc", "balanced acc (%)"),
    ("test_macro_f1", "macro-F1 (%)"),
)
DASH = "–"


def setting_record(group: Group, setting: Setting) -> dict:
    """Numbers of one table row (nan where not available); std is the sample std (ddof=1)."""
    first = setting.ok[0] if setting.ok else {}
    rec = {
        "setting": setting.label,
        "attention": setting.attention,
        "attention_kwargs": setting.key[1],
        "placement": setting.key[2],
        "other_overrides": " ".join(setting.key[3]),
        "n": len(setting.ok),
        "seeds": " ".join(str(int(r["seed"])) for r in setting.ok),
        "failed": len(setting.failed),
    }
    for key in ("params", "attention_params", "macs", "flops"):
        rec[key] = int(first[key]) if first else None
    for key, _ in METRICS:
        mean, std, _ = mean_std([float(r[key]) for r in setting.ok])
        rec[f"{key}_mean"], rec[f"{key}_std"] = mean, std
    rec["images_per_second"] = mean_std([float(r["images_per_second"]) for r in setting.ok])[0]
    # Paired by seed: the mean over the seeds that both this setting and `none` ran of the accuracy difference.
    none = group.setting("none")
    none_acc = {int(r["seed"]): float(r["test_acc"]) for r in none.ok} if none else {}
    diffs = [
        float(r["test_acc"]) - none_acc[int(r["seed"])] for r in setting.ok if int(r["seed"]) in none_acc
    ]
    rec["delta_acc_vs_none"] = sum(diffs) / len(diffs) if diffs else math.nan
    return rec


def group_frame(group: Group) -> pd.DataFrame:
    """One row per setting, with the group's identity columns; the numbers behind the .csv."""
    ident = {
        "experiment": group.experiment,
        "dataset": group.dataset,
        "synthetic": group.synthetic,
        "profile": group.profile,
        "device_kind": group.device_kind,
        "device": "; ".join(group.devices),
        "backbone": group.backbone,
        "image_size": group.image_size,
        "width_mult": group.width_mult,
    }
    return pd.DataFrame([{**ident, **setting_record(group, s)} for s in group.settings])


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return DASH
    return f"{100 * mean:.2f} ± {DASH if math.isnan(std) else f'{100 * std:.2f}'}"


def _count(x, scale: float = 1.0, unit: str = "") -> str:
    if x is None:
        return DASH
    return f"{x / scale:,.2f}{unit}" if scale != 1.0 else f"{int(x):,}"


def caption(group: Group) -> str:
    return (
        f"Experiment **{group.experiment}** · dataset **{group.dataset_label}** · profile **{group.profile}** · "
        f"device {'; '.join(group.devices)} · backbone {group.backbone} · image {group.image_size} px · "
        f"width ×{group.width_mult:g} · seeds {', '.join(map(str, group.seeds)) or 'none'}. "
        "Accuracies in %, mean ± sample std (ddof=1) over the n seeds; Δ acc vs `none` in percentage points, "
        "paired over the seeds both ran; "
        "images/s = training throughput."
    )


HEADERS = (
    "attention",
    "n",
    "params",
    "attn params",
    "MACs",
    "FLOPs",
    "test acc (%)",
    "balanced acc (%)",
    "macro-F1 (%)",
    "Δ acc vs none (pp)",
    "images/s",
    "failed",
)


def display_rows(group: Group) -> list[list[str]]:
    """Formatted cells of the main table (HEADERS order); settings with no ok run read 'failed'."""
    out = []
    for s in group.settings:
        r = setting_record(group, s)
        if r["n"] == 0:
            out.append([r["setting"], "0", *["failed"] * 9, str(r["failed"])])
            continue
        delta = r["delta_acc_vs_none"]
        out.append(
            [
                r["setting"],
                str(r["n"]),
                _count(r["params"]),
                _count(r["attention_params"]),
                _count(r["macs"], 1e6, " M"),
                _count(r["flops"], 1e6, " M"),
                *(_pct(r[f"{k}_mean"], r[f"{k}_std"]) for k, _ in METRICS),
                DASH if math.isnan(delta) else f"{100 * delta:+.2f}",
                f"{r['images_per_second']:,.1f}",
                str(r["failed"]),
            ]
        )
    return out


def md_table(headers, rows) -> str:
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def failed_rows(group: Group) -> list[list[str]]:
    rows = []
    for s in group.settings:
        for r in s.failed:
            error = (str(r.get("error") or "no error message").strip().splitlines() or [""])[-1][:160]
            rows.append([s.label, str(int(r["seed"])), str(r["run_name"]), error])
    return rows


def comparison_rows(group: Group) -> list[list[str]]:
    rows = []
    for comp in comparisons(group):
        per_seed = "; ".join(f"s{t.seed}: b={t.b} c={t.c} p={t.p:.4g}" for t in comp.tests) or DASH
        mean, std, n = mean_std(comp.acc_diffs)
        diff = DASH if n == 0 else f"{100 * mean:+.2f} ± {DASH if math.isnan(std) else f'{100 * std:.2f}'}"
        rows.append([comp.lbam.label, comp.baseline.label, str(n), diff, per_seed, comp.verdict()])
    return rows


def group_markdown(group: Group, level: int = 2) -> str:
    """Caption, main table, failed runs and the paired LBAM comparison of one group."""
    h = "#" * level
    parts = [f"{h} {group.title()}", caption(group), md_table(HEADERS, display_rows(group))]
    failed = failed_rows(group)
    if failed:
        parts.append(f"**Failed runs: {len(failed)}** (not included in any mean)")
        parts.append(md_table(("attention", "seed", "run", "error"), failed))
    parts.append(f"{h}# Paired comparison: LBAM vs each baseline")
    comps = comparison_rows(group)
    if comps:
        parts.append(
            "McNemar's exact test per seed on the per-sample test predictions joined by sample id "
            "(b = LBAM right and baseline wrong, c = the reverse; two-sided binomial on b + c, "
            f"α = {ALPHA}); Δ acc = LBAM − baseline test accuracy in pp, mean ± sample std over the n shared seeds."
        )
        parts.append(md_table(("LBAM", "baseline", "n", "Δ acc (pp)", "per seed", "verdict"), comps))
    else:
        parts.append("No comparison: this group lacks an LBAM run or a baseline run that finished.")
    return "\n\n".join(parts)


def _tex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
    repl |= {"{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    repl |= {"±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "·": r"\textperiodcentered{}", "–": "--"}
    return "".join(repl.get(ch, ch) for ch in text)


def group_tex(group: Group) -> str:
    headers, rows = HEADERS, display_rows(group)
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        r"\caption{" + _tex_escape(caption(group).replace("**", "").replace("`", "")) + "}",
        r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}",
        r"\hline",
        " & ".join(map(_tex_escape, headers)) + r" \\",
        r"\hline",
        *(" & ".join(map(_tex_escape, r)) + r" \\" for r in rows),
        r"\hline",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines)


def write_tables(groups: list[Group], results_dir: str | Path) -> list[Path]:
    """Write results/tables/<experiment>.{md,csv,tex}; returns the written paths."""
    out_dir = Path(results_dir) / "tables"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for experiment, exp_groups in groups_by_experiment(groups).items():
        md = f"# Results: {experiment}\n\n" + "\n\n".join(group_markdown(g) for g in exp_groups) + "\n"
        frame = pd.concat([group_frame(g) for g in exp_groups], ignore_index=True)
        tex = "\n\n".join(group_tex(g) for g in exp_groups) + "\n"
        paths = [out_dir / f"{experiment}.{ext}" for ext in ("md", "csv", "tex")]
        paths[0].write_text(md)
        frame.to_csv(paths[1], index=False, float_format="%.6g")
        paths[2].write_text(tex)
        written += paths
    return written
