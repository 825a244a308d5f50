"""Attention maps of trained LBAM and BAM checkpoints, overlaid on test images."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F


def load_model_from_row(row: dict, repo_root: str | Path | None = None) -> torch.nn.Module:
    """Rebuild the row's model with lbam.models.build_backbone and load its Lightning checkpoint (eval mode).

    The checkpoint path in the row is relative to the runs' root (``paths.root_dir``: ``LBAM_ROOT``, else the
    working directory), which ``repo_root`` overrides. Its state_dict keys are the LightningModule's, i.e. the
    model's prefixed `model.`.
    """
    from lbam.models import build_backbone

    if not row.get("checkpoint"):
        raise FileNotFoundError(f"run {row.get('run_name')} has no checkpoint")
    model = build_backbone(
        row["backbone"],
        num_classes=int(row["num_classes"]),
        attention=row["attention"],
        attention_kwargs=dict(row["attention_kwargs"]),
        placement=row["placement"],
        width_mult=float(row["width_mult"]),
    )
    # Our own checkpoints; Lightning stores non-tensor hyperparameters, which weights_only=True rejects.
    root = Path(repo_root if repo_root is not None else os.environ.get("LBAM_ROOT", "."))
    ckpt = torch.load(root / row["checkpoint"], map_location="cpu", weights_only=False)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def collect_maps(
    model: torch.nn.Module, images: torch.Tensor, module_index: int = -1
) -> dict[str, torch.Tensor]:
    """Predictions and maps of one attention module: σ(spatial) N×H×W and the full map's channel mean N×H×W,
    both upsampled to the image size."""
    module = model.attention_modules[module_index]
    module.keep_maps = True
    try:
        logits = model(images)
        maps = module.last_maps
    finally:
        module.keep_maps = False
    size = images.shape[-2:]

    def up(m: torch.Tensor) -> torch.Tensor:
        return F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)[:, 0]

    return {
        "pred": logits.argmax(1),
        "spatial": up(torch.sigmoid(maps["spatial"])),
        "full": up(maps["attention"].mean(1, keepdim=True)),
    }


def select_per_class(batches, n_per_class: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n_per_class images of every class from (images, labels) batches, ordered by class."""
    picked: dict[int, list[torch.Tensor]] = {c: [] for c in range(num_classes)}
    for images, labels in batches:
        for img, lab in zip(images, labels.tolist()):
            if len(picked[lab]) < n_per_class:
                picked[lab].append(img)
        if all(len(v) == n_per_class for v in picked.values()):
            break
    labels = [c for c in range(num_classes) for _ in picked[c]]
    return torch.stack([img for c in range(num_classes) for img in picked[c]]), torch.tensor(labels)


def attention_map_figure(
    models: dict[str, torch.nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    mean,
    std,
    out_path: str | Path,
    title: str = "",
    module_index: int = -1,
) -> Path:
    """Rows = images; columns = image, then per model (e.g. LBAM, BAM) σ(spatial map) and mean-over-C full map
    overlaid on the image. images are normalised N×3×H×W; mean/std undo the normalisation for display."""
    outputs = {name: collect_maps(m, images, module_index) for name, m in models.items()}
    shown = (images * torch.as_tensor(std).view(1, -1, 1, 1) + torch.as_tensor(mean).view(1, -1, 1, 1)).clamp(
        0, 1
    )
    shown = shown.permute(0, 2, 3, 1).numpy()
    columns = [("image", None, None)]
    for n in models:
        columns += [(f"{n}: σ(spatial)", n, "spatial"), (f"{n}: full map (mean over C)", n, "full")]
    fig, axes = plt.subplots(
        len(images), len(columns), figsize=(2.4 * len(columns), 2.4 * len(images) + 0.8), squeeze=False
    )
    for i in range(len(images)):
        for j, (header, name, key) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(shown[i])
            if key is not None:
                m = outputs[name][key][i]
                lo, hi = float(m.min()), float(m.max())
                # Stretched per image so the layout shows; the raw range is printed below it.
                im = ax.imshow(
                    ((m - lo) / max(hi - lo, 1e-8)).numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1
                )
                pred = class_names[int(outputs[name]["pred"][i])]
                ax.set_xlabel(f"pred: {pred}\nweights {lo:.2f}–{hi:.2f}", fontsize=7)
            else:
                ax.set_ylabel(f"true: {class_names[int(labels[i])]}", fontsize=8)
            if i == 0:
                ax.set_title(header, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if len(columns) > 1:
        fig.colorbar(im, ax=axes, fraction=0.02, label="attention weight, min–max scaled per map")
    fig.suptitle(title or "attention maps", fontsize=10)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out_path


def datamodule_for_row(row: dict):
    """The row's datamodule, set up for testing: the run's own config (its overrides on top of its experiment,
    so experiment-level sizes and splits apply), hence the run's test split."""
    from hydra.utils import instantiate

    from lbam.train import compose_config

    dm = instantiate(compose_config(row.get("overrides") or []).dataset)
    dm.prepare_data()
    dm.setup("test")
    return dm


def experiment_attention_maps(
    rows: list[dict], experiment: str, results_dir: str | Path, n_per_class: int = 2, seed: int | None = None
) -> Path:
    """Figure of LBAM vs BAM maps for one experiment's checkpoints (default-setting runs, lowest seed)."""
    from lbam.report.rows import group_rows

    cands = [r for r in rows if r["experiment"] == experiment and r["status"] == "ok" and r.get("checkpoint")]
    picked = {}
    for group in group_rows(cands):
        runs = {}
        for name in ("lbam", "bam"):
            s = group.setting(name)
            runs[name] = [r for r in (s.ok if s else []) if seed is None or int(r["seed"]) == seed]
        if runs["lbam"] and runs["bam"]:
            picked = {name: r[0] for name, r in runs.items()}
            break
    if not picked:
        raise FileNotFoundError(
            f"experiment {experiment!r}: no group with checkpointed default-setting runs of both lbam and bam"
        )
    models = {name.upper(): load_model_from_row(row) for name, row in picked.items()}
    lbam_row = picked["lbam"]
    dm = datamodule_for_row(lbam_row)
    images, labels = select_per_class(dm.test_dataloader(), n_per_class, dm.num_classes)
    synthetic = " (SYNTHETIC)" if lbam_row["synthetic"] else ""
    title = (
        f"{experiment}: {lbam_row['dataset']}{synthetic} · profile {lbam_row['profile']} · seeds "
        f"LBAM {picked['lbam']['seed']}, BAM {picked['bam']['seed']} · last attention module"
    )
    out = Path(results_dir) / "figures" / f"{experiment}_attention_maps.png"
    return attention_map_figure(models, images, labels, dm.class_names, dm.mean, dm.std, out, title)
