"""BCCD blood-cell crops (embodiment 1): every VOC bounding box becomes one WBC/RBC/Platelets sample."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from lbam.data import download
from lbam.data.base import DataError, DataModule, Index, decode_images

# GitHub archive of Shenggan/BCCD_Dataset (MIT) pinned to one commit so the content never drifts. Its sha256
# could not be computed offline when this was written, so the download is checked by structure instead (364
# annotated images); set BCCD_SHA256 once known and the digest is verified as well.
BCCD_COMMIT = "d272fb14cdff6e473fafeeeba32aba5f560e9e43"
BCCD_URL = f"https://github.com/Shenggan/BCCD_Dataset/archive/{BCCD_COMMIT}.zip"
BCCD_SHA256: str | None = None
BCCD_IMAGES = 364

CLASS_NAMES = ("WBC", "RBC", "Platelets")
# Two boxes of one label in one image overlapping this much are the same cell annotated twice.
DUPLICATE_IOU = 0.9


def parse_annotation(xml_file: Path) -> list[tuple[str, tuple[float, float, float, float] | None]]:
    """(class name, (xmin, ymin, xmax, ymax) or None without a complete numeric <bndbox>) per object.

    Names are stripped of surrounding whitespace; raises ``ET.ParseError`` for malformed XML."""
    objects = []
    for obj in ET.parse(xml_file).getroot().iter("object"):
        try:
            box = obj.find("bndbox")
            coords = tuple(float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):  # no <bndbox>, a missing or non-numeric coordinate
            coords = None
        objects.append((obj.findtext("name", "").strip(), coords))
    return objects


def iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def index_voc(voc_dir: Path) -> Index:
    """Every usable box of a VOC folder, from the XMLs and the JPEG headers only (no pixel decoded).

    Skipped with a reason: a malformed XML, a missing or unreadable image (whole file), an object without a
    box, a box empty after clipping to the image. An unknown class name is a DataError (another dataset).
    Near-duplicates (same label, IoU > :data:`DUPLICATE_IOU` with an earlier box) are listed, not removed.
    """
    ids, labels, boxes, skipped, duplicates = [], [], [], [], []
    xml_files = sorted((voc_dir / "Annotations").glob("*.xml"))
    for xml_file in xml_files:
        stem, jpg = xml_file.stem, voc_dir / "JPEGImages" / f"{xml_file.stem}.jpg"
        try:
            objects = parse_annotation(xml_file)
            with Image.open(jpg) as im:  # reads the header only
                w, h = im.size
        except ET.ParseError as e:
            skipped.append({"id": stem, "reason": f"malformed {xml_file.name}: {e}"})
            continue
        except FileNotFoundError:
            skipped.append({"id": stem, "reason": f"{xml_file.name} names a missing image {jpg.name}"})
            continue
        except OSError as e:  # PIL.UnidentifiedImageError (e.g. zero bytes) and other read errors
            skipped.append({"id": stem, "reason": f"unreadable {jpg.name}: {type(e).__name__}: {e}"})
            continue
        first = len(ids)  # this image's boxes start here
        for i, (name, coords) in enumerate(objects):
            if name not in CLASS_NAMES:
                raise DataError(
                    f"{xml_file}: unknown class {name!r} (expected one of {', '.join(CLASS_NAMES)}); this is "
                    "not the BCCD dataset: point LBAM_DATA_DIR at the folder holding the original BCCD/"
                )
            sid, label = f"{stem}#{i}", CLASS_NAMES.index(name)
            if coords is None:
                skipped.append({"id": sid, "reason": "object without a complete <bndbox>"})
                continue
            box = (max(0.0, coords[0]), max(0.0, coords[1]), min(w, coords[2]), min(h, coords[3]))
            if box[2] <= box[0] or box[3] <= box[1]:
                skipped.append({"id": sid, "reason": "empty box after clipping to the image"})
                continue
            for k in range(first, len(ids)):
                if labels[k] == label and (overlap := iou(box, boxes[k])) > DUPLICATE_IOU:
                    duplicates.append({"id": sid, "of": ids[k], "iou": round(overlap, 3)})
                    break
            ids.append(sid)
            labels.append(label)
            boxes.append(box)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return Index(ids, np.asarray(labels, dtype=np.int64), len(xml_files), boxes, skipped, duplicates)


def crop_boxes(voc_dir: Path, index: Index, side: int) -> dict:
    """Decode each indexed image once and cut its boxes, resized to ``side``²."""

    def crops(path: Path, ks: list[int]) -> list[Image.Image]:
        with Image.open(path) as im:
            im = im.convert("RGB")  # forces the decode inside the try: PIL reads pixels lazily
        return [im.resize((side, side), Image.BILINEAR, box=tuple(index.boxes[k])) for k in ks]

    return decode_images(index, voc_dir / "JPEGImages", crops, side)


def pick_voc(staging: Path) -> Path:
    """The VOC folder of the extracted GitHub archive (BCCD_Dataset-<commit>/BCCD/); OSError if incomplete."""
    found = sorted(staging.glob("*/BCCD"))
    if len(found) != 1:
        raise OSError(f"BCCD archive layout unexpected: {[p.relative_to(staging).as_posix() for p in found]}")
    n_xml, n_jpg = (len(list(found[0].glob(p))) for p in ("Annotations/*.xml", "JPEGImages/*.jpg"))
    if n_xml != BCCD_IMAGES or n_jpg != BCCD_IMAGES:
        raise OSError(
            f"BCCD archive incomplete: {n_xml} annotations, {n_jpg} images (expected {BCCD_IMAGES})"
        )
    return found[0]


class BCCDDataModule(DataModule):
    """BCCD cell crops, 3 classes; by default split by source image, ~4000 train crops / the rest test.

    ``split_by="crop"`` is the per-crop stratified split (the patent's literal "4000 / 1000 images"), which
    puts crops of one smear on both sides. ``drop_duplicates`` removes boxes that repeat an earlier box of
    the same image and label (IoU > 0.9): the same cell annotated twice (7 RBC boxes in the public data).
    """

    name = "bccd"
    classes = CLASS_NAMES
    urls = (BCCD_URL,)
    flips = (-1, -2)  # cells have no orientation: both flips are label-preserving
    folder = "BCCD"
    required = ("Annotations", "JPEGImages")
    fingerprinted = ("Annotations/*.xml", "JPEGImages/*.jpg")
    _index = staticmethod(index_voc)
    _decode = staticmethod(crop_boxes)

    def __init__(self, root="data", image_size: int = 128, train_size: int | float = 4000, **kwargs):
        super().__init__(root=root, image_size=image_size, train_size=train_size, **kwargs)

    def _fetch(self) -> None:
        download.install(self.name, [download.Source(BCCD_URL, BCCD_SHA256)], self.dataset_dir(), pick_voc)
