"""Result rows as one pandas frame: every row under results/runs is validated (``lbam.results``) with its
predictions, a rerun of a seed keeps the newest row, and each row gets its group, context and setting.

- group: rows that may share a table (same experiment, dataset, synthetic flag, profile, device kind,
  backbone, image size and width);
- context: the row's overrides other than ``attention.*`` (e.g. ``dataset.train_subset=25``); runs are paired
  only within one context, so only runs that differ in the attention alone are compared; ``shown`` is the
  context less the overrides shared by the whole group;
- setting: the attention and its own overrides, e.g. ``lbam (residual=false)``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lbam.results import Row, RowError, load_row, read_predictions

ORDER = ("none", "se", "cbam", "bam", "eca", "lbam")
GROUP = "experiment dataset synthetic profile device_kind backbone image_size width_mult".split()
DEFAULT_ANALYSIS = {"alpha": 0.05, "noninferiority_margin": 0.01, "curve": None}


class ReportError(Exception):
    """A problem the user must fix; printed as one line."""


@dataclass
class Run:
    row: Row
    path: Path
    preds: dict[str, tuple[int, int]] | None  # sample id -> (target, pred); ok rows only


@dataclass
class Results:
    frame: pd.DataFrame  # one row per kept run, sorted; column "run" indexes `runs`
    runs: list[Run]
    skipped: list[str]  # one line per invalid row file left out with --skip-invalid
    root: Path  # the results folder


def _load(path: Path) -> tuple[Run, dict]:
    """A valid row with its predictions, and its record in the frame: the row's scalars, its device kind,
    context, setting and place on a learning curve."""
    row, preds = load_row(path), None
    if row.status == "ok":
        preds = {i: (t, p) for i, t, p in read_predictions(row, path)}
        acc = sum(t == p for t, p in preds.values()) / len(preds)
        if abs(acc - row.test_acc) > 1e-4:
            raise RowError(f"{path}: test_acc={row.test_acc:.6f} but its predictions give {acc:.6f}")
    rec = {k: v for k, v in vars(row).items() if not isinstance(v, (list, dict))}
    kind = str(row.device or "unknown").split(":")[0].split("(")[0].split()  # 'cuda: …', 'cpu (2 threads)'
    rec["device_kind"] = (kind or ["unknown"])[0].lower()
    rec["context"] = " ".join(o for o in row.overrides if not o.startswith("attention."))
    own = [o.split(".", 1)[1] for o in row.overrides if o.startswith("attention.")]
    rec["setting"] = f"{row.attention} ({', '.join(own)})" if own else row.attention
    rec["x"], rec["whole"] = curve_x(row, path)
    return Run(row, path, preds), rec


def curve_x(row: Row, path: Path) -> tuple[float, bool]:
    """(training-set size, whole split?) of a learning-curve row: the value of the override named by
    ``analysis.curve``, else (no such override, or null) ``n_train``, the whole training split; nan and False
    when the experiment has no curve."""
    key = row.analysis.get("curve")
    for o in row.overrides if key else ():
        name, _, value = o.partition("=")
        if name.lstrip("+~") == key and value.lower() not in ("null", "none"):
            try:
                return float(value), False
            except ValueError:
                raise RowError(f"{path}: {key} in {o!r} is not a number") from None
    if not key:
        return float("nan"), False
    return float("nan") if row.n_train is None else float(row.n_train), True


def load_results(results_dir: str | Path, skip_invalid: bool = False) -> Results:
    """Every row of ``results_dir/runs/*/*.json``. An invalid row is a ReportError naming its file or, with
    ``skip_invalid``, a warning on stderr, counted in ``skipped``."""
    runs_dir = Path(results_dir) / "runs"
    loaded, skipped = [], []
    for path in sorted(runs_dir.glob("*/*.json")):
        try:
            loaded.append(_load(path))
        except RowError as e:
            if not skip_invalid:
                raise ReportError(f"{e} (fix or remove the file, or pass --skip-invalid)") from None
            print(f"lbam.report: warning: skipping {e}", file=sys.stderr)
            skipped.append(str(e))
    if not loaded:
        raise ReportError(f"no valid result rows under {runs_dir} (make some with `make quick`)")
    df = pd.DataFrame([rec | {"run": i} for i, (_, rec) in enumerate(loaded)])
    df["created_at"] = df["created_at"].fillna("")
    # A rerun of a seed under another run name replaces the older row: it is not an extra seed.
    df = df.sort_values(["created_at", "run_name"])
    df = df.drop_duplicates([*GROUP, "context", "setting", "seed"], keep="last")
    df["rank"] = [ORDER.index(a) if a in ORDER else len(ORDER) for a in df["attention"]]
    df = df.sort_values([*GROUP, "x", "context", "rank", "setting", "seed"], na_position="first")
    # For display, what tells the contexts of a group apart: the context less the overrides all runs share.
    for _, g in df.groupby(GROUP):
        common = set.intersection(*(set(c.split()) for c in g["context"]))
        df.loc[g.index, "shown"] = [" ".join(o for o in c.split() if o not in common) for c in g["context"]]
    runs = [run for run, _ in loaded]
    return Results(df.drop(columns="rank").reset_index(drop=True), runs, skipped, Path(results_dir))


def analysis(g: pd.DataFrame, runs: list[Run]) -> dict:
    """The experiment's analysis settings stated in advance (alpha, margin, curve), defaults where absent."""
    return {**DEFAULT_ANALYSIS, **runs[int(g["run"].iloc[0])].row.analysis}


def groups(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(experiment, slug, group frame) in order; the slug tells a group from the others of its experiment."""
    out = []
    for experiment, exp in df.groupby("experiment", sort=True):
        varying = [k for k in GROUP[1:] if exp[k].nunique() > 1]
        for _, g in exp.groupby(GROUP, sort=True):
            r = g.iloc[0]
            names = {"synthetic": "synthetic" if r.synthetic else "real", "image_size": f"{r.image_size}px"}
            names["width_mult"] = f"w{r.width_mult:g}"
            out.append((experiment, "_".join(names.get(k, str(r[k])) for k in varying), g))
    return out


def title(g: pd.DataFrame) -> str:
    r = g.iloc[0]
    data = f"{r.dataset} (SYNTHETIC)" if r.synthetic else r.dataset
    model = f"{r.backbone} {r.image_size}px ×{r.width_mult:g}"
    return f"{r.experiment}: {data} · profile {r.profile} · {r.device_kind} · {model}"


def without(context: str, key: str | None) -> str:
    """``context`` less the override of ``key`` (e.g. the learning curve's ``dataset.train_subset``)."""
    return " ".join(o for o in context.split() if o.partition("=")[0].lstrip("+~") != key)
