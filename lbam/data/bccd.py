"""BCCD blood-cell crops (embodiment 1): every VOC bounding box becomes one WBC/RBC/Platelets sample."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from lbam.data import download, manifest
from lbam.data.base import DataModule
from lbam.data.errors import DataError
from lbam.data.index import UNREADABLE, Index, decode_images, reason

# GitHub archive of Shenggan/BCCD_Dataset (MIT) pinned to one commit so the content never drifts. No digest of
# the archive is published, and GitHub builds these zips on the fly (their bytes have changed before while the
# files did not), so the archive itself stays unchecked (BCCD_SHA256 = None) and the *content* is pinned instead:
# BCCD_CONTENT_SHA256 is content_digest() of the extracted BCCD/ folder, computed from a copy of the same public
# data (its BloodImage_00000.jpg has the sha256 other projects record for this commit, e1dcc488...). It is checked
# after extraction, before the folder is renamed into place.
BCCD_COMMIT = "d272fb14cdff6e473fafeeeba32aba5f560e9e43"
BCCD_URL = f"https://github.com/Shenggan/BCCD_Dataset/archive/{BCCD_COMMIT}.zip"
BCCD_SHA256: str | None = None
BCCD_CONTENT_SHA256 = "939586f3279bbd01cf278892f4601ef59d9d6665330d1f8f0eb65d6e6cb3c052"
# The per-file digests behind it (`sha256sum -c` format), so that a difference names its files; lbam.data.verify
# checks the extracted content against them before every run.
BCCD_MANIFEST = Path(__file__).with_name("BCCD.sha256")
# digest of the test ids (lbam.results.digest) per (split_by, split_seed, train_size, test_size, drop_duplicates):
# the default by-smear split (878 crops of 64 images) and the per-crop one, as the committed rows used them.
BCCD_TEST_SPLITS = {
    ("image", 0, 4000, None, True): "ef5224e56839b489",
    ("crop", 0, 4000, None, True): "13ed1330cec53eee",
}
BCCD_IMAGES = 364
BCCD_MAX_BYTES = 2 << 30  # extraction writes at most this much (the archive holds ~10 MB): no zip bomb
CONTENT = ("Annotations/*.xml", "JPEGImages/*.jpg")

CLASS_NAMES = ("WBC", "RBC", "Platelets")
# Two boxes of one label in one image overlapping this much are the same cell annotated twice.
DUPLICATE_IOU = 0.9
# A box may reach this far past the image border (an annotator's rounding) and is clipped; a box reaching further
# (e.g. a coordinate of 1e30) is not a box of this image and is skipped. The real BCCD has none past the border.
MAX_PAST_BORDER = 1.0


def content_digest(voc_dir: Path) -> str:
    """sha256 over the sorted lines ``<relative path> <sha256 of the file>`` of the annotations and images."""
    return manifest.content_digest(manifest.file_digests(voc_dir, CONTENT))


def parse_annotation(xml_file: Path) -> list[tuple[str, tuple[float, float, float, float] | None]]:
    """(class name, (xmin, ymin, xmax, ymax) or None without a complete numeric <bndbox>) per object; the
    coordinates may be NaN or infinite (float() reads "nan").

    Names are stripped of surrounding whitespace; raises ``ET.ParseError`` for malformed XML, ``LookupError``
    for an unknown declared encoding and OSError for a file that cannot be read (e.g. a dangling link)."""
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


def box_problem(coords, w: int, h: int) -> str | None:
    """Why box ``coords`` (xmin, ymin, xmax, ymax) of a ``w``×``h`` image cannot be a sample; None when it can."""
    if coords is None:
        return "object without a complete <bndbox>"
    text = ", ".join(f"{k}={v:g}" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), coords))
    if not all(math.isfinite(c) for c in coords):
        return f"non-finite box coordinates ({text})"
    if coords[2] <= coords[0] or coords[3] <= coords[1]:
        return f"degenerate box ({text}): zero or negative area"
    if min(w, coords[2]) <= max(0.0, coords[0]) or min(h, coords[3]) <= max(0.0, coords[1]):
        return f"box ({text}) outside the {w}x{h} image"
    past = max(-coords[0], -coords[1], coords[2] - w, coords[3] - h)
    if past > MAX_PAST_BORDER:
        return f"box ({text}) reaches {past:g} px past the {w}x{h} image (more than {MAX_PAST_BORDER:g})"
    return None


def index_voc(voc_dir: Path) -> Index:
    """Every usable box of a VOC folder, from the XMLs and the JPEG headers only (no pixel decoded).

    Skipped with a reason: a malformed or unreadable XML, a missing or unreadable image (whole file, with its
    number of boxes when the XML was read), an object without a box, a box with NaN or infinite coordinates, a
    degenerate box (zero or negative area), a box outside the image or reaching more than
    :data:`MAX_PAST_BORDER` px past its border (one within it is clipped). An unknown class name is a DataError
    (another dataset). Near-duplicates (same label, IoU > :data:`DUPLICATE_IOU` with an earlier box) are listed,
    not removed.
    """
    ids, labels, boxes, skipped, duplicates = [], [], [], [], []
    xml_files = sorted((voc_dir / "Annotations").glob("*.xml"))
    for xml_file in xml_files:
        stem, jpg = xml_file.stem, voc_dir / "JPEGImages" / f"{xml_file.stem}.jpg"
        try:
            objects = parse_annotation(xml_file)
        except (ET.ParseError, LookupError, ValueError) as e:  # bad XML, unknown encoding, undecodable bytes
            skipped.append({"id": stem, "reason": f"malformed {xml_file.name}: {str(e).splitlines()[0]}"})
            continue
        except OSError as e:  # a dangling or looping link, no permission
            skipped.append({"id": stem, "reason": reason(f"unreadable {xml_file.name}", e)})
            continue
        try:
            with Image.open(jpg) as im:  # reads the header only
                w, h = im.size
        except FileNotFoundError:
            what = "a dangling link" if jpg.is_symlink() else "a missing image"
            why = f"{xml_file.name} names {what} {jpg.name}"
            skipped.append({"id": stem, "reason": why, "samples": len(objects)})
            continue
        except UNREADABLE as e:
            # UnidentifiedImageError (e.g. zero bytes), a looping link, a header declaring a decompression bomb
            why = reason(f"unreadable {jpg.name}", e)
            skipped.append({"id": stem, "reason": why, "samples": len(objects)})
            continue
        first = len(ids)  # this image's boxes start here
        for i, (name, coords) in enumerate(objects):
            if name not in CLASS_NAMES:
                raise DataError(
                    f"{xml_file}: unknown class {name!r} (expected one of {', '.join(CLASS_NAMES)}); this is "
                    "not the BCCD dataset: point LBAM_DATA_DIR at the folder holding the original BCCD/"
                )
            sid, label = f"{stem}#{i}", CLASS_NAMES.index(name)
            if problem := box_problem(coords, w, h):
                skipped.append({"id": sid, "reason": problem})
                continue
            box = (max(0.0, coords[0]), max(0.0, coords[1]), min(w, coords[2]), min(h, coords[3]))
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
    """The VOC folder of the extracted GitHub archive (BCCD_Dataset-<commit>/BCCD/); OSError if incomplete or
    if its content is not the pinned one (:data:`BCCD_CONTENT_SHA256`)."""
    found = sorted(staging.glob("*/BCCD"))
    if len(found) != 1:
        raise OSError(f"BCCD archive layout unexpected: {[p.relative_to(staging).as_posix() for p in found]}")
    n_xml, n_jpg = (len(list(found[0].glob(p))) for p in ("Annotations/*.xml", "JPEGImages/*.jpg"))
    if n_xml != BCCD_IMAGES or n_jpg != BCCD_IMAGES:
        raise OSError(
            f"BCCD archive incomplete: {n_xml} annotations, {n_jpg} images (expected {BCCD_IMAGES})"
        )
    got = content_digest(found[0])
    if got != BCCD_CONTENT_SHA256:
        raise OSError(f"BCCD content sha256 mismatch: got {got}, expected {BCCD_CONTENT_SHA256}")
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
    unit = "crops"
    required = ("Annotations", "JPEGImages")
    fingerprinted = CONTENT
    pinned_manifest = BCCD_MANIFEST
    pinned_digest = BCCD_CONTENT_SHA256
    pinned_test_splits = BCCD_TEST_SPLITS
    _index = staticmethod(index_voc)
    _decode = staticmethod(crop_boxes)

    def __init__(self, root="data", image_size: int = 128, train_size: int | float = 4000, **kwargs):
        super().__init__(root=root, image_size=image_size, train_size=train_size, **kwargs)

    def _fetch(self) -> None:
        source = download.Source(BCCD_URL, BCCD_SHA256)
        download.install(self.name, [source], self.dataset_dir(), pick_voc, max_bytes=BCCD_MAX_BYTES)
