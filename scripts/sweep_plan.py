"""What `scripts/reproduce.py` will run: each experiment's declared sweep expanded into named runs, which of them
finished here, and whether the experiment's dataset can be used.

An experiment declares its sweep (configs/experiment/*.yaml): `hydra.sweeper.params`, `sweeps.grids` (override
strings, each one multirun on top of the params; "" = the params alone) and `sweeps.settings` (every grid runs
again with each of these). A multirun's jobs are expanded as Hydra's basic sweeper expands them: Hydra's own
override parser, a later override of a key replaces an earlier one, the jobs are the product of the sweeps. Each
job is named by `lbam.config.run_name`, as the runner names it; a run is finished here when its run directory
holds `finished.json` and its row exists.
"""

from __future__ import annotations

import itertools
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class PlanError(ValueError):
    """A sweep or override that cannot be planned; the message is one line."""


@dataclass(frozen=True)
class Job:
    overrides: tuple[str, ...]  # as the sweeper hands them to the run: its task overrides
    attention: str
    seed: int
    name: str


@dataclass
class Multirun:
    overrides: list[str]  # the command line after `python -m lbam.train -m`
    jobs: list[Job]
    swept: dict[str, list[str]]  # the keys with more than one value: the sweep's dimensions


@dataclass
class Plan:
    experiment: str  # the config name (experiment=...)
    cfg: DictConfig  # the experiment composed with the user's overrides (hydra node included)
    multiruns: list[Multirun] = field(default_factory=list)
    user: list[str] = field(default_factory=list)  # the user's overrides, on every run
    problem: str | None = None  # why the experiment is skipped (its dataset), None when it runs

    @property
    def name(self) -> str:
        return str(self.cfg.experiment_name)

    def run_dir(self, job: Job) -> Path:
        return Path(self.cfg.paths.experiments_dir) / self.name / job.name

    def row_file(self, job: Job) -> Path:
        from lbam.results import row_path

        return row_path(self.cfg.paths.results_dir, self.name, job.name)

    @property
    def jobs(self) -> list[Job]:
        """Every run once (two grids may name the same run), in the order the multiruns reach them."""
        first: dict[str, Job] = {}
        for m in self.multiruns:
            for j in m.jobs:
                first.setdefault(j.name, j)
        return list(first.values())

    def finished(self, job: Job) -> bool:
        from lbam.rundir import finished_here

        return finished_here(self.run_dir(job)) and self.row_file(job).is_file()

    def remaining(self) -> list[Job]:
        return [j for j in self.jobs if not self.finished(j)]

    def failure(self, job: Job) -> str | None:
        """Why a run that should have finished did not (None when it finished): its row's error line."""
        if self.finished(job):
            return None
        from lbam.results import RowError, load_row

        try:
            row = load_row(self.row_file(job))
        except RowError as e:
            return "no row written" if not self.row_file(job).exists() else str(e)
        if row.status == "failed":
            return row.error or "failed (no error recorded)"
        return f"did not finish here (no {self.run_dir(job) / 'finished.json'})"


