"""Attention maps of trained LBAM and BAM checkpoints on test images (`python -m lbam.report attention-maps`),
taken where they have resolution: the first attention module (the highest-resolution stage), upsampled to the
image by nearest neighbour, every map on one colour scale with a colour bar.

A results folder may come from someone else, and its rows name a checkpoint and a datamodule: so a checkpoint
is loaded only from inside the experiments folder with ``torch.load(weights_only=True)`` (never arbitrary
objects) and only when it proves it is the row's (its identity, digest and finite weights, as the runner
checks before resuming), and the datamodule must be a LightningDataModule class of ``lbam.data``. A run whose
checkpoint is not here (a fresh clone) is skipped with one line; an unknown experiment is an error."""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from lbam.attention import capture_maps
from lbam.checkpoint import problem
from lbam.models import build_backbone
from lbam.paths import data_root, project_root
from lbam.report.rows import GROUP, ReportError, Results, Run

MAP_NAMES = {"image": "image", "spatial": "σ(spatial)", "full": "M, mean over C"}


def checkpoint_path(run: Run, experiments_dir: str | Path) -> Path | None:
    """The run's checkpoint, resolved inside ``experiments_dir``; None when absent, ReportError outside."""
    if not (ckpt := run.row.checkpoint):
        return None
    root = Path(experiments_dir).resolve()
    if not (path := (root / ckpt).resolve()).is_relative_to(root):
        raise ReportError(f"{run.path}: checkpoint {ckpt!r} lies outside {root}; not loading it")
    return path if path.is_file() else None


def load_model(run: Run, path: Path) -> torch.nn.Module:
    """The network of ``run`` from its checkpoint, once the checkpoint proves it is this run's, as the runner
    checks before resuming (``lbam.checkpoint.problem``): the row's name, config, split (and data) digests, the
    weights' own digest, finite values. Another seed's, another attention's or NaN weights are refused."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable, or refused by the weights-only unpickler
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ReportError(
            f"{path}: cannot load the checkpoint of run {run.row.run_name} ({reason})"
        ) from None
    row = run.row
    identity = {"run_name": row.run_name, "config_hash": row.config_hash, "split_hash": row.split_hash}
    identity |= {"data_sha256": row.data_sha256} if row.data_sha256 else {}
    if found := problem(ckpt, identity):
        raise ReportError(f"{path}: refusing to draw it as run {row.run_name} of {run.path}: it {found[1]}")
    try:
        model = build_backbone(**ckpt["hyper_parameters"]["model_kwargs"])
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
    except Exception as e:  # not this model's weights
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ReportError(
            f"{path}: cannot load the checkpoint of run {run.row.run_name} ({reason})"
        ) from None
    return model.eval()


def build_datamodule(run: Run):
    """The row's datamodule set up for its test split; the data folder by the project's rule (``lbam.paths``:
    LBAM_DATA_DIR, ../shared/data, data/), the cache in LBAM_CACHE_DIR or <root>/data/.cache."""
    from pytorch_lightning import LightningDataModule

    if not run.row.datamodule:
        raise ReportError(f"{run.path}: the row records no datamodule to rebuild its test split; rerun it")
    spec = dict(run.row.datamodule)
    target = str(spec.pop("_target_", ""))
    module, _, name = target.rpartition(".")
    cls = None
    if f"{module}.".startswith("lbam.data."):  # import nothing else
        with contextlib.suppress(ImportError):
            cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, LightningDataModule)):
        raise ReportError(
            f"{run.path}: datamodule _target_ {target!r} is not a LightningDataModule of lbam.data"
        )
    spec["root"] = str(data_root(folder=getattr(cls, "folder", None)))
    spec["cache_dir"] = os.environ.get("LBAM_CACHE_DIR", str(project_root() / "data" / ".cache"))
    try:
        dm = cls(**spec)
        dm.prepare_data()
        dm.setup("test")
    except (OSError, RuntimeError, ValueError, TypeError) as e:
        raise ReportError(f"{run.path}: cannot rebuild its test data ({e}); set LBAM_DATA_DIR") from None
    return dm


@torch.no_grad()
def capture(model: torch.nn.Module, images: torch.Tensor, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The predictions and, from the same forward (``lbam.attention.capture_maps``), the map M of ``module``
    (its ``gate``) averaged over channels and σ(spatial logits) of its spatial branch, N×H×W at image size by
    nearest-neighbour upsampling (each map cell a block of pixels: no smoothing that invents structure); "hw":
    the maps' own resolution."""
    with capture_maps(module) as found:
        logits = model(images)
    maps = {"full": found["gate"].mean(1, keepdim=True)}
    if "spatial" in found:
        maps["spatial"] = torch.sigmoid(found["spatial"])
    size = images.shape[-2:]
    up = {k: F.interpolate(v, size=size, mode="nearest")[:, 0] for k, v in maps.items()}
    return {"pred": logits.argmax(1), "hw": torch.tensor(maps["full"].shape[-2:]), **up}


