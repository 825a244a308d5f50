"""Helpers of the report tests: crafted rows written through lbam.results, the CLI in-process, and declared
sweeps for made-up experiments (the report counts a row as official only where an experiment file declares it,
and test experiments have no file)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lbam.config import run_name
from lbam.metrics import classification_metrics, confusion_matrix
from lbam.report import declared, main
from lbam.results import Row, digest, write_row

CLASSES = ["WBC", "RBC", "Platelets"]
N = 60


def put(
    results: Path,
    attention="none",
    seed=0,
    wrong=(),
    overrides=(),
    experiment="exp",
    status="ok",
    ids=None,
    targets=None,
    n=N,
    **kw,
) -> Path:
    """Write one row and its predictions: sample i is predicted right unless i is in ``wrong``; the row's
    metrics are those of its predictions unless ``kw`` sets them."""
    overrides = sorted(overrides)
    targets = targets or [i % 3 for i in range(n)]
    ids = ids or [f"img{i // 4}#{i % 4}" for i in range(n)]
    preds = [(t + 1) % 3 if i in wrong else t for i, t in enumerate(targets)]
    m = classification_metrics(confusion_matrix(torch.tensor(targets), torch.tensor(preds), 3), CLASSES)
    row = Row(
        experiment=experiment, run_name=run_name(attention, overrides, seed), profile=kw.pop("profile", "quick"),
        seed=seed, overrides=overrides, dataset="bccd", synthetic=False, backbone="cnn4", attention=attention,
        attention_kwargs={}, placement="stage", width_mult=0.5, image_size=48, status=status, class_names=CLASSES,
        params=1000 + 10 * len(attention), attention_params=10 * len(attention), macs=500, flops=1000,
        n_train=200, n_test=len(targets), train_seconds=10.0, device=kw.pop("device", "cpu (2 threads, Test CPU)"),
        commit="abc123", created_at=kw.pop("created_at", "2026-01-01T00:00:00+00:00"), epochs=1, steps=10,
    )  # fmt: skip
    if status == "ok":
        for k in ("test_acc", "test_balanced_acc", "test_macro_f1", "per_class_acc", "confusion_matrix"):
            setattr(row, k, m[k])
    else:
        row.error = "RuntimeError: loss is nan"
    for k, v in kw.items():
        setattr(row, k, v)
    vouch(row)
    return write_row(row, list(zip(ids, targets, preds)) if status == "ok" else None, results)


def vouch(row: Row, split_hash: str = "0" * 16) -> Row:
    """Give a crafted row the identity the runner writes (the report refuses rows without it): a config that
    states the row's experiment, profile and seed, its digest, and a split digest."""
    if not row.config:
        row.config = {"experiment_name": row.experiment, "profile": row.profile, "seed": row.seed}
    row.config_hash = digest(row.config)
    row.split_hash = row.split_hash or split_hash
    return row


def edit(path: Path, **changes) -> Path:
    """Change keys of a written row file in place (what a hand edit does)."""
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, *needles) -> str:
    """stderr is one line, `lbam.report: error: …`, holding each of ``needles``; returns it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lbam.report: error:"), err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def declare(monkeypatch, experiment, params, grids=("",), settings=(), attention="lbam", seed=0) -> None:
    """Give the made-up ``experiment`` the sweep an experiment file would declare (hydra.sweeper.params as a
    dict, sweeps.grids, sweeps.settings, and the config's default attention and seed)."""
    previous = declared.sweep_config
    conf = {
        "params": [f"{k}={v}" for k, v in params.items()],
        "grids": list(grids),
        "settings": list(settings),
        "attention": attention,
        "seed": seed,
        "path": f"<declared in the test: {experiment}>",
    }
    monkeypatch.setattr(declared, "sweep_config", lambda name: conf if name == experiment else previous(name))
