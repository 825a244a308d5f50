"""Load result rows from results/runs/**.json, validate them and group them for reporting."""

from __future__ import annotations

import inspect
import json
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lbam.attention import ATTENTIONS
from lbam.train import relevant_overrides

# Keys every row must have, and the extra ones an "ok" row needs to be reported.
REQUIRED = (
    "experiment",
    "run_name",
    "dataset",
    "synthetic",
    "backbone",
    "attention",
    "attention_kwargs",
    "placement",
    "width_mult",
    "image_size",
    "seed",
    "profile",
    "device",
    "status",
)
REQUIRED_OK = (
    "test_acc",
    "test_balanced_acc",
    "test_macro_f1",
    "params",
    "attention_params",
    "macs",
    "flops",
    "images_per_second",
    "train_seconds",
)
ATTENTION_ORDER = tuple(ATTENTIONS)  # none se cbam bam eca lbam
DEFAULT_PLACEMENT = "stage"


class ReportWarning(UserWarning):
    """A result file was skipped or a value could not be used."""


class NoResultsError(RuntimeError):
    """No usable result rows were found."""


def device_kind(device: str) -> str:
    """'cpu (2 threads, …)' -> 'cpu', 'cuda: NVIDIA H100' -> 'cuda'."""
    return str(device).split(":")[0].split("(")[0].strip().split(" ")[0].lower() or "unknown"


def _problem(row) -> str | None:
    """Why a parsed JSON value is not a usable row, or None when it is."""
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        return f"missing keys {missing}"
    if row["status"] not in ("ok", "failed"):
        return f"status {row['status']!r} is neither 'ok' nor 'failed'"
    if not isinstance(row["attention_kwargs"], dict):
        return "attention_kwargs is not an object"
    if row["status"] == "ok":
        missing = [k for k in REQUIRED_OK if k not in row]
        if missing:
            return f"ok row missing keys {missing}"
        bad = [
            k
            for k in REQUIRED_OK
            if not isinstance(row[k], (int, float)) or isinstance(row[k], bool) or not math.isfinite(row[k])
        ]
        if bad:
            return f"non-numeric values for {bad}"
    return None


def load_rows(results_dir: str | Path) -> list[dict]:
    """All usable rows under results_dir/runs, sorted; bad files are skipped with a ReportWarning.

    Each row gets a private `_path` (its JSON file). Raises NoResultsError when nothing usable is found.
    """
    runs = Path(results_dir) / "runs"
    rows = []
    for path in sorted(runs.glob("**/*.json")):
        try:
            row = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping {path}: unreadable JSON ({err})", ReportWarning, stacklevel=2)
            continue
        problem = _problem(row)
        if problem:
            warnings.warn(f"skipping {path}: {problem}", ReportWarning, stacklevel=2)
            continue
        row["_path"] = path
        rows.append(row)
    if not rows:
        raise NoResultsError(
            f"no usable result rows under {runs} (expected results/runs/<experiment>/<run>.json; "
            "produce them with `make quick` or `python -m lbam.train`)"
        )
    return rows


def attention_defaults(attention: str) -> dict:
    """Constructor defaults of an attention module."""
    cls = ATTENTIONS.get(attention)
    if cls is None:
        return {}
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _other_overrides(row: dict) -> tuple[str, ...]:
    """The run's overrides beyond its attention options and placement (e.g. ``optimizer.lr=0.1``), sorted:
    the same rule that names runs (``lbam.train.relevant_overrides``), so two runs that differ in anything but
    the seed are never merged into one table row."""
    kept = relevant_overrides(row.get("overrides") or [])
    return tuple(o for o in kept if not o.startswith(("attention.", "backbone.placement=")))


def setting_of(row: dict) -> tuple[str, str, str, tuple[str, ...]]:
    """(attention, non-default kwargs as sorted JSON, placement, other overrides): a table row's identity."""
    defaults = attention_defaults(row["attention"])
    diff = {k: v for k, v in row["attention_kwargs"].items() if k not in defaults or defaults[k] != v}
    return row["attention"], json.dumps(diff, sort_keys=True), str(row["placement"]), _other_overrides(row)


def setting_label(setting: tuple) -> str:
    """Readable label, e.g. 'lbam' or 'lbam (kernel_size=3, placement=block, optimizer.lr=0.1)'."""
    attention, diff_json, placement, *other = setting
    parts = [
        f"{k}={json.dumps(v)}" if isinstance(v, str) else f"{k}={v}" for k, v in json.loads(diff_json).items()
    ]
    if placement != DEFAULT_PLACEMENT:
        parts.append(f"placement={placement}")
    parts += [o for group in other for o in group]
    return f"{attention} ({', '.join(parts)})" if parts else attention


def _is_default(setting: tuple) -> bool:
    return setting[1] == "{}" and setting[2] == DEFAULT_PLACEMENT and not any(setting[3:])


