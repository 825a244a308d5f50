"""Result rows: one JSON object per run plus its test predictions, written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import torch

ROW_KEYS = (
    "experiment run_name dataset synthetic backbone attention attention_kwargs placement width_mult image_size "
    "seed profile device precision status error test_acc test_balanced_acc test_macro_f1 per_class_acc "
    "confusion_matrix class_names num_classes params attention_params macs flops epochs train_seconds "
    "images_per_second n_train n_test data history checkpoint predictions_file commit torch_version created_at "
    "overrides"
).split()


def row_path(results_dir: str | Path, experiment: str, run_name: str) -> Path:
    """`<results_dir>/runs/<experiment>/<run_name>.json`."""
    return Path(results_dir) / "runs" / experiment / f"{run_name}.json"


def read_row(path: str | Path) -> dict | None:
    """The row at `path`, or None if there is none (or it is unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _atomic_write(path: Path, text: str) -> None:
    # A unique temp file in the same directory, then os.replace: readers see the old or the new file, never a
    # partial one, and concurrent writers of different rows never touch each other's temp files.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be read and shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_row(row: dict, preds: list[tuple[str, int, int]] | None, results_dir: str | Path) -> Path:
    """Write `row` to its place under `results_dir` and, if given, its `(id, target, pred)` rows beside it.

    The predictions go first so that a row never points at a missing predictions file. Returns the row path.
    """
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise ValueError(f"result row lacks keys {missing}")
    path = row_path(results_dir, row["experiment"], row["run_name"])
    if preds is not None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["id", "target", "pred"])
        writer.writerows(preds)
        _atomic_write(path.with_name(row["predictions_file"]), buf.getvalue())
    _atomic_write(path, json.dumps(row, indent=2, sort_keys=False) + "\n")
    return path


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD's sha with a `+dirty` suffix when tracked files other than results/ differ, or "unknown" outside git.

    results/ is left out: rerunning the committed code rewrites the committed rows, which is not a code change."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)results"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_string(accelerator: str, devices: int = 1) -> str:
    """E.g. "cpu (2 threads, AMD EPYC)" or "cuda: NVIDIA H100 80GB HBM3 x2"."""
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return f"cuda: {name}" + (f" x{devices}" if devices > 1 else "")
    procs = f" x{devices} processes" if devices > 1 else ""
    return f"cpu ({torch.get_num_threads()} threads, {cpu_model()}){procs}"