def _parse(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise PlanError(f"cannot parse the overrides {overrides}: {' '.join(str(e).split())}") from None


def expand(overrides: list[str]) -> tuple[list[list[str]], dict[str, list[str]]]:
    """(one override list per job, the swept keys' values) of `-m <overrides>`, as Hydra's basic sweeper does.
    Hydra's own overrides (hydra.*, hydra/...) configure the sweep and are not part of a job."""
    by_key: dict[str, list[str]] = {}
    for o in _parse(overrides):
        if o.is_hydra_override():
            continue
        key = o.get_key_element()
        if not o.is_sweep_override():
            by_key[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            by_key[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise PlanError(f"{o.input_line}: only choice sweeps (a,b) and range() can be planned")
    swept = {k: [v.split("=", 1)[1] for v in vs] for k, vs in by_key.items() if len(vs) > 1}
    return [list(job) for job in itertools.product(*by_key.values())], swept


def _value(job: list[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0].lstrip("+~") == key), None)


def multiruns(experiment: str, cfg: DictConfig, user: list[str]) -> list[Multirun]:
    """The experiment's declared multiruns (every setting x grid), each with its named jobs; ``user`` overrides
    come last and win, as on a command line."""
    sweeps = cfg.get("sweeps") or {}
    grids, settings = list(sweeps.get("grids") or [""]), ["", *(sweeps.get("settings") or [])]
    out = []
    for setting, grid in itertools.product(settings, grids):
        try:
            command = [f"experiment={experiment}", *shlex.split(setting), *shlex.split(grid), *user]
        except ValueError as e:
            raise PlanError(f"{experiment}: cannot split the sweep {setting!r} / {grid!r}: {e}") from None
        out.append(multirun(experiment, cfg, command))
    return out


def multirun(experiment: str, cfg: DictConfig, command: list[str]) -> Multirun:
    """`python -m lbam.train -m <command>` of ``experiment``: the experiment's sweeper params with ``command`` on
    top, expanded into named jobs."""
    from lbam.config import ConfigError, run_name

    params = [f"{k}={v}" for k, v in (OmegaConf.select(cfg, "hydra.sweeper.params") or {}).items()]
    expanded, swept = expand([*params, *command])
    jobs = []
    for job in expanded:
        attention = _value(job, "attention") or str(cfg.attention.name)
        seed = _value(job, "seed") or str(cfg.seed)
        if not seed.isdigit():
            raise PlanError(f"{experiment}: seed={seed!r} must be an integer >= 0")
        try:
            name = run_name(attention, job, int(seed))
        except ConfigError as e:
            raise PlanError(f"{experiment}: {e}") from None
        jobs.append(Job(tuple(job), attention, int(seed), name))
    return Multirun(command, jobs, swept)


def compose_experiment(experiment: str, user: list[str]) -> DictConfig:
    """The experiment with the user's single-valued overrides (a sweep such as seed=0,1 cannot be composed)."""
    from hydra.errors import HydraException

    from lbam.config import compose
    from lbam.paths import CONFIG_DIR

    known = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
    if experiment not in known:
        raise PlanError(f"unknown experiment {experiment!r}; valid: {', '.join(known)}")
    single = [o for o, p in zip(user, _parse(user)) if not p.is_sweep_override()]
    try:
        return compose([f"experiment={experiment}", *single], with_hydra=True)
    except HydraException as e:
        raise PlanError(f"{experiment}: {' '.join(str(e).split())}") from None


def dataset_problem(cfg: DictConfig) -> str | None:
    """Why the experiment's dataset cannot be used here (None when it can); fetches it when it is missing and
    the config allows downloads (DataModule.prepare_data)."""
    from hydra.utils import instantiate

    from lbam.config import ConfigError, build_or_fail
    from lbam.data import DataError

    try:
        dm = build_or_fail("dataset", instantiate, cfg.dataset)
        dm.prepare_data()
    except (DataError, ConfigError) as e:
        return " ".join(str(e).split())
    return None


def plan(experiment: str, user: list[str], check_data: bool = True) -> Plan:
    cfg = compose_experiment(experiment, user)
    p = Plan(experiment, cfg, multiruns(experiment, cfg, user), user=list(user))
    if check_data:
        p.problem = dataset_problem(cfg)
    return p


def describe(values: list[str]) -> str:
    """'0-6' for consecutive integers, else the values (at most 6 shown)."""
    if len(values) > 2 and all(v.isdigit() for v in values):
        ints = [int(v) for v in values]
        if ints == list(range(ints[0], ints[0] + len(ints))):
            return f"{ints[0]}-{ints[-1]}"
    return ",".join(values[:6]) + (f",... ({len(values)})" if len(values) > 6 else "")
