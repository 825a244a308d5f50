"""Processes of a check: each one's peak memory while they run, and a command run in its own process group that a
time budget can stop with everything it started (scripts/device_check.py)."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path


class PeakMemory:
    """Peak memory per process while it is open, sampled twice a second: on a GPU each GPU process's footprint
    from nvidia-smi (CUDA context included), on the CPU the resident memory of this process's descendants
    (/proc). A process that lives under half a second may be missed."""

    def __init__(self, cuda: bool):
        self.cuda, self.peaks, self._stop = cuda, {}, threading.Event()
        self.smi = shutil.which("nvidia-smi") if cuda else None

    def _gpu(self) -> dict[str, float]:
        query = [self.smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        lines = subprocess.run(query, capture_output=True, text=True).stdout.splitlines()
        pairs = (line.split(",") for line in lines if line.count(",") == 1)
        return {pid.strip(): int(mib) / 1024 for pid, mib in pairs if mib.strip().isdigit()}

    @staticmethod
    def _cpu() -> dict[str, float]:
        parents, rss = {}, {}
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except OSError:  # ended meanwhile
                continue
            pid = status.parent.name
            parents[pid] = fields.get("PPid", "").strip()
            rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) / 2**20
        mine, found = {str(os.getpid())}, True
        while found:  # the descendants of this process
            found = {p for p, parent in parents.items() if parent in mine and p not in mine}
            mine |= found
        return {p: rss[p] for p in mine - {str(os.getpid())}}

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for pid, gib in (self._gpu() if self.smi else self._cpu()).items():
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), gib)

    def __enter__(self) -> PeakMemory:
        if self.smi or not self.cuda:
            threading.Thread(target=self._sample, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def summary(self) -> str:
        if not self.peaks:
            return "peak memory: not seen" + (" (nvidia-smi showed no process)" if self.cuda else "")
        gib = sorted(self.peaks.values())
        what = "GPU memory" if self.cuda else "RSS"
        return (
            f"peak {what} {gib[-1]:.2f} GiB a process (median {statistics.median(gib):.2f}, {len(gib)} seen)"
        )


def run_logged(cmd: list[str], log: Path, timeout: float, cwd: Path) -> tuple[int | None, float]:
    """Run ``cmd`` in ``cwd``, in its own process group with its output in ``log``; (exit status, None when stopped
    at ``timeout``; wall seconds). Stopped, the whole group gets SIGTERM (a run saves its checkpoint), then
    SIGKILL."""
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            code = None
        for sig in (signal.SIGTERM, signal.SIGKILL):  # a worker left behind would hold the GPU
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)
        proc.wait()
    return code, time.monotonic() - start
