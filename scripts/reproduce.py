"""The patent's comparison in one command: a plan, each experiment's declared sweep, then the report.

    python scripts/reproduce.py --profile quick    # embodiment{1,2}_quick, seed 0       (make quick)
    python scripts/reproduce.py --profile full     # embodiment{1,2}, seeds 0 1 2        (make reproduce)
    python scripts/reproduce.py --profile curve    # embodiment1_curve learning curve    (make curve)
    python scripts/reproduce.py --profile bridge   # embodiment1_bridge, 32/64/128 px     (make bridge)
    python scripts/reproduce.py --profile full --jobs 2     # two runs at once (default auto: see below)
    python scripts/reproduce.py --profile full --experiments embodiment1 -- trainer.max_epochs=10
    python scripts/reproduce.py --profile curve --plan      # the plan only: what would run, and for how long
    python scripts/reproduce.py --profile quick --reference # maintainers: rows into the committed reference

Your runs write their rows to results/local (git-ignored, ``paths.results_dir``) and the report shows them beside
the committed reference, results/runs, which they never change; ``--reference`` (make ... REFERENCE=1) writes the
rows to the reference and regenerates its tables, figures and README block instead.

First the plan, before anything trains: per experiment its multiruns (`python -m lbam.train -m ...`: the sweeper
params x each grid x each setting of the experiment file, see scripts/sweep_plan.py), how many runs there are,
how many finished here and how many remain, a time estimate on this device (scripts/estimate.py, in a child
process), how many runs share the device and what is skipped and why (a dataset that is missing and cannot be
downloaded: the line says how to get it). Then each experiment's remaining runs as one pool (scripts/pool.py:
every setting at once, the first run of each model first), and the report. Finished runs are skipped and
interrupted ones resume, so the command can be rerun. A run that failed, or wrote no row, is listed at the end
and makes the exit status 1.

`--jobs auto` (the default; make's JOBS=auto): one run at a time on the CPU (cores // N threads each with N), on a
GPU as many as its free memory holds at the largest model's probed peak, per experiment (cnn4 and VGG16-BN get
their own number); `--jobs N` runs N at once everywhere.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # this checkout's lbam, and the planning modules beside

from estimate import Probe, device_for, jobs_for, probe  # noqa: E402
from pool import describe_units, run_units, units  # noqa: E402
from sweep_plan import Plan, PlanError, describe, plan  # noqa: E402

PROFILES = {
    "quick": ("embodiment1_quick", "embodiment2_quick"),
    "full": ("embodiment1", "embodiment2"),
    "curve": ("embodiment1_curve",),
    "bridge": ("embodiment1_bridge",),
}
# How to get a dataset that `prepare_data` could not fetch (the error itself names LBAM_DATA_DIR and the URL).
FETCH = "`make data` fetches both datasets when online"


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        self.exit(2, f"reproduce.py: {message} (see --help)\n")


def jobs_count(text: str) -> int | None:
    """--jobs: an integer >= 1, or auto (None)."""
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be auto or an integer >= 1, got {text!r}")
    return int(text)


def compiles(p: Plan) -> bool:
    """Whether ``p``'s runs compile (model.compile, auto = on a GPU): then the first run of each model goes first."""
    setting = p.cfg.model.compile
    return setting is True or (setting == "auto" and device_for(p.cfg).type == "cuda")


def print_plan(p: Plan, jobs: int | None, estimate_time: bool) -> int:
    """Print ``p``'s plan; the runs at once it will use (``jobs``, or chosen when None)."""
    cfg = p.cfg
    head = (
        f"{p.experiment}: {cfg.hydra.runtime.choices.dataset}, {cfg.backbone.name} at {cfg.dataset.image_size} px, "
        f"profile {cfg.profile}"
    )
    if p.problem:
        print(f"[plan] {head}: SKIPPED, its dataset is not available: {p.problem} ({FETCH})")
        return 1
    print(f"[plan] {head}")
    for i, m in enumerate(p.multiruns, 1):
        done = sum(p.finished(j) for j in m.jobs)
        dims = " x ".join(f"{k} {describe(v)}" for k, v in m.swept.items()) or "one run"
        print(f"  {i}. -m {' '.join(m.overrides)}")
        runs = f"{len(m.jobs)} run{'s' * (len(m.jobs) != 1)}"
        print(f"     {runs} ({dims}): {done} finished here, {len(m.jobs) - done} to run")
    left = p.remaining()
    line = f"  total: {len(p.jobs)} runs, {len(p.jobs) - len(left)} finished here, {len(left)} to run"
    if not left:
        print(line, flush=True)
        print(f"  {where(p)}", flush=True)
        return jobs or 1
    measured: Probe | None = probe(p, left, time_it=estimate_time) if jobs is None or estimate_time else None
    print(line + (f"; {measured.line()}" if estimate_time and measured else ""), flush=True)
    n, why = (jobs, "--jobs / JOBS") if jobs else jobs_for(measured, len(left))
    print(f"  jobs: {n} at once ({why})")
    print(f"  {describe_units(units(p, n, compiles(p)), n, compiles(p))}", flush=True)
    print(f"  {where(p)}", flush=True)
    return n


