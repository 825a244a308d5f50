"""The label audit: test crops whose label is doubtful, listed in results/label_audit/labels.csv (id, label,
reason; fixed before the runs it is applied to). The report repeats its analysis without them (the sensitivity
table); `python -m lbam.report label-audit` draws each crop in its smear, with the neighbouring boxes, into
results/label_audit/<id with # as _>.png from the real BCCD (skipped with one line when BCCD is absent)."""

from __future__ import annotations

import csv
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from PIL import Image

from lbam.report.rows import ReportError, Results

HEADER = ["id", "label", "reason"]
COLORS = {"WBC": "tab:blue", "RBC": "tab:red", "Platelets": "tab:green"}
INPUT_PX = 32  # the curve profile's input size: what the networks saw of the crop


def audit_file(results_dir: str | Path) -> Path:
    """The results folder's own list, else the reference's (your results/local tables use the committed list)."""
    from lbam.paths import reference_dir

    own = Path(results_dir) / "label_audit" / "labels.csv"
    return own if own.is_file() else reference_dir() / "label_audit" / "labels.csv"


def read_audit(results_dir: str | Path) -> dict[str, dict[str, str]]:
    """{id: {label, reason}} of the audit list; {} without one; a ReportError for a malformed one."""
    path = audit_file(results_dir)
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != HEADER:
                raise ReportError(f"{path}: header {header} is not {HEADER}")
            lines = [line for line in reader if line]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: unreadable label audit ({e})") from None
    bad = [n for n, line in enumerate(lines, 2) if len(line) != 3 or "#" not in line[0]]
    if bad:
        raise ReportError(f"{path}: line {bad[0]} is not 'image#box,label,reason'")
    return {i: {"label": label, "reason": reason} for i, label, reason in lines}


def audited_ids(res: Results, g: pd.DataFrame) -> set[str]:
    """The audited crops in the test set of group ``g`` (its runs share one test set, or cannot be paired)."""
    ok = g[g["status"] == "ok"]
    return set(read_audit(res.root)) & set(res.runs[int(ok["run"].iloc[0])].preds) if len(ok) else set()


def thumbnail_path(results_dir: str | Path, sample_id: str) -> Path:
    return Path(results_dir) / "label_audit" / f"{sample_id.replace('#', '_')}.png"


def _boxes(voc: Path, stem: str) -> list[tuple[str, tuple[float, float, float, float] | None]]:
    from lbam.data.bccd import parse_annotation  # the loader's own parser: the same box for the same id

    try:
        return parse_annotation(voc / "Annotations" / f"{stem}.xml")
    except (OSError, ET.ParseError) as e:
        raise ReportError(f"{voc}: cannot read the annotation of {stem} ({e})") from None


def draw(voc: Path, sample_id: str, entry: dict[str, str], out: Path) -> Path:
    """The crop in its smear (its box thick, every other box that reaches the window thin, coloured by class
    and numbered as in the sample ids), the crop at full size, and the crop at the networks' input size."""
    stem, _, k = sample_id.partition("#")
    objects = _boxes(voc, stem)
    if not k.isdigit() or int(k) >= len(objects) or objects[int(k)][1] is None:
        raise ReportError(f"{sample_id}: no box {k} in {stem}.xml")
    name, box = objects[int(k)]
    try:
        with Image.open(voc / "JPEGImages" / f"{stem}.jpg") as im:
            image = im.convert("RGB")
    except OSError as e:
        raise ReportError(f"{sample_id}: cannot read its image ({e})") from None
    x0, y0, x1, y1 = box
    pad = max(x1 - x0, y1 - y0)  # one box size of context on each side
    win = (max(0, x0 - pad), max(0, y0 - pad), min(image.width, x1 + pad), min(image.height, y1 + pad))
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.4), width_ratios=[2.2, 1, 1])
    axes[0].imshow(np.asarray(image.crop(tuple(map(round, win)))), extent=(win[0], win[2], win[3], win[1]))
    for i, (cls, b) in enumerate(objects):
        if b is None or b[2] < win[0] or b[0] > win[2] or b[3] < win[1] or b[1] > win[3]:
            continue
        own = i == int(k)
        color = COLORS.get(cls, "black")
        rect = Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color=color, lw=3 if own else 1)
        axes[0].add_patch(rect)
        at = (max(b[0], win[0]) + 2, max(b[1], win[1]) + 2)  # inside the window even when the box is not
        axes[0].text(*at, f"#{i} {cls}", color="white", fontsize=9 if own else 7, va="top", clip_on=True,
                     bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "lw": 0})  # fmt: skip
    axes[0].set(xlim=(win[0], win[2]), ylim=(win[3], win[1]), title="in its smear (px of the image)")
    crop = image.crop(tuple(map(round, box)))
    axes[1].imshow(np.asarray(crop))
    axes[1].set_title(f"the crop, {round(x1 - x0)}×{round(y1 - y0)} px")
    small = image.resize((INPUT_PX, INPUT_PX), Image.BILINEAR, box=box)  # as lbam.data.bccd cuts it
    axes[2].imshow(np.asarray(small), interpolation="nearest")
    axes[2].set_title(f"as the networks saw it ({INPUT_PX} px)")
    for ax in axes[1:]:
        ax.set(xticks=[], yticks=[])
    reason = textwrap.fill(f"{sample_id}, labelled {name}: {entry['reason']}", 130)
    fig.suptitle(reason, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return out


def write_thumbnails(results_dir: str | Path) -> list[Path]:
    """A thumbnail per audited crop; [] with one line when there is no list or no BCCD here."""
    from lbam.paths import data_root

    entries = read_audit(results_dir)
    voc = data_root(folder="BCCD") / "BCCD"
    if not entries:
        print(f"label audit skipped: no list at {audit_file(results_dir)}")
        return []
    if not (voc / "Annotations").is_dir():
        print(f"label audit thumbnails skipped: no BCCD at {voc} (set LBAM_DATA_DIR)")
        return []
    return [draw(voc, i, e, thumbnail_path(results_dir, i)) for i, e in entries.items()]
