"""Result rows as pandas frames. Every row under results/runs is validated (``lbam.results.load_row``, then
``lbam.report.validate``: its place, identity, fields and analysis settings, and its metrics recomputed from its
predictions, which replace the stored ones); two rows of one run are refused; each row gets its group, context
and setting, and is *official* (a point of its experiment's declared sweep, ``lbam.report.declared``) or an
*other run*.

- group: rows that may share a table (same experiment, dataset, synthetic flag, profile, device kind,
  backbone, image size and width);
- context: the row's overrides other than ``attention.*`` (e.g. ``dataset.train_subset=25``); runs are paired
  only within one context, so only runs that differ in the attention alone are compared; ``shown`` is the
  context less the overrides shared by the whole group (an other run shows its whole context);
- setting: the attention and its own overrides, e.g. ``lbam (residual=false)``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lbam.report.declared import Sweep, SweepError, declared_sweep
from lbam.report.validate import check_fields, check_identity, check_place, data_note, recompute
from lbam.results import METRICS, Row, RowError, load_row

ORDER = ("none", "se", "cbam", "bam", "eca", "lbam")
GROUP = "experiment dataset synthetic profile device_kind backbone image_size width_mult".split()
DEFAULT_ANALYSIS = {
    "alpha": 0.05,
    "noninferiority_margin": 0.01,
    "curve": None,
    "primary": None,
    "bridge": None,
}
# What a failed run carries is never averaged: these are cleared in its row (and NaN in the frame).
OUTCOME = (*METRICS, "per_class_acc", "confusion_matrix", "val_acc", "images_per_second")


class ReportError(Exception):
    """A problem the user must fix; printed as one line."""


@dataclass
class Run:
    row: Row  # ok rows: metrics recomputed from the predictions; failed rows: no metrics
    path: Path
    preds: dict[str, tuple[int, int]] | None  # sample id -> (target, pred); ok rows only


@dataclass
class Results:
    # Official runs, one row per run, sorted; "run" indexes `runs`, "cell" the declared multirun that ran it.
    frame: pd.DataFrame
    runs: list[Run]
    skipped: list[str]  # one line per invalid row file left out with --skip-invalid
    root: Path  # the results folder
    other: pd.DataFrame = field(default_factory=pd.DataFrame)  # runs outside the declared sweeps, as `frame`
    sweeps: dict[str, Sweep | None] = field(default_factory=dict)  # experiment -> its declared sweep


def _load(path: Path) -> tuple[Run, dict]:
    """A valid row with its predictions, and its record in the frame: the row's scalars, its device kind,
    context, setting and place on a learning curve."""
    row, preds = load_row(path), None
    check_place(row, path)
    check_fields(row, path)
    check_identity(row, path)
    if row.status == "ok":
        preds, metrics = recompute(row, path)
        row = dataclasses.replace(row, **metrics)
    else:
        row = dataclasses.replace(row, **dict.fromkeys(OUTCOME))
    rec = {k: v for k, v in vars(row).items() if not isinstance(v, (list, dict))}
    rec |= {k: float("nan") for k in OUTCOME if k in rec and rec[k] is None}
    kind = row.device.split(":")[0].split("(")[0].split()  # 'cuda: …', 'cpu (2 threads)'
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


def _duplicates(loaded: list[tuple[Run, dict]]) -> list[tuple[int, int, str]]:
    """(first, second, what) for each pair of rows that claim to be one run."""
    seen: dict[tuple, int] = {}
    out = []
    for i, (_, rec) in enumerate(loaded):
        e = rec["experiment"]
        keys = {
            "experiment and run_name": (e, rec["run_name"]),
            "experiment, setting, context and seed": (e, rec["setting"], rec["context"], rec["seed"]),
        }
        for what, key in keys.items():
            if key in seen:
                out.append((seen[key], i, what))
                break
            seen[key] = i
    return out


def _agree(df: pd.DataFrame, runs: list[Run], keys: list[str], value, what: str) -> None:
    """ReportError naming two files when the rows of one ``keys`` group have different ``value(run)``."""
    for _, g in df.groupby(keys, dropna=False):
        first = runs[int(g["run"].iloc[0])]
        for i in g["run"]:
            if value(runs[i]) != value(first):
                raise ReportError(
                    f"{first.path} and {runs[i].path}: {what} ({value(first)} vs {value(runs[i])}); rerun one"
                )


def _sweep(experiment: str) -> Sweep | None:
    try:
        return declared_sweep(experiment)
    except SweepError as e:
        raise ReportError(str(e)) from None


def load_results(results_dir: str | Path, skip_invalid: bool = False) -> Results:
    """Every row of ``results_dir/runs/*/*.json``. An invalid row (or two rows of one run) is a ReportError
    naming the file(s) or, with ``skip_invalid``, a warning on stderr, counted in ``skipped``."""
    runs_dir = Path(results_dir) / "runs"
    loaded, skipped = [], []
    from lbam.report.declared import planned_analysis

    planned_analysis.cache_clear()  # the experiment files as they are now

    def invalid(message: str) -> None:
        if not skip_invalid:
            raise ReportError(f"{message} (fix or remove the file, or pass --skip-invalid)")
        print(f"lbam.report: warning: skipping {message}", file=sys.stderr)
        skipped.append(message)

    for path in sorted(runs_dir.glob("*/*.json")):
        try:
            loaded.append(_load(path))
        except RowError as e:
            invalid(str(e))
    # No "keep the newest": two files of one run leave both out (or stop the report).
    dropped = set()
    for a, b, what in _duplicates(loaded):
        pa, pb = loaded[a][0].path, loaded[b][0].path
        for i, p, q in ((a, pa, pb), (b, pb, pa)):
            if i not in dropped:
                dropped.add(i)
                invalid(f"{p}: the same run as {q} (same {what}); keep one of them")
    loaded = [x for i, x in enumerate(loaded) if i not in dropped]
    if not loaded:
        raise ReportError(f"no valid result rows under {runs_dir} (make some with `make quick`)")
    runs = [run for run, _ in loaded]
    if note := data_note([run.row for run in runs]):  # also in the README block's provenance line
        print(f"lbam.report: warning: {note}", file=sys.stderr)
    sweeps = {e: _sweep(e) for e in sorted({run.row.experiment for run in runs})}
    cells = [s.cell_of(run.row) if (s := sweeps[run.row.experiment]) else None for run in runs]
    df = pd.DataFrame([rec | {"run": i, "cell": c} for i, ((_, rec), c) in enumerate(zip(loaded, cells))])
    df["official"] = df["cell"].notna()
    ok = df[(df["status"] == "ok") & df["split_hash"].notna()]
    split, stated = (lambda r: r.row.split_hash), (lambda r: {**DEFAULT_ANALYSIS, **r.row.analysis})
    _agree(ok, runs, [*GROUP, "context", "seed"], split, "one context and seed, two splits")
    _agree(df, runs, ["official", *GROUP], stated, "one table, two analyses")
    df["rank"] = [ORDER.index(a) if a in ORDER else len(ORDER) for a in df["attention"]]
    df = df.sort_values([*GROUP, "x", "context", "rank", "setting", "seed"], na_position="first")
    # For display, what tells the contexts of a table apart: the context less the overrides all its runs share
    # (other runs show all theirs: they are what sets them apart from the official ones).
    df["shown"] = df["context"]
    for _, g in df[df["official"]].groupby(GROUP):
        common = set.intersection(*(set(c.split()) for c in g["context"]))
        df.loc[g.index, "shown"] = [" ".join(o for o in c.split() if o not in common) for c in g["context"]]
    df = df.drop(columns="rank").reset_index(drop=True)
    frame, other = df[df["official"]].reset_index(drop=True), df[~df["official"]].reset_index(drop=True)
    frame["cell"] = frame["cell"].astype(int)
    return Results(frame, runs, skipped, Path(results_dir), other, sweeps)


def analysis(g: pd.DataFrame, runs: list[Run]) -> dict:
    """The experiment's analysis settings stated in advance (alpha, margin, curve, …): the rows' own, then keys
    that only the experiment file has (added by a dated plan amendment), then the defaults."""
    from lbam.report.declared import planned_analysis

    row = runs[int(g["run"].iloc[0])].row
    return {**DEFAULT_ANALYSIS, **planned_analysis(row.experiment), **row.analysis}


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
