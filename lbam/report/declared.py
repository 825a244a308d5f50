"""An experiment's declared sweep and the runs that are its points.

The experiment file declares its sweep: ``hydra.sweeper.params`` (e.g. ``attention: none,se``, ``seed:
range(0,7)``), ``sweeps.grids`` (override strings on top of those params, ``""`` = the params alone) and
``sweeps.settings`` (each grid again with each of these on top). Every multirun (a *cell*: one grid, with or
without one setting) is expanded as Hydra's basic sweeper expands a command line: parsed by Hydra's own
override parser, a later value of a key replacing an earlier one, then the product of the values. A row is
**official** when its attention, seed and relevant overrides (``lbam.config.relevant_overrides``) are a point of
that union; an experiment without a file declares nothing and all its rows are *other runs*.
"""

from __future__ import annotations

import functools
import itertools
import math
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from lbam.config import compose, relevant_overrides
from lbam.paths import CONFIG_DIR
from lbam.results import Row

Point = tuple[str, int, tuple[str, ...]]  # attention, seed, relevant overrides (sorted, canonical)
MAX_RUNS = 100_000  # per multirun: the curve declares 693 in all; a typo such as range(0,10**9) is refused


class SweepError(ValueError):
    """An experiment file whose sweep cannot be read; the message is one line naming the file."""


@dataclass(frozen=True)
class Cell:
    """One multirun: a grid, alone or with one setting, and each key's values in Hydra's order."""

    grid: str
    setting: str | None
    values: dict[str, list[str]]


@dataclass
class Sweep:
    experiment: str
    cells: list[Cell]
    points: dict[Point, int] = field(default_factory=dict)  # point -> index of the first cell that runs it

    def cell_of(self, row: Row) -> int | None:
        """The cell that runs ``row`` (official), or None (another run)."""
        return self.points.get((row.attention, row.seed, tuple(relevant_overrides(row.overrides))))


def sweep_config(experiment: str) -> dict | None:
    """params, grids, settings and the default attention and seed from ``configs/experiment/<experiment>.yaml``,
    or None when there is no such file (or it writes rows under another experiment name)."""
    path = CONFIG_DIR / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        return None
    try:
        cfg = compose([f"experiment={experiment}"], with_hydra=True)
    except Exception as e:  # Hydra's many error types: a broken file is one line here
        raise SweepError(f"{path}: cannot compose it ({' '.join(str(e).split())[:200]})") from None
    if cfg.get("experiment_name") != experiment:
        return None
    sweeps = OmegaConf.to_container(cfg.get("sweeps") or OmegaConf.create({}), resolve=True)
    conf = {"grids": sweeps.get("grids", [""]), "settings": sweeps.get("settings") or []}
    for key, value in conf.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SweepError(f"{path}: sweeps.{key}={value!r} must be a list of override strings")
    # As Hydra's basic sweeper writes its params onto the command line: key=value.
    params = cfg.hydra.sweeper.get("params") or {}
    return conf | {
        "analysis": OmegaConf.to_container(cfg.get("analysis") or OmegaConf.create({}), resolve=True),
        "params": [f"{k}={v}" for k, v in params.items()],
        "attention": cfg.attention.name,
        "seed": cfg.seed,
        "path": str(path),
    }


