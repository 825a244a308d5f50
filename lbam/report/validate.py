"""What the report checks in each row beyond the schema (``lbam.results.row_problem``), so that it trusts no
number it can recompute: where the row lives, what it claims to be (its config and predictions digests, its
name), the fields the tables group and plot by, its analysis settings, and every metric, recomputed from its
predictions with ``lbam.metrics``. A failure is a RowError naming the file, the field, the stored and the
expected value.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import torch

from lbam.config import relevant_overrides, run_name
from lbam.metrics import classification_metrics, confusion_matrix
from lbam.results import METRICS, Row, RowError, digest, predictions_path, read_predictions

# A row without its config, config digest, split digest or (ok rows) predictions digest is refused: every
# committed row is written by a runner that records them.
REQUIRE_IDENTITY = True
# Float noise between the runner's float64 metrics and ours; anything more is a changed number.
TOLERANCE = 1e-9
NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Row field -> where its config states it: a row must agree with the config its config_hash vouches for.
FROM_CONFIG = {
    "experiment": "experiment_name",
    "profile": "profile",
    "seed": "seed",
    "attention": "attention.name",
    "backbone": "backbone.name",
    "width_mult": "backbone.width_mult",
    "image_size": "dataset.image_size",
    "analysis": "analysis",
}


def _num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_place(row: Row, path: Path) -> None:
    """A row lives at runs/<experiment>/<run_name>.json: a copy under another name or folder is refused."""
    if path.parent.name != row.experiment or path.name != f"{row.run_name}.json":
        raise RowError(
            f"{path}: the row says experiment={row.experiment!r}, run_name={row.run_name!r}, so it belongs at "
            f"runs/{row.experiment}/{row.run_name}.json (move it there or remove this copy)"
        )


def check_fields(row: Row, path: Path) -> None:
    """The fields the report groups, names and plots by: present, of their type and canonical."""
    if not isinstance(row.device, str) or not row.device.strip():
        raise RowError(f"{path}: device={row.device!r} must name the machine, e.g. 'cpu (2 threads, …)'")
    for key in ("experiment", "attention", "dataset", "backbone"):
        if not NAME.fullmatch(getattr(row, key)):
            raise RowError(f"{path}: {key}={getattr(row, key)!r} must be a name of letters, digits, _ . -")
    bare = [o for o in row.overrides if "=" not in o and not o.startswith("~")]
    canonical = relevant_overrides(row.overrides)
    if bare or canonical != row.overrides:
        raise RowError(
            f"{path}: overrides={row.overrides} are not the run's key=value overrides as the runner writes them "
            f"(lbam.config.relevant_overrides: {canonical})"
        )
    if row.status == "ok" and (not row.class_names or len(set(row.class_names)) != len(row.class_names)):
        raise RowError(f"{path}: class_names={row.class_names} must name each class once")
    check_analysis(row.analysis, path)


def check_analysis(a: dict, path: Path) -> None:
    """alpha and the non-inferiority margin in (0, 1), curve null or an override key (those present)."""
    for key in ("alpha", "noninferiority_margin"):
        if key in a and not (_num(a[key]) and 0 < a[key] < 1):
            raise RowError(f"{path}: analysis.{key}={a[key]!r} must be a number in (0, 1)")
    curve = a.get("curve")
    if curve is not None and not (isinstance(curve, str) and curve.strip()):
        raise RowError(f"{path}: analysis.curve={curve!r} must be null or an override key")


def _select(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return KeyError
        node = node[part]
    return node


def check_identity(row: Row, path: Path) -> None:
    """config_hash is the digest of config, the row's fields agree with that config, and its name is the one
    the runner gives it; all required once REQUIRE_IDENTITY is set."""
    if REQUIRE_IDENTITY:
        needed = ["config_hash", "split_hash"] + (["predictions_sha256"] if row.status == "ok" else [])
        missing = [k for k in needed if getattr(row, k) is None] + ([] if row.config else ["config"])
        if missing:
            raise RowError(f"{path}: the row lacks {missing}; rerun it with the current runner")
    if row.config_hash is None and not row.config:
        return
    try:
        actual = digest(row.config)
    except (RecursionError, ValueError):
        raise RowError(f"{path}: config is nested too deeply to be a config") from None
    if actual != row.config_hash:
        raise RowError(f"{path}: config_hash={row.config_hash!r} but its config digests to {actual!r}")
    for field, key in FROM_CONFIG.items():
        stated = _select(row.config, key)
        if stated is not KeyError and stated != getattr(row, field):
            raise RowError(f"{path}: {field}={getattr(row, field)!r} but its config says {key}={stated!r}")
    check_overrides(row, path)
    expected = run_name(row.attention, row.overrides, row.seed)
    if row.run_name != expected:
        raise RowError(
            f"{path}: run_name={row.run_name!r} but its attention, overrides and seed give {expected!r}"
        )


def check_overrides(row: Row, path: Path) -> None:
    """Each ``key=value`` override the row names it by agrees with the config its config_hash vouches for (a row
    whose config says lr = 1e-3 but whose overrides claim optimizer.lr=0.5 was reported as an lr = 0.5 run);
    keys its config does not state (a group choice, a key outside the identity config) are not compared, except
    ``profile``, which the row states itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for o in row.overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        stated = row.profile if key == "profile" else _select(row.config, key) if "." in key else KeyError
        if stated is KeyError:
            continue
        try:
            value = parser.parse_override(o).value()
        except Exception:  # any parse failure: not an override Hydra would take
            raise RowError(f"{path}: override {o!r} is not a Hydra override") from None
        if value != stated or isinstance(value, bool) != isinstance(stated, bool):
            raise RowError(f"{path}: its override {o} but its config says {key}={stated!r}")


