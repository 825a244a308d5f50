"""What a run needs to know about the sweep around it: how many runs share the machine (Hydra's joblib launcher),
and, at the end of a multirun, which runs failed (a sweep with failed runs exits non-zero and lists them).

Failures travel through a file named by an environment variable that the multirun's process sets before any job
starts: the joblib launcher runs jobs in worker processes, whose callbacks cannot reach the parent's memory.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("lbam.sweep")
_FAILURES = "LBAM_SWEEP_FAILURES"
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


def record_failure(run: str, error: str) -> None:
    """Add a failed run to the list of the multirun this process belongs to (nothing outside a multirun)."""
    path = os.environ.get(_FAILURES)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{run}: {error}\n")


class FailedRuns(Callback):
    """Hydra callback (configs/train.yaml: hydra.callbacks): collects the runs of a multirun whose row says
    failed, or whose job raised, and ends the multirun with their list and exit status 1."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        fd, path = tempfile.mkstemp(prefix="lbam-sweep-", suffix=".failed")
        os.close(fd)
        os.environ[_FAILURES] = path  # inherited by the launcher's worker processes, started after this

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        """A job that raised (a failed run that trained writes its own line: :func:`record_failure`)."""
        if getattr(getattr(job_return, "status", None), "name", "") == "FAILED":
            error = str(getattr(job_return, "_return_value", "") or "the job raised").strip().splitlines()
            record_failure(" ".join(getattr(job_return, "overrides", []) or []), (error or ["?"])[0])

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        path = os.environ.pop(_FAILURES, None)
        if not path:
            return
        lines = Path(path).read_text(encoding="utf-8").splitlines() if Path(path).exists() else []
        Path(path).unlink(missing_ok=True)
        if lines:
            print(f"error: {len(lines)} run(s) of the sweep failed:", file=sys.stderr)
            for line in lines:
                print(f"  {line}", file=sys.stderr)
            sys.stderr.flush()
            raise SystemExit(1)