def setting_sort_key(setting: tuple):
    attention = setting[0]
    rank = ATTENTION_ORDER.index(attention) if attention in ATTENTION_ORDER else len(ATTENTION_ORDER)
    return rank, attention, not _is_default(setting), setting_label(setting)


@dataclass
class Setting:
    """One table row: the ok rows (one per seed) and the failed rows of one attention setting."""

    key: tuple
    ok: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return setting_label(self.key)

    @property
    def attention(self) -> str:
        return self.key[0]

    @property
    def is_default(self) -> bool:
        return _is_default(self.key)


@dataclass
class Group:
    """Rows that may be compared: same experiment, dataset, profile, device kind, backbone and sizes."""

    experiment: str
    dataset: str
    synthetic: bool
    profile: str
    device_kind: str
    backbone: str
    image_size: int
    width_mult: float
    settings: list[Setting]

    @property
    def rows(self) -> list[dict]:
        return [r for s in self.settings for r in s.ok + s.failed]

    @property
    def ok_rows(self) -> list[dict]:
        return [r for s in self.settings for r in s.ok]

    @property
    def devices(self) -> list[str]:
        return sorted({str(r["device"]) for r in self.rows})

    @property
    def seeds(self) -> list[int]:
        return sorted({int(r["seed"]) for r in self.ok_rows})

    @property
    def dataset_label(self) -> str:
        return f"{self.dataset} (SYNTHETIC)" if self.synthetic else self.dataset

    def title(self) -> str:
        return (
            f"{self.experiment}: {self.dataset_label} · profile {self.profile} · {self.device_kind} · "
            f"{self.backbone} {self.image_size}px ×{self.width_mult:g}"
        )

    def setting(self, attention: str) -> Setting | None:
        """The default-setting row of an attention in this group (e.g. 'none'), if present."""
        return next((s for s in self.settings if s.attention == attention and s.is_default), None)


def _group_key(row: dict) -> tuple:
    return (
        str(row["experiment"]),
        str(row["dataset"]),
        bool(row["synthetic"]),
        str(row["profile"]),
        device_kind(row["device"]),
        str(row["backbone"]),
        int(row["image_size"]),
        float(row["width_mult"]),
    )


def group_rows(rows: list[dict]) -> list[Group]:
    """Group rows (never mixing profiles, datasets, devices, backbones or sizes), sorted deterministically.

    If one setting has several ok rows for the same seed, only the newest (created_at, run_name) is kept,
    with a warning, so that a rerun is not counted as an extra seed.
    """
    by_group: dict[tuple, dict[tuple, Setting]] = defaultdict(dict)
    for row in rows:
        key = setting_of(row)
        settings = by_group[_group_key(row)]
        setting = settings.setdefault(key, Setting(key))
        (setting.ok if row["status"] == "ok" else setting.failed).append(row)
    groups = []
    for gkey in sorted(by_group, key=lambda k: tuple(str(x) for x in k)):
        settings = [by_group[gkey][k] for k in sorted(by_group[gkey], key=setting_sort_key)]
        for s in settings:
            s.ok = _dedupe_seeds(s.ok)
            s.ok.sort(key=lambda r: int(r["seed"]))
            s.failed.sort(key=lambda r: (int(r["seed"]), str(r["run_name"])))
        groups.append(Group(*gkey, settings=settings))
    return groups


def _dedupe_seeds(rows: list[dict]) -> list[dict]:
    newest: dict[int, dict] = {}
    for row in sorted(rows, key=lambda r: (str(r.get("created_at", "")), str(r["run_name"]))):
        seed = int(row["seed"])
        if seed in newest:
            warnings.warn(
                f"{row['_path']}: seed {seed} of {setting_label(setting_of(row))} already reported by "
                f"{newest[seed]['_path']}; keeping the newer row only",
                ReportWarning,
                stacklevel=3,
            )
        newest[seed] = row
    return list(newest.values())


def groups_by_experiment(groups: list[Group]) -> dict[str, list[Group]]:
    out: dict[str, list[Group]] = defaultdict(list)
    for g in groups:
        out[g.experiment].append(g)
    return dict(sorted(out.items()))


def group_slug(group: Group, siblings: list[Group]) -> str:
    """Filename part that tells a group apart from the other groups of its experiment ('' if alone)."""
    if len(siblings) <= 1:
        return ""
    fields = {
        "dataset": lambda g: g.dataset + ("-synthetic" if g.synthetic else ""),
        "profile": lambda g: g.profile,
        "device": lambda g: g.device_kind,
        "backbone": lambda g: g.backbone,
        "size": lambda g: f"{g.image_size}px",
        "width": lambda g: f"w{g.width_mult:g}",
    }
    varying = [f for f in fields.values() if len({f(s) for s in siblings}) > 1]
    return "_".join(f(group) for f in varying)
