"""One pool per experiment: every run that `scripts/reproduce.py` plans for it (every declared setting), through
N slots at once, so that no setting waits for another's multirun to drain (embodiment 1 once ran its 18-run
multirun, then a 3-run one for `attention.residual=false`).

A unit is one `python -m lbam.train -m ...` process: runs that differ only by their seed (one model), as Hydra's
basic sweeper runs them, one after the other in that process. With one slot the units are the plan's multiruns
as declared (one process each, as before). With N slots:
- where the runs compile (on a GPU), the first run of each model is a unit of its own and goes first; the other
  runs of that model start once it has exited, and find its kernels in inductor's on-disk cache instead of
  compiling the same graph at the same moment;
- the other runs come in chunks of seeds, the longest first, sized so that slots are not left waiting on a
  long last unit (one run a unit for a GPU protocol);
- every process is told the pool's size (LBAM_CONCURRENT_JOBS: its row records it, and on the CPU it takes
  cores // N threads) and gets cores // N inductor compile threads (TORCHINDUCTOR_COMPILE_THREADS) instead of
  one per core each (9 runs x 16 compile workers compiled in 28-37 s, one run alone in 19-21 s).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sweep_plan import Job, Plan, PlanError, describe, multirun

ROOT = Path(__file__).resolve().parents[1]
CHUNKS_PER_SLOT = 4  # units per slot at least, where seeds allow: the last unit is short against the whole


@dataclass
class Unit:
    overrides: list[str]  # after `python -m lbam.train -m`
    jobs: list[Job]
    model: tuple[str, ...]  # what its runs share: their overrides but the seed
    first: bool  # starts at once; the others of its model wait for its exit (when the runs compile)


def _model(job: Job) -> tuple[str, ...]:
    return tuple(o for o in job.overrides if o.split("=", 1)[0] != "seed")


def units(p: Plan, slots: int, compiled: bool) -> list[Unit]:
    """The units of ``p``'s remaining runs, in the order they start (see the module doc)."""
    left = {j.name for j in p.remaining()}
    if slots == 1:
        return [
            Unit(m.overrides, [j for j in m.jobs if j.name in left], (), True)
            for m in p.multiruns
            if any(j.name in left for j in m.jobs)
        ]
    models: dict[tuple[str, ...], list[Job]] = {}
    for job in p.jobs:
        if job.name in left:
            models.setdefault(_model(job), []).append(job)
    size = max(1, math.ceil(len(left) / (CHUNKS_PER_SLOT * slots)))
    firsts, rest = [], []
    for model, jobs in models.items():
        if compiled:
            firsts.append(_unit(p, model, jobs[:1], first=True))
            jobs = jobs[1:]
        for i in range(0, len(jobs), size):
            (rest if compiled else firsts).append(_unit(p, model, jobs[i : i + size], first=not compiled))
    # Longest first (a stable sort: the plan's order among equals); the first runs before the others.
    return sorted(firsts, key=lambda u: -len(u.jobs)) + sorted(rest, key=lambda u: -len(u.jobs))


def _unit(p: Plan, model: tuple[str, ...], jobs: list[Job], first: bool) -> Unit:
    overrides = [*model, f"seed={','.join(str(j.seed) for j in jobs)}"]
    # The unit's multirun must run exactly these runs: expanded as Hydra will expand it, named as the runner will.
    expanded = multirun(p.experiment, p.cfg, overrides).jobs
    if [j.name for j in expanded] != [j.name for j in jobs]:
        raise PlanError(f"{p.experiment}: a pool unit would run {[j.name for j in expanded]}, not its runs")
    return Unit(overrides, jobs, model, first)


def describe_units(us: list[Unit], slots: int, compiled: bool) -> str:
    """The plan's pool line."""
    runs = sum(len(u.jobs) for u in us)
    if slots == 1:
        return f"pool: {runs} runs one after the other, in {len(us)} process{'es' * (len(us) != 1)}"
    sizes = describe(sorted({str(len(u.jobs)) for u in us}, key=int))
    line = f"pool: {runs} runs in {len(us)} processes of {sizes} run(s), {slots} at once"
    if compiled:
        n = sum(u.first for u in us)
        line += f"; the first run of each of {n} models first, the others after it (inductor's cache)"
    return line + f"; {compile_threads(slots)} compile thread(s) each"


def compile_threads(slots: int) -> int:
    return max(1, (os.cpu_count() or 1) // slots)


def pool_env(slots: int) -> dict[str, str]:
    from lbam.sweep import CONCURRENT_JOBS

    env = {**os.environ, CONCURRENT_JOBS: str(slots)}
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(compile_threads(slots)))  # a user's value wins
    return env


def _ready(waiting: list[Unit], exited: set[tuple[str, ...]]) -> Unit | None:
    """The next unit that may start: a first run, or a run whose model's first unit has ended."""
    return next((u for u in waiting if u.first or u.model in exited), None)


def run_units(
    us: list[Unit],
    slots: int,
    say=print,
    poll_s: float = 0.2,
    deadline: float | None = None,
    log: Path | None = None,
) -> list[tuple[Unit, int, float]]:
    """Run the units, ``slots`` at once; (unit, exit status, seconds) in the order they ended. Their output goes
    to this process's, or to the file ``log``. Stopped (Ctrl-C, or at ``deadline`` on time.monotonic's clock), it
    stops the processes it started (SIGTERM: a run saves its checkpoint and ends) and waits for them; the units
    not ended are not in the list."""
    env, waiting, running, ended = pool_env(slots), list(us), {}, []
    output = open(log, "a") if log else None  # closed below, after the processes
    exited: set[tuple[str, ...]] = set()  # models whose first unit has ended
    try:
        while (waiting or running) and (deadline is None or time.monotonic() < deadline):
            for proc in [proc for proc in running if proc.poll() is not None]:
                unit, start = running.pop(proc)
                exited |= {unit.model} if unit.first else set()
                ended.append((unit, proc.returncode, time.monotonic() - start))
                status = (
                    "" if proc.returncode == 0 else f", exit {proc.returncode}: its runs are checked below"
                )
                say(f"[reproduce] done in {time.monotonic() - start:.0f} s{status}: {_names(unit)}")
            while len(running) < slots:
                ready = _ready(waiting, exited)
                if ready is None:
                    break
                waiting.remove(ready)
                cmd = [sys.executable, "-m", "lbam.train", "-m", *ready.overrides]
                say("[reproduce] " + " ".join(cmd[1:]))
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=output, stderr=output)
                running[proc] = (ready, time.monotonic())
            time.sleep(poll_s)
    finally:
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait()
        if output:
            output.close()
    return ended


def simulate(us: list[Unit], slots: int, seconds) -> float:
    """The wall seconds of ``run_units(us, slots)`` if each unit took ``seconds(unit)``: the same order and the
    same waits (a projection from measured run times)."""
    now, waiting, running, exited = 0.0, list(us), [], set()
    while waiting or running:
        while len(running) < slots and (ready := _ready(waiting, exited)) is not None:
            waiting.remove(ready)
            running.append((now + seconds(ready), ready))
        running.sort(key=lambda r: r[0])
        now, unit = running.pop(0)
        exited |= {unit.model} if unit.first else set()
    return now


def _names(unit: Unit) -> str:
    return ", ".join(j.name for j in unit.jobs)
