"""When a speed means what it says: the machine's load during a run (row fields ``load_average``, the mean 1-min
load average over the epoch ends, and ``cpu_count``).

The rule: a run is **loaded** when its load average exceeds both what the run's own work explains by more than
one runnable task (its busy threads: the threads of its device string times the runs sharing the machine,
``concurrent_jobs``, times its processes, ``world_size``) and the machine's CPU count: then other work competed
for the cores and its images/s reads low. Rows without ``load_average`` (before 2026-12-07) are *load not
recorded*. Tables, the README block and the cost figure leave the speeds of loaded runs out where a setting has
runs that were not loaded, and otherwise show them marked "measured under load X"."""

from __future__ import annotations

import math
import re

import pandas as pd

SLACK = 1.0  # runnable tasks beyond the run's own before it counts as loaded
RULE = (
    "loaded: mean 1-min load above the run's own busy threads + 1 and above the CPU count; "
    "their speeds are left out where a setting has other runs"
)


def own_threads(device: str, jobs: float, world: float) -> float:
    """Busy threads the run itself (with the runs it shared the machine with) puts on the CPUs: threads per
    process from the device string ('cpu (2 threads, …)'; 1 for a GPU run's feeding process), times processes."""
    found = re.search(r"\((\d+) threads", str(device))
    threads = int(found.group(1)) if found else 1
    jobs = 1 if jobs is None or math.isnan(jobs) else jobs
    world = 1 if world is None or math.isnan(world) else world
    return threads * jobs * world


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(math.nan, index=df.index)


def load_state(df: pd.DataFrame) -> pd.Series:
    """Per row: "loaded", "quiet" or "not recorded" (the rule of the module docstring)."""
    load, cpus = _num(df, "load_average"), _num(df, "cpu_count")
    jobs, world = _num(df, "concurrent_jobs"), _num(df, "world_size")
    own = pd.Series([own_threads(d, j, w) for d, j, w in zip(df["device"], jobs, world)], index=df.index)
    loaded = (load > own + SLACK) & ~(load <= cpus)  # an unknown CPU count does not clear a run
    return pd.Series(["not recorded" if math.isnan(x) else "quiet" for x in load], index=df.index).where(
        ~loaded, "loaded"
    )


def speeds(rows: pd.DataFrame, how: str = "mean") -> tuple[float, float]:
    """(images/s of the ok rows that were not loaded, mean load of the loaded ones): (nan, nan) without a speed;
    (speed, load) when every measured run was loaded, i.e. a speed to show as "measured under load X"."""
    ok = rows[rows["status"] == "ok"]
    ips, state = _num(ok, "images_per_second"), load_state(ok)
    measured = ips.notna()
    clean = ips[measured & (state != "loaded")]
    if len(clean):
        return float(getattr(clean, how)()), math.nan
    if not measured.any():
        return math.nan, math.nan
    return float(getattr(ips[measured], how)()), float(_num(ok, "load_average")[measured].mean())


def speed_cell(ips: float, load: float, fmt=lambda v: f"{v:,.0f}") -> str:
    """'284', or '80 (load 3.9)' for a speed measured under load, or '–'."""
    if math.isnan(ips):
        return "–"
    return fmt(ips) + ("" if math.isnan(load) else f" (load {load:.1f})")


def load_summary(rows: pd.DataFrame) -> str:
    """One phrase on the load of a group's ok runs: 'load not recorded', 'mean 1-min load 1.7 on 2 CPUs', or with
    the loaded runs counted."""
    ok = rows[rows["status"] == "ok"]
    state, load, cpus = load_state(ok), _num(ok, "load_average"), _num(ok, "cpu_count")
    if not len(ok) or load.isna().all():
        return "load not recorded"
    on = f" on {cpus.max():g} CPUs" if cpus.notna().any() else ""
    text = f"mean 1-min load {load.mean():.1f}{on}"
    if (state == "not recorded").any():
        text += f" ({int((state == 'not recorded').sum())} of {len(ok)} runs: not recorded)"
    if n := int((state == "loaded").sum()):
        text += f"; {n} of {len(ok)} runs loaded ({RULE})"
    return text
