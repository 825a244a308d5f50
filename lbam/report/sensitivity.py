"""The label-audit sensitivity analysis: every comparison again with the audited crops of
results/label_audit/labels.csv removed from the test set, beside the primary analysis (which keeps every crop),
and the ceiling without them; in the tables file and `<experiment>_sensitivity.csv`."""

from __future__ import annotations

import pandas as pd

from lbam.report.audit import audited_ids
from lbam.report.rows import Results, title
from lbam.report.stats import compare
from lbam.report.tables import ceiling_line, interval, md, pct, short_label
from lbam.report.verdicts import changed_count


def sensitivity_table(p: pd.DataFrame, q: pd.DataFrame) -> pd.DataFrame:
    """Primary (p) and label-audit (q: audited crops removed) analyses side by side, one comparison a line."""
    keys = ["context", "family", "setting", "baseline"]
    both = p.merge(q, on=keys, suffixes=("", "_q"))
    label = [short_label(sh, x, w) for sh, x, w in zip(both["shown"], both["x"], both["whole"])]
    cells = {"context": label, "family": both["family"]}
    cells |= {"comparison": [f"{a} − {b}" for a, b in zip(both["setting"], both["baseline"])]}
    cells |= {"Δ all crops (pp)": [pct(m, signed=True) for m in both["mean"]]}
    cells |= {"Δ audited removed (pp)": [pct(m, signed=True) for m in both["mean_q"]]}
    cells |= {
        "(b) CI, removed": [interval(lo, hi) for lo, hi in zip(both["boot_low_q"], both["boot_high_q"])]
    }
    cells |= {"(a), removed": both["finding_t_q"], "(b), removed": both["finding_boot_q"]}
    cells |= {"verdict, all crops": both["finding"], "verdict, removed": both["finding_q"]}
    return pd.DataFrame(
        cells | {"changed": ["yes" if a != b else "" for a, b in zip(both["finding"], both["finding_q"])]}
    )


def sensitivity_markdown(ids: list[str], done: list[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]) -> str:
    """The label-audit sensitivity section: per group (g, p, q) the comparisons with and without the audited
    crops, and the ceiling without them."""
    parts = [
        "## Label-audit sensitivity",
        f"The same analysis with the {len(ids)} audited crops of `results/label_audit/labels.csv` removed from the "
        f"test set ({', '.join(ids)}); the primary analysis above keeps every crop.",
    ]
    for g, p, q in done:
        changed, stated = changed_count(p, q)
        parts += [
            f"### {title(g)}",
            f"{changed} of the {stated} stated verdicts change.",
            md(sensitivity_table(p, q)),
        ]
        for _, r in q.drop_duplicates("context").iterrows():
            parts.append(
                ceiling_line(r, f" at {short_label(r['shown'], r['x'], r['whole'])}, audited crops removed")
            )
    return "\n\n".join(parts)


def sensitivity(g: pd.DataFrame, res: Results) -> tuple[set[str], pd.DataFrame]:
    """(the audited crops in group g's test set, its comparisons without them); (set(), empty) when none is."""
    drop = audited_ids(res, g)
    return drop, compare(g, res.runs, drop) if drop else pd.DataFrame()


def sensitivity_files(res: Results, done: list[tuple[pd.DataFrame, pd.DataFrame]]) -> dict[str, str]:
    """The label-audit sensitivity analysis of the groups whose test set holds audited crops: a section for
    the .md and <experiment>_sensitivity.csv (the pairs without those crops); {} when none does."""
    found, ids = [], set()
    for g, p in done:
        drop, q = sensitivity(g, res) if len(p) else (set(), None)
        if drop:
            found.append((g, p, q))
            ids |= drop
    if not found:
        return {}
    csv = pd.concat(q for *_, q in found).to_csv(index=False, float_format="%.6g")
    return {".md": "\n" + sensitivity_markdown(sorted(ids), found) + "\n", "_sensitivity.csv": csv}
