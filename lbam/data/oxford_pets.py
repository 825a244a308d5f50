"""Oxford-IIIT Pet as cats vs dogs (embodiment 2): trainval list, label from the species column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lbam.data import download, manifest
from lbam.data.base import DataModule
from lbam.data.errors import DataError
from lbam.data.index import Index, decode_images

# The archives and md5 digests torchvision's OxfordIIITPet downloads (its _RESOURCES); fetched here with
# lbam's downloader for the short timeout, member checks and the all-or-nothing rename.
_PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"
PETS_SOURCES = [
    download.Source(_PETS_URL + "images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c", "md5"),
    download.Source(_PETS_URL + "annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f", "md5"),
]
PETS_MAX_BYTES = 4 << 30  # extraction writes at most this much (the two archives hold ~0.8 GB): no tar bomb
CLASS_NAMES = ("cat", "dog")
# Cached side = image_size / CROP_FRACTION (224 -> 256): training takes random-resized crops from it,
# evaluation the centre crop, the usual 224-of-256 protocol.
CROP_FRACTION = 0.875


def load_rgb(path: Path, side: int) -> Image.Image:
    """Decode any mode (L, P, RGBA, CMYK, ...) to RGB, centre-crop the largest square, resize it to ``side``².

    The crop box is in integers (a float box put an edge at -3e-14 for e.g. 412×480 and was refused)."""
    with Image.open(path) as im:
        im.draft("RGB", (side, side))  # JPEG: let the decoder downscale, to no less than side (much faster)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, (255, 255, 255))
            im.paste(rgba, mask=rgba.getchannel("A"))  # transparent pixels become white, not black
        else:
            im = im.convert("RGB")  # decodes inside the `with`: PIL reads pixels lazily
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.resize((side, side), Image.BILINEAR, box=(left, top, left + s, top + s))


def index_pets(base: Path) -> Index:
    """``annotations/trainval.txt`` sorted by image id, label 0 = cat (species 1), 1 = dog (2); a missing or
    empty image file is skipped (no pixel decoded)."""
    path, rows = base / "annotations" / "trainval.txt", []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"{path}: cannot be read as text ({type(e).__name__}: {str(e).splitlines()[0]}); restore the official "
            "annotations (delete the dataset folder and download it again)"
        ) from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 3 or fields[2] not in ("1", "2"):
            raise DataError(
                f"{path}:{n}: expected '<image> <class id> <species 1|2> ...', got {line!r}; restore the "
                "official annotations (delete the dataset folder and download it again)"
            )
        rows.append((fields[0], int(fields[2]) - 1))
    ids, labels, skipped = [], [], []
    for image_id, label in sorted(rows):
        path = base / "images" / f"{image_id}.jpg"
        if image_id in ids[-1:]:
            skipped.append({"id": image_id, "reason": "listed twice in trainval.txt", "samples": 0})
        elif not path.is_file() or path.stat().st_size == 0:  # a dangling or looping link is no file either
            skipped.append({"id": image_id, "reason": f"{path.name} is missing or empty", "samples": 1})
        else:
            ids.append(image_id)
            labels.append(label)
    return Index(ids=ids, labels=np.asarray(labels, dtype=np.int64), n_sources=len(rows), skipped=skipped)


def decode_pets(base: Path, index: Index, side: int) -> dict:
    """Decode every indexed image once; an image the decoder rejects is skipped, any other error surfaces."""
    return decode_images(index, base / "images", lambda path, ks: [load_rgb(path, side)], side)


class OxfordPetsDataModule(DataModule):
    """Cats vs dogs from the 3680 trainval images: stratified 3000 train / 680 test at 224×224 (one sample
    per image, so split_by makes no difference)."""

    name = "oxford_pets"
    classes = CLASS_NAMES
    urls = tuple(s.url for s in PETS_SOURCES)
    flips = (-1,)
    rrc_scale = (0.35, 1.0)
    folder = "oxford-iiit-pet"
    unit = "images"
    required = ("images", "annotations/trainval.txt")
    fingerprinted = ("annotations/trainval.txt", "images/*.jpg")
    _index = staticmethod(index_pets)
    _decode = staticmethod(decode_pets)

    def __init__(self, root="data", image_size: int = 224, train_size: int | float = 3000, **kwargs):
        super().__init__(root=root, image_size=image_size, train_size=train_size, **kwargs)

    @property
    def stored_size(self) -> int:
        return round(self.image_size / CROP_FRACTION)

    def _fetch(self) -> None:
        def pick(folder: Path) -> Path:  # the two archives extract side by side: images/, annotations/
            if not all((folder / p).exists() for p in self.required):
                raise OSError(f"Oxford-IIIT Pet archives incomplete: need {' and '.join(self.required)}")
            manifest.write(
                folder, self.fingerprinted
            )  # from archives whose md5 was checked: verified at setup
            return folder

        download.install(self.name, PETS_SOURCES, self.dataset_dir(), pick, max_bytes=PETS_MAX_BYTES)
