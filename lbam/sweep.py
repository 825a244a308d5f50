"""What a run needs to know about the sweep around it: how many runs share the machine (Hydra's joblib launcher),
and, at the end of a multirun, which runs failed, were interrupted, or never started. A failing run never stops
the others; a sweep with failed runs exits 1 and lists them, an interrupted one exits 143 (SIGTERM) or 130
(SIGINT) and lists the interrupted and the unstarted runs (run the same command again to go on).

Outcomes travel through a file named by an environment variable that the multirun's process sets before any job
starts: the joblib launcher runs jobs in worker processes, whose callbacks cannot reach the parent's memory.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lbam import interrupt

log = logging.getLogger("lbam.sweep")
_OUTCOMES = "LBAM_SWEEP_FAILURES"
KINDS = ("failed", "interrupted", "not started")
CONCURRENT_JOBS = "LBAM_CONCURRENT_JOBS"  # set by scripts/reproduce.py's pool for the processes it starts


def concurrent_jobs() -> int:
    """Runs this process's launcher trains at the same time on this machine: `n_jobs` of Hydra's joblib launcher
    (-1: one per core), else LBAM_CONCURRENT_JOBS (the pool of scripts/reproduce.py), else 1."""
    pool = os.environ.get(CONCURRENT_JOBS, "")
    launcher = (HydraConfig.get().get("launcher") or {}) if HydraConfig.initialized() else {}
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return int(pool) if pool.isdigit() and int(pool) >= 1 else 1
    n = int(launcher.get("n_jobs") or 1)
    return os.cpu_count() or 1 if n < 0 else max(n, 1)


def record(kind: str, run: str, detail: str) -> None:
    """Add a run's outcome (one of :data:`KINDS`) to the multirun this process belongs to (nothing outside one)."""
    path = os.environ.get(_OUTCOMES)
    if path:
        detail = " ".join(str(detail).split())
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{kind}\t{run}\t{detail}\n")


def record_failure(run: str, error: str) -> None:
    record("failed", run, error)


def _tell_workers(signum: int) -> None:
    record("signal", "", str(int(signum)))


def signalled() -> int | None:
    """The signal the multirun this process belongs to got, as its file says (a joblib worker did not get it
    itself when only the parent was signalled); None outside a multirun or before a signal."""
    path = os.environ.get(_OUTCOMES)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines() if path else []
    except OSError:
        return None
    return signalled_in(lines)


def summarize() -> int:
    """Print the multirun's failed, interrupted and unstarted runs on stderr, remove its file, and return the exit
    status: 128 + the signal after a signal, 1 with failed runs, else 0."""
    path = os.environ.pop(_OUTCOMES, None)
    lines = Path(path).read_text(encoding="utf-8").splitlines() if path and Path(path).exists() else []
    if path:
        Path(path).unlink(missing_ok=True)
    by_kind = {k: [] for k in KINDS}
    for line in lines:
        kind, run, detail = [*line.split("\t", 2), "", ""][:3]
        by_kind.setdefault(kind, []).append((run, detail))
    failed, stopped, unstarted = (by_kind[k] for k in KINDS)
    if failed:
        print(f"error: {len(failed)} run(s) of the sweep failed:", file=sys.stderr)
        for run, detail in failed:
            print(f"  {run}: {detail}", file=sys.stderr)
    signum = interrupt.received() or signalled_in(lines)
    if signum is not None:
        name = signal.Signals(signum).name
        print(
            f"error: the sweep was interrupted by {name}: {len(stopped)} run(s) interrupted, {len(unstarted)} not "
            "started; run the same command again to go on (finished runs are skipped, interrupted ones resume)",
            file=sys.stderr,
        )
        for run, detail in stopped:
            print(f"  interrupted: {run}: {detail}", file=sys.stderr)
        for run, _ in unstarted:
            print(f"  not started: {run}", file=sys.stderr)
    sys.stderr.flush()
    return 128 + signum if signum is not None else 1 if failed else 0


def signalled_in(lines: list[str]) -> int | None:
    found = [line.rsplit("\t", 1)[-1] for line in lines if line.startswith("signal\t")]
    return int(found[0]) if found and found[0].isdigit() else None


class FailedRuns(Callback):
    """Hydra callback (configs/train.yaml: hydra.callbacks): collects the runs of a multirun whose row says
    failed, whose job raised, that a signal interrupted or kept from starting, and ends the multirun with their
    list and exit status (:func:`summarize`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        fd, path = tempfile.mkstemp(prefix="lbam-sweep-", suffix=".outcomes")
        os.close(fd)
        os.environ[_OUTCOMES] = path  # inherited by the launcher's worker processes, started after this
        # Runs in worker processes (the joblib launcher) save and stop on their own signal: this process then
        # waits for them instead of stopping at once, which would kill them mid-save.
        parallel = concurrent_jobs() > 1 or _parallel(config)
        self._signals = interrupt.Signals(defer=parallel, listener=_tell_workers)
        self._signals.__enter__()

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        """A job that raised (a failed run that trained writes its own line: :func:`record_failure`)."""
        if getattr(getattr(job_return, "status", None), "name", "") == "FAILED":
            error = str(getattr(job_return, "_return_value", "") or "the job raised").strip().splitlines()
            record_failure(" ".join(getattr(job_return, "overrides", []) or []), (error or ["?"])[0])

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._signals.__exit__(None, None, None)
        code = summarize()
        if code:
            raise SystemExit(code)


def _parallel(config: DictConfig) -> bool:
    target = str(config.get("hydra", {}).get("launcher", {}).get("_target_", ""))
    return "joblib" in target.lower()