def expand(line: list[str], where: str) -> dict[str, list[str]]:
    """Each key's values in a multirun command line: later keys replace earlier ones, as in the sweeper."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(line)
    except HydraException as e:
        reason = " ".join(str(e).split())[:200]
        raise SweepError(f"{where}: cannot parse {' '.join(line)!r} ({reason})") from None
    out: dict[str, list[str]] = {}
    for o in parsed:
        if o.is_sweep_override() and not o.is_discrete_sweep():
            raise SweepError(f"{where}: {o.input_line!r} is not a list of values (use a,b or range(a,b))")
        if not o.is_sweep_override():
            out[o.get_key_element()] = [o.get_value_element_as_str()]
            continue
        out[o.get_key_element()] = list(itertools.islice(o.sweep_string_iterator(), MAX_RUNS + 1))
        if len(out[o.get_key_element()]) > MAX_RUNS:  # never list range(0,10**9)
            raise SweepError(f"{where}: {o.input_line!r} has more than {MAX_RUNS} values")
    return out


def _point(job: dict[str, str], default_attention: str, default_seed: int, where: str) -> Point:
    try:
        seed = int(job.get("seed", default_seed))
    except ValueError:
        raise SweepError(f"{where}: seed={job['seed']!r} is not an integer") from None
    overrides = relevant_overrides([f"{k}={v}" for k, v in job.items()])
    return job.get("attention", default_attention), seed, tuple(overrides)


def _words(text: str, where: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as e:  # an unclosed quote
        raise SweepError(f"{where}: cannot split {text!r} into overrides ({e})") from None


def build_sweep(experiment: str, conf: dict) -> Sweep:
    """Every cell of the declared sweep and the union of their points."""
    sweep, where = Sweep(experiment, []), conf.get("path", experiment)
    for grid in conf["grids"]:
        for setting in [None, *conf["settings"]]:
            line = [*conf["params"], *_words(grid, where), *_words(setting or "", where)]
            cell = Cell(grid, setting, expand(line, where))
            if (runs := math.prod(map(len, cell.values.values()))) > MAX_RUNS:
                raise SweepError(f"{where}: {' '.join(line)!r} declares {runs} runs (at most {MAX_RUNS})")
            for combo in itertools.product(*cell.values.values()):
                point = _point(dict(zip(cell.values, combo)), conf["attention"], conf["seed"], where)
                sweep.points.setdefault(point, len(sweep.cells))
            sweep.cells.append(cell)
    return sweep


def declared_sweep(experiment: str) -> Sweep | None:
    conf = sweep_config(experiment)
    return None if conf is None else build_sweep(experiment, conf)


@functools.cache
def planned_analysis(experiment: str) -> dict:
    """The analysis block of the experiment file ({} without one): keys a dated plan amendment added after the
    rows were written (e.g. ``primary``) reach the report from here; a key the rows carry wins. Cached until the
    next `lbam.report.rows.load_results`, which reads the experiment files afresh."""
    try:
        conf = sweep_config(experiment)
    except SweepError:
        return {}
    return dict(conf.get("analysis") or {}) if conf else {}


# --- the provenance: one command per cell that has rows, with the values those rows have -----------------------


def _canonical(key: str, value: str) -> str:
    kept = relevant_overrides([f"{key}={value}"])
    return kept[0].split("=", 1)[1] if kept else value


def _present(key: str, declared: list[str], rows: list[Row]) -> list[str]:
    """The declared values of ``key`` that the rows ran, canonical, in the declared order (all of them for a key
    that does not change the result, such as the device)."""
    if key == "attention":
        ran = {r.attention for r in rows}
    elif key == "seed":
        ran = {str(r.seed) for r in rows}
    elif not relevant_overrides([f"{key}=x"]):
        return declared
    else:
        ran = {o.split("=", 1)[1] for r in rows for o in r.overrides if o.split("=", 1)[0] == key}
    return list(dict.fromkeys(c for c in (_canonical(key, v) for v in declared) if c in ran))


def _values(values: list[str]) -> str:
    """a,b,c, or range(a,b) when that is shorter for consecutive integers."""
    listed = ",".join(values)
    if len(values) < 3 or not all(v.lstrip("-").isdigit() for v in values):
        return listed
    ints = list(map(int, values))
    spanned = f"range({ints[0]},{ints[-1] + 1})"
    return spanned if ints == list(range(ints[0], ints[-1] + 1)) and len(spanned) < len(listed) else listed


def commands(sweep: Sweep, rows: Iterable[tuple[int, Row]]) -> str:
    """The Hydra multiruns that produced ``rows`` ((cell, row) pairs), one per cell, with the values present;
    a setting whose runs match its grid's is written as "again with <setting>". ``(n of m runs)`` when the rows
    fill only part of the command's product."""
    by_cell: dict[int, list[Row]] = {}
    for cell, row in rows:
        by_cell.setdefault(cell, []).append(row)
    parts, ran = [], {}
    for i, cell in enumerate(sweep.cells):
        if i not in by_cell:
            continue
        kv = {k: _values(_present(k, v, by_cell[i])) for k, v in cell.values.items()}
        size = math.prod(len(_present(k, v, by_cell[i])) for k, v in cell.values.items())
        note = "" if size == len(by_cell[i]) else f" ({len(by_cell[i])} of {size} runs)"
        own = set(expand(_words(cell.setting, sweep.experiment), sweep.experiment)) if cell.setting else set()
        base, at = ran.get(cell.grid, ({}, None))
        if cell.setting and at is not None and all(base.get(k) == v for k, v in kv.items() if k not in own):
            parts[at] += f", again with `{cell.setting}`{note}"
            continue
        if not cell.setting:
            ran[cell.grid] = kv, len(parts)
        line = " ".join(f"{k}={v}" for k, v in kv.items())
        parts.append(f"`python -m lbam.train -m experiment={sweep.experiment} {line}`{note}")
    return "; ".join(parts)
