"""The result row: one JSON object per run (the schema shared by the runner and the report), its test predictions
beside it, and provenance helpers.

A row is written by the runner (`lbam.train`) and read by the report (`lbam.report`) and by nothing else; both
go through `Row` and `load_row`, so a key or a range is declared once, here.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import platform
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lbam.io import atomic_write

STATUSES = ("ok", "failed")
PROFILES = ("quick", "full", "test", "curve")


class RowError(ValueError):
    """A row or predictions file that breaks the schema; the message names the file and the key."""


@dataclass
class Row:
    """One training run. Identity first, then outcome, metrics (test split), cost, training, provenance."""

    experiment: str
    run_name: str
    profile: str
    seed: int
    overrides: list[str]  # the run's Hydra overrides, as typed (they name the run)
    dataset: str
    synthetic: bool
    backbone: str
    attention: str
    attention_kwargs: dict[str, Any]
    placement: str
    width_mult: float
    image_size: int
    status: str = "failed"
    error: str | None = None  # one line, for a failed run
    # Test metrics in [0, 1]; balanced accuracy and macro-F1 average over the classes present in the test split.
    test_acc: float | None = None
    test_balanced_acc: float | None = None
    test_macro_f1: float | None = None
    per_class_acc: dict[str, float | None] | None = None
    confusion_matrix: list[list[int]] | None = None  # [true][pred]
    val_acc: float | None = None  # last epoch's validation accuracy; None without a validation split
    class_names: list[str] = field(default_factory=list)
    # Cost of the network that trains (lbam.complexity.profile_model, one image).
    params: int | None = None
    attention_params: int | None = None
    macs: int | None = None
    flops: int | None = None
    # Training.
    epochs: int = 0
    steps: int = 0
    train_seconds: float | None = None  # every training epoch's wall time, the compiling first step included
    compile_seconds: float | None = None  # torch.compile's first-step overhead; None when not compiled
    images_per_second: float | None = None  # over the epochs after the first (compilation, warm-up)
    compiled: bool = False
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    data: dict[str, Any] | None = (
        None  # the datamodule's metadata: split sizes per class, images, skipped items
    )
    datamodule: dict[str, Any] | None = None  # its config without machine paths: rebuilds the same test split
    analysis: dict[str, Any] = field(default_factory=dict)  # the experiment's pre-stated analysis settings
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch
    checkpoint: str | None = None  # relative to the experiments folder
    predictions_file: str | None = None  # beside the row: id,target,pred per test sample
    # Identity: what the row claims to be; the report recomputes and checks each (lbam.report.rows).
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config that defines the result
    config_hash: str | None = None  # digest(config); the checkpoint carries the same
    split_hash: str | None = None  # digest of the train / val / test sample ids
    predictions_sha256: str | None = None  # sha256 of the predictions file's bytes
    # The data's content: the digest of its source files, and whether they were the pinned ones at setup (True),
    # differed under dataset.verify=false (False), or nothing pins them (None: a copy without a manifest; and rows
    # before 2026-12-08, whose data was checked at download only). lbam.data.verify.
    data_sha256: str | None = None
    data_verified: bool | None = None
    resumed: bool = False  # training continued from the checkpoint of an interrupted run
    # Compilation and sharing: what the speed figures mean.
    compiles: int | None = None  # torch.compile graph compilations during the run; None when not compiled
    recompile_limit_hit: bool = False  # dynamo gave up on a frame: part of the run ran eagerly
    world_size: int = 1  # processes that trained it (devices x nodes); images/s is summed over them
    concurrent_jobs: int = 1  # the launcher's n_jobs: up to this many runs shared the machine (and images/s)
    # The machine's 1-min load average, mean over the epoch ends of training, and its logical CPUs: a load above
    # what the run's own jobs explain means other work slowed it (None: not recorded, rows before 2026-12-07).
    load_average: float | None = None
    cpu_count: int | None = None
    # Provenance.
    device: str | None = None
    precision: str | None = None
    commit: str | None = None
    torch_version: str | None = None
    created_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Row)}
REQUIRED = tuple(name for name, f in FIELDS.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)  # fmt: skip
METRICS = ("test_acc", "test_balanced_acc", "test_macro_f1")
REQUIRED_OK = (*METRICS, "params", "attention_params", "macs", "flops", "n_train", "n_test", "train_seconds")
IDENTITY = ("config_hash", "split_hash", "predictions_sha256")
NAMES = ("experiment", "run_name", "dataset", "backbone", "attention", "placement")  # non-empty strings
MAX_ROW_BYTES = 16 * 2**20  # a real row is ~13 kB; a bigger file is not a row and is not parsed


def digest(obj: Any) -> str:
    """16 hex digits of the sha256 of ``obj`` as canonical JSON (sorted keys, no spaces): the fingerprint of a
    config or a split, the same in the runner, the checkpoint and the report."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _types(hint) -> tuple[type, ...]:
    """The JSON types a field's annotation admits (``int | None`` → (int,); ``dict[str, Any]`` → (dict,)); a float
    field takes an int too, and Any takes anything."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    out = tuple(typing.get_origin(a) or a for a in args if a is not type(None))
    return (object,) if typing.Any in out else out + ((int,) if float in out else ())


_TYPES = {name: _types(hint) for name, hint in typing.get_type_hints(Row).items()}


def row_problem(d: Any) -> str | None:
    """Why the parsed JSON ``d`` is not a valid row (one phrase), or None when it is."""
    if not isinstance(d, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        return f"missing keys {missing}"
    unknown = sorted(set(d) - set(FIELDS))
    if unknown:
        return f"unknown keys {unknown}"
    # A null where the report groups or names rows would make them vanish from its tables.
    null = [k for k in REQUIRED if d[k] is None]
    if null:
        return f"null in required keys {null}"
    if d["status"] not in STATUSES:
        return f"status {d['status']!r} is not one of {STATUSES}"
    if d["profile"] not in PROFILES:
        return f"profile {d['profile']!r} is not one of {PROFILES}"
    if d["status"] == "ok":
        missing = [k for k in REQUIRED_OK if d.get(k) is None]
        if missing:
            return f"an ok row needs {missing}"
    for key in (*METRICS, "val_acc"):
        value = d.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0
        ):
            return f"{key}={value!r} is not a fraction in [0, 1]"
    for key, admitted in _TYPES.items():
        value = d.get(key)
        if value is None:
            continue
        # bool is an int in Python: accept it only where a bool is meant.
        if not isinstance(value, admitted) or (isinstance(value, bool) and bool not in admitted):
            return f"{key}={value!r} is not {admitted[0].__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key}={value!r} is not finite"
    for key in NON_NEGATIVE:
        if isinstance(d.get(key), int | float) and not isinstance(d[key], bool) and d[key] < 0:
            return f"{key}={d[key]} is negative"
    if d.get("created_at") is not None and not _iso_time(d["created_at"]):
        return f"created_at={d['created_at']!r} is not an ISO 8601 time with its UTC offset"
    for i, entry in enumerate(d.get("history") or ()):
        if problem := _epoch_problem(entry):
            return f"history[{i}]: {problem}"
    for key in NAMES:
        if not d[key].strip():
            return f"{key}={d[key]!r} is empty"
    if d["image_size"] < 1 or d["width_mult"] <= 0:
        return f"image_size={d['image_size']!r}, width_mult={d['width_mult']!r}: both must be > 0"
    for key in ("overrides", "class_names"):
        if any(not isinstance(x, str) for x in d.get(key) or ()):
            return f"{key}={d[key]!r} is not a list of strings"
    if d["status"] == "ok" and d["n_test"] < 1:
        return f"n_test={d['n_test']}: an ok row has test samples"
    return None


# Counts, sizes, times and rates: never negative.
NON_NEGATIVE = ("params", "attention_params", "macs", "flops", "n_train", "n_val", "n_test", "seed", "epochs",
                "steps", "train_seconds", "compile_seconds", "images_per_second", "compiles", "load_average",
                "cpu_count", "world_size", "concurrent_jobs")  # fmt: skip


def _iso_time(text) -> bool:
    try:
        return isinstance(text, str) and dt.datetime.fromisoformat(text).utcoffset() is not None
    except ValueError:
        return False


def _epoch_problem(entry) -> str | None:
    """Why one history entry states an impossible number (a NaN or infinite value, a negative loss, time or
    count, an accuracy above 1); None when it does not. Entries that are not numbers are left to the readers,
    which skip them (the figures draw what they can)."""
    if not isinstance(entry, dict):
        return None
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value) or value < 0:
            return f"{key}={value!r} is not a finite number >= 0"
        if key in ("train_acc", "val_acc") and value > 1:
            return f"{key}={value!r} is not a fraction in [0, 1]"
    return None


def row_path(results_dir: str | Path, experiment: str, run_name: str) -> Path:
    """`<results_dir>/runs/<experiment>/<run_name>.json`."""
    return Path(results_dir) / "runs" / experiment / f"{run_name}.json"


def load_row(path: str | Path) -> Row:
    """The row at ``path``; RowError (naming the file and the problem) when it is unreadable or invalid."""
    path = Path(path)
    try:
        size = path.stat().st_size
        text = path.read_text(encoding="utf-8") if size <= MAX_ROW_BYTES else None
        d = None if text is None else json.loads(text)
    # ValueError: bad JSON, or an integer over Python's digit limit; RecursionError: nesting too deep to parse.
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else " ".join(str(e).split())[:200]
        raise RowError(f"{path}: unreadable row ({reason})") from None
    if text is None:
        raise RowError(f"{path}: {size} bytes, too big for a row (at most {MAX_ROW_BYTES}); remove the file")
    problem = row_problem(d)
    if problem:
        raise RowError(f"{path}: invalid row: {problem}")
    return Row(**d)


def predictions_path(row: Row, row_file: str | Path) -> Path:
    """The predictions file of ``row``, which lies beside its row file."""
    return Path(row_file).with_name(Path(row.predictions_file or f"{row.run_name}.preds.csv").name)


def read_predictions(row: Row, row_file: str | Path) -> list[tuple[str, int, int]]:
    """(id, target, pred) per test sample; RowError unless there are exactly ``n_test`` well-formed, unique
    lines whose labels are valid class indices."""
    path = predictions_path(row, row_file)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != ["id", "target", "pred"]:
                raise RowError(f"{path}: header {header} is not ['id', 'target', 'pred']")
            preds = [(i, int(t), int(p)) for i, t, p in reader]
    except OSError as e:
        raise RowError(f"{path}: unreadable predictions ({e})") from None
    except (ValueError, csv.Error) as e:  # a line of the wrong length, a non-integer label, a NUL byte
        raise RowError(f"{path}: malformed predictions line ({e})") from None
    if len(preds) != row.n_test:
        raise RowError(f"{path}: {len(preds)} predictions but the row says n_test={row.n_test}")
    if len({i for i, _, _ in preds}) != len(preds):
        raise RowError(f"{path}: duplicate sample ids")
    k = len(row.class_names)
    if k and any(not (0 <= t < k and 0 <= p < k) for _, t, p in preds):
        raise RowError(f"{path}: a label outside 0..{k - 1}")
    return preds


def write_row(row: Row, preds: list[tuple[str, int, int]] | None, results_dir: str | Path) -> Path:
    """Write ``row`` (validated) under ``results_dir`` and, if given, its predictions beside it; predictions go
    first, so a row never points at a missing file, and the row records their sha256. Returns the row's path."""
    path = row_path(results_dir, row.experiment, row.run_name)
    data = None
    if preds is not None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["id", "target", "pred"])
        writer.writerows(preds)
        data = buf.getvalue().encode("utf-8")
        row.predictions_sha256 = hashlib.sha256(data).hexdigest()
    d = row.to_dict()
    problem = row_problem(d)
    if problem:
        raise RowError(f"refusing to write an invalid row {row.run_name}: {problem}")
    if data is not None:
        atomic_write(predictions_path(row, path), data)
    atomic_write(path, json.dumps(d, indent=2) + "\n")
    return path


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD's sha with a `+dirty` suffix when tracked files other than results/ differ, or "unknown" outside git.

    results/ is left out: rerunning the committed code rewrites the committed rows, which is not a code change."""
    try:
        git = ["git", "-C", str(cwd or ".")]
        sha = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)results"],
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