def data_note(rows: list[Row]) -> str | None:
    """A row trained on data that differs from its pinned content (``dataset.verify=false``) is flagged wherever
    its numbers are shown; None when there is none."""
    odd = [r for r in rows if r.data_verified is False]
    if not odd:
        return None
    return (
        f"{len(odd)} run(s) trained on data that differs from its pinned content (dataset.verify=false), e.g. "
        f"{odd[0].experiment}/{odd[0].run_name}"
    )


def commit_label(commit: str | None) -> str:
    """A commit as the report shows it: 12 digits, and ``+dirty`` when the row says the tree had changes."""
    commit = commit or "unknown"
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def _differs(stored, computed) -> bool:
    if computed is None or stored is None:
        return stored is not computed
    return not _num(stored) or abs(stored - computed) > TOLERANCE


def recompute(row: Row, path: Path) -> tuple[dict[str, tuple[int, int]], dict]:
    """(sample id -> (target, pred), the metrics recomputed from them) of an ok row, after checking the
    predictions file against its digest and every stored metric against the recomputed one."""
    preds = read_predictions(row, path)
    file = predictions_path(row, path)
    if row.predictions_sha256 is not None:
        actual = hashlib.sha256(file.read_bytes()).hexdigest()
        if actual != row.predictions_sha256:
            raise RowError(
                f"{file}: sha256 {actual[:16]}… but its row says predictions_sha256="
                f"{row.predictions_sha256[:16]}…: the predictions changed after the run"
            )
    _, targets, predicted = zip(*preds)
    cm = confusion_matrix(torch.tensor(targets), torch.tensor(predicted), len(row.class_names))
    m = classification_metrics(cm, row.class_names)
    stale = [(k, getattr(row, k), m[k]) for k in METRICS if _differs(getattr(row, k), m[k])]
    if row.per_class_acc is not None:
        got, want = row.per_class_acc, m["per_class_acc"]
        pairs = [(f"per_class_acc[{c!r}]", got.get(c), want.get(c)) for c in sorted(set(got) | set(want))]
        stale += [p for p in pairs if _differs(p[1], p[2])]
    if row.confusion_matrix is not None and row.confusion_matrix != m["confusion_matrix"]:
        stale.append(("confusion_matrix", row.confusion_matrix, m["confusion_matrix"]))
    if stale:
        key, stored, computed = stale[0]
        raise RowError(
            f"{path}: {key}={stored!r} but its predictions give {computed!r} (the report recomputes every "
            "metric; restore the row or rerun it)"
        )
    return {i: (t, p) for i, t, p in preds}, m