def figure(models: dict, dm, n_per_class: int, out: Path, title: str) -> Path:
    """Rows = the first ``n_per_class`` test images of each class (from the first batches); columns = the
    image, then per model σ(spatial) and M (mean over C) of its first attention module (the highest-resolution
    stage), all maps on one colour scale (the range of every map shown) with its colour bar."""
    # The loaders give uint8 batches (or indices); the datamodule's own transform makes the model's input.
    batches = [dm.transform(b, train=False) for b in itertools.islice(dm.test_dataloader(), 8)]
    images, labels = map(torch.cat, zip(*batches))
    pick = torch.cat([torch.nonzero(labels == c).flatten()[:n_per_class] for c in range(len(dm.class_names))])
    images, labels = images[pick], labels[pick]
    maps = {name: capture(m, images, m.attention_modules[0]) for name, m in models.items()}
    shown = images * torch.tensor(dm.std).view(1, -1, 1, 1) + torch.tensor(dm.mean).view(1, -1, 1, 1)
    cols = [(None, "image")] + [(n, k) for n in models for k in ("spatial", "full") if k in maps[n]]
    lo = min(float(maps[n][k].min()) for n, k in cols[1:])
    hi = max(max(float(maps[n][k].max()) for n, k in cols[1:]), lo + 1e-6)
    size = (2.3 * len(cols) + 0.8, 2.3 * len(images) + 1)
    fig, axes = plt.subplots(len(images), len(cols), figsize=size, squeeze=False)
    for (i, j), ax in np.ndenumerate(axes):
        name, key = cols[j]
        ax.set(xticks=[], yticks=[])
        if i == 0:
            ax.set_title(f"{name or ''}\n{MAP_NAMES[key]}", fontsize=9)
        if name is None:
            ax.imshow(shown[i].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_ylabel(f"true: {dm.class_names[int(labels[i])]}", fontsize=8)
            continue
        img = ax.imshow(maps[name][key][i].numpy(), cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        if key == "full":
            ax.set_xlabel(f"pred {dm.class_names[int(maps[name]['pred'][i])]}", fontsize=7)
    fig.colorbar(img, ax=axes, shrink=0.6, label="attention weight (one scale for every map)")
    h, w = (int(v) for v in next(iter(maps.values()))["hw"])
    fig.suptitle(f"{title}\nfirst attention module: {h}×{w} maps, nearest-neighbour upsampled", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return out


def attention_maps(
    res: Results, experiment: str, experiments_dir: str | Path, n_per_class: int = 2, seed: int | None = None
) -> Path | None:
    """LBAM vs BAM maps of ``experiment`` (default settings, same context and seed; the whole training split
    and the lowest seed first), or None, with one line, when no such pair has both checkpoints here."""
    if experiment not in set(res.frame["experiment"]):
        known = ", ".join(sorted(set(res.frame["experiment"]))) or "none"
        raise ReportError(
            f"no official runs of experiment {experiment!r} in {res.root} (experiments: {known})"
        )
    ok = res.frame.query("experiment == @experiment and status == 'ok'")
    ok = ok if seed is None else ok[ok["seed"] == seed]
    keys = [*GROUP, "context", "seed"]
    both = ok[ok["setting"] == "lbam"].merge(ok[ok["setting"] == "bam"], on=keys, suffixes=("", "_bam"))
    both = both.sort_values(["whole", "x", "seed"], ascending=[False, False, True], kind="stable")
    for r in both.itertuples():
        lbam, bam = res.runs[r.run], res.runs[r.run_bam]
        paths = [checkpoint_path(lbam, experiments_dir), checkpoint_path(bam, experiments_dir)]
        if None not in paths:
            models = {"LBAM": load_model(lbam, paths[0]), "BAM": load_model(bam, paths[1])}
            what = f"{experiment} · {r.shown or 'default'} · seed {r.seed}"
            out = res.root / "figures" / f"{experiment}_attention_maps.png"
            return figure(models, build_datamodule(lbam), n_per_class, out, what)
    print(
        f"attention maps of {experiment} skipped: no LBAM/BAM pair with both checkpoints in {experiments_dir}"
    )
    return None