def where(p: Plan) -> str:
    """Where the rows go, and how many of the planned runs the committed reference already holds."""
    from lbam.results import row_path

    paths = p.cfg.paths
    held = sum(row_path(paths.reference_dir, p.name, j.name).is_file() for j in p.jobs)
    if Path(paths.results_dir).resolve() == Path(paths.reference_dir).resolve():
        return (
            f"rows into the reference, {paths.results_dir} (--reference, the maintainers' path): it holds {held} "
            "of these runs; those not finished here are retrained and replaced"
        )
    return (
        f"rows into {paths.results_dir} (yours, git-ignored); the reference ({paths.reference_dir}) holds {held} "
        f"of these {len(p.jobs)} runs: the report shows yours beside them"
    )


def run_plan(p: Plan, jobs: int) -> list[str]:
    """Run ``p``'s remaining runs as one pool; the lines of the runs that did not finish."""
    run_units(units(p, jobs, compiles(p)), jobs, say=lambda line: print(line, flush=True))
    return [f"{p.name}/{j.name}: {why}" for j in p.jobs if (why := p.failure(j))]


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=tuple(PROFILES), default="quick")
    parser.add_argument("--experiments", nargs="+", help="a subset of the profile's experiments (or others)")
    parser.add_argument("--seeds", help="comma-separated seeds instead of the experiment's, e.g. 0,1")
    parser.add_argument(
        "--jobs", type=jobs_count, default=None, help="runs at once: auto (default; see above) or N"
    )
    parser.add_argument("--plan", action="store_true", help="print the plan and stop")
    parser.add_argument("--no-estimate", action="store_true", help="skip the time estimate (its probe steps)")
    parser.add_argument("--no-report", action="store_true", help="do not regenerate the report at the end")
    parser.add_argument("--reference", action="store_true", help="rows into the reference (maintainers)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = parser.parse_args(argv)

    user = [*(["paths=reference"] if args.reference else []), *args.overrides]
    user += [f"seed={args.seeds}"] if args.seeds else []
    try:
        plans = [plan(e, user) for e in args.experiments or PROFILES[args.profile]]
        jobs = [print_plan(p, args.jobs, estimate_time=not args.no_estimate) for p in plans]
    except PlanError as e:
        print(f"reproduce.py: {e}", file=sys.stderr)
        return 2
    if args.plan:
        return 0

    t0, failed = time.perf_counter(), []
    for p, n in zip(plans, jobs):
        if not p.problem:
            failed += run_plan(p, n)
    print(f"\n[reproduce] {(time.perf_counter() - t0) / 60:.1f} min")
    for p in plans:
        state = (
            f"skipped ({p.problem})"
            if p.problem
            else f"{len(p.jobs) - len(p.remaining())}/{len(p.jobs)} finished"
        )
        print(f"  {p.experiment}: {state}")
    code = 0
    if not args.no_report and plans:  # the report of the folders the runs wrote to, beside the reference
        paths = plans[0].cfg.paths
        report = ["--results-dir", str(paths.results_dir), "--experiments-dir", str(paths.experiments_dir)]
        report += ["--reference-dir", str(paths.reference_dir)]
        code = subprocess.run([sys.executable, "-m", "lbam.report", *report], cwd=ROOT).returncode
    if failed:
        print(f"reproduce.py: {len(failed)} run(s) did not finish:", file=sys.stderr)
        print("\n".join(f"  {f}" for f in failed), file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
