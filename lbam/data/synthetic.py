"""Synthetic twins of BCCD and Oxford-IIIT Pet, written in the exact on-disk layouts and read by the real loaders.

Each class carries a learnable signal (shape and colour), so tiny models reach high accuracy in seconds.
Generation is deterministic (fixed seed) and idempotent: a dataset is written into a temp folder, with its manifest
(``SHA256SUMS``: the digest of every file, checked at every setup as the real data's are), and renamed into place,
so a present folder is always complete.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lbam.data import manifest
from lbam.data.bccd import CONTENT, BCCDDataModule
from lbam.data.download import atomic_dir
from lbam.data.oxford_pets import OxfordPetsDataModule

SYNTHETIC_VERSION = 3  # 3: with its manifest, the border box 1 px past (was 8: now skipped)

# name → (fill colour, radius range in pixels); cells of each class differ in size and stain colour.
_CELLS = {
    "RBC": ((205, 80, 90), (9, 12)),
    "WBC": ((90, 60, 170), (15, 19)),
    "Platelets": ((120, 40, 120), (3, 5)),
}
# Whitespace around <name> varies in the real annotations; the twin reproduces that.
_NAME_FORMATS = ["{}", " {} ", "\n\t\t{}\n\t", "{}  "]
_OBJECT = (
    "\t<object>\n\t\t<name>{}</name>\n\t\t<bndbox>\n\t\t\t<xmin>{}</xmin>\n\t\t\t<ymin>{}</ymin>\n"
    "\t\t\t<xmax>{}</xmax>\n\t\t\t<ymax>{}</ymax>\n\t\t</bndbox>\n\t</object>\n"
)


def write_bccd(root: Path, n_images: int = 40, seed: int = 0) -> Path:
    """Write ``root/BCCD`` in the BCCD VOC layout: 160×120 smears with RBC/WBC/Platelets boxes.

    Per image 3-8 RBC, 0-2 WBC and 0-3 platelets, so that images differ in class mix as in the real data
    and the image-level split has strata to balance. Image 0 carries one degenerate box (skipped) and one reaching
    1 px past the border (clipped, as a rounding); image 1 one near-duplicate RBC box (IoU > 0.9, as 7 real ones).
    """

    def write(bccd: Path) -> None:
        rng = np.random.default_rng(seed)
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (bccd / sub).mkdir(parents=True)
        stems = [f"BloodImage_{i:05d}" for i in range(n_images)]
        for i, stem in enumerate(stems):
            w, h = 160, 120
            im = Image.new("RGB", (w, h), (236, 214, 200))
            draw = ImageDraw.Draw(im)
            objects = []
            counts = {
                "RBC": rng.integers(3, 9),
                "WBC": rng.choice(3, p=[0.15, 0.7, 0.15]),
                "Platelets": rng.integers(4),
            }
            for name in [n for n, k in counts.items() for _ in range(k)]:
                colour, (rmin, rmax) = _CELLS[name]
                r = int(rng.integers(rmin, rmax + 1))
                cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
                jitter = tuple(int(c + rng.integers(-15, 16)) for c in colour)
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=jitter)
                objects.append((name, (cx - r, cy - r, cx + r, cy + r)))
            if i == 0:
                objects.append(("RBC", (50, 40, 50, 40)))  # degenerate, skipped
                objects.append(("RBC", (w - 10, h - 12, w + 1, h + 1)))  # 1 px past the border: clipped
            if i == 1:
                x0, y0, x1, y1 = objects[0][1]
                objects.append(("RBC", (x0, y0, x1, y1 + 1)))  # the first RBC annotated twice
            im.save(bccd / "JPEGImages" / f"{stem}.jpg", quality=92)
            xml = f"<annotation>\n\t<filename>{stem}.jpg</filename>\n"
            xml += f"\t<size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n"
            for k, (name, box) in enumerate(objects):
                xml += _OBJECT.format(_NAME_FORMATS[(i + k) % len(_NAME_FORMATS)].format(name), *box)
            (bccd / "Annotations" / f"{stem}.xml").write_text(xml + "</annotation>\n")
        cut = int(0.75 * n_images)
        for split, names in (("trainval", stems[:cut]), ("train", stems[:cut]), ("test", stems[cut:])):
            (bccd / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in names))
        manifest.write(bccd, CONTENT)

    return atomic_dir(Path(root) / "BCCD", write)


# Real naming: cat breeds are capitalised, dog breeds lower case; image files are <Breed>_<n>.jpg.
_CAT_BREEDS = ["Abyssinian", "Bengal", "British_Shorthair"]
_DOG_BREEDS = ["american_bulldog", "beagle", "pug"]
_PETS_HEADER = (
    "#Image CLASS-ID SPECIES BREED ID\n"
    "#ID: 1:37 Class ids\n"
    "#SPECIES: 1:Cat 2:Dog\n"
    "#BREED ID: 1-25:Cat 1:12:Dog\n"
    "#All images with 1st letter as captial are cat images\n"
    "#images with small first letter are dog images\n"
)
# Files in the trainval list that are not plain RGB JPEGs, as in the real data (id → how it is written).
PETS_SPECIAL = {
    "Abyssinian_1": "L",
    "Bengal_1": "RGBA",
    "beagle_1": "CMYK",
    "pug_1": "P",
    "British_Shorthair_1": "corrupt",
}


def _pet_image(rng: np.random.Generator, cat: bool, size: int = 96) -> Image.Image:
    # cats: warm background + disc; dogs: cool background + square (both with noise in position and shade)
    bg = (200, 150, 110) if cat else (110, 150, 200)
    bg = tuple(int(c + rng.integers(-25, 26)) for c in bg)
    im = Image.new("RGB", (size + int(rng.integers(0, 24)), size), bg)
    draw = ImageDraw.Draw(im)
    r = int(rng.integers(18, 30))
    cx, cy = int(rng.integers(r, im.width - r)), int(rng.integers(r, size - r))
    fg = tuple(int(v) for v in rng.integers(20, 90, 3))
    (draw.ellipse if cat else draw.rectangle)((cx - r, cy - r, cx + r, cy + r), fill=fg)
    return im


def write_pets(root: Path, per_breed: int = 20, seed: int = 0) -> Path:
    """Write ``root/oxford-iiit-pet`` in the official layout: images/, annotations/{list,trainval,test}.txt.

    ``per_breed`` images for each of 3 cat and 3 dog breeds; 4 of every 5 go to trainval. The trainval
    list includes a grayscale, an RGBA, a CMYK, a palette and a corrupt file (:data:`PETS_SPECIAL`).
    """

    def write(base: Path) -> None:
        rng = np.random.default_rng(seed)
        (base / "images").mkdir(parents=True)
        (base / "annotations").mkdir()
        breeds = sorted(_CAT_BREEDS + _DOG_BREEDS, key=str.lower)  # CLASS-ID order of the real list
        rows = {"trainval": [], "test": []}
        for class_id, breed in enumerate(breeds, start=1):
            cat = breed in _CAT_BREEDS
            breed_id = (_CAT_BREEDS if cat else _DOG_BREEDS).index(breed) + 1
            for n in range(1, per_breed + 1):
                image_id = f"{breed}_{n}"
                im = _pet_image(rng, cat)
                path = base / "images" / f"{image_id}.jpg"
                kind = PETS_SPECIAL.get(image_id, "RGB")
                if kind == "corrupt":
                    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
                elif kind in ("L", "CMYK", "RGB"):
                    im.convert(kind).save(path, format="JPEG", quality=92)
                else:  # RGBA/P content under a .jpg name, as a few real files are
                    im.convert(kind).save(path, format="PNG")
                split = "test" if n % 5 == 0 else "trainval"
                rows[split].append(f"{image_id} {class_id} {1 if cat else 2} {breed_id}\n")
        ann = base / "annotations"
        (ann / "trainval.txt").write_text("".join(rows["trainval"]))
        (ann / "test.txt").write_text("".join(rows["test"]))
        (ann / "list.txt").write_text(_PETS_HEADER + "".join(sorted(rows["trainval"] + rows["test"])))
        manifest.write(base, OxfordPetsDataModule.fingerprinted)

    return atomic_dir(Path(root) / "oxford-iiit-pet", write)


class _SyntheticMixin:
    """Data lives in ``root`` (default ``cache_dir/synthetic/v<version>``) and is generated there when absent."""

    is_synthetic = True
    urls = ("(generated locally by lbam.data.synthetic)",)
    pinned_manifest = pinned_digest = None  # a twin is checked against the manifest written with it
    pinned_test_splits: dict = {}  # noqa: RUF012 (read-only)
    may_create_root = True  # the twin is written wherever it is asked for: no typo becomes an empty dataset
    write: Callable[[Path], Path]  # the layout writer: write_bccd or write_pets

    def __init__(self, root=None, cache_dir="data/.cache", image_size=32, train_size=0.75, **kwargs):
        root = Path(cache_dir) / "synthetic" / f"v{SYNTHETIC_VERSION}" if root is None else root
        super().__init__(
            root=root, cache_dir=cache_dir, image_size=image_size, train_size=train_size, **kwargs
        )

    def prepare_data(self) -> None:  # "downloading" a twin is writing it
        self.write(self.root)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # also when prepare_data was not called (e.g. a plain script or test)
        super().setup(stage)


class SyntheticBCCDDataModule(_SyntheticMixin, BCCDDataModule):
    """BCCD-layout twin (40 images of varied class mix, 1 degenerate and 1 duplicate box) read by the BCCD
    loader."""

    name = "synthetic_bccd"
    write = staticmethod(write_bccd)


class SyntheticPetsDataModule(_SyntheticMixin, OxfordPetsDataModule):
    """Oxford-IIIT Pet-layout twin (120 images, 96 in trainval, one corrupt) read by the pets loader."""

    name = "synthetic_pets"
    write = staticmethod(write_pets)
