"""The DataModule interface that the runner and the report read, its split planner, its in-memory loaders."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from lbam.io import atomic_write

# A dataset whose unusable source files exceed this fraction is refused rather than silently shrunk.
MAX_BAD_FRACTION = 0.05
# Group strata count each minority class per image up to this cap (BCCD: 0-3+ WBC, 0-3+ platelets).
STRATUM_CAP = 3
SPLIT_BY = ("image", "crop")
# Bump when preprocessing changes so old caches are never reused.
CACHE_VERSION = 2


class DataError(RuntimeError):
    """A data problem the user can fix. Its message is one line: what, where, and how to fix it."""


class DatasetNotFoundError(DataError):
    """A dataset is neither on disk nor downloadable."""


def not_found(name: str, expected: Path, urls, reason: str = "") -> DatasetNotFoundError:
    """The one-line error for a dataset that is missing and could not be fetched."""
    env = os.environ.get("LBAM_DATA_DIR")
    return DatasetNotFoundError(
        f"dataset '{name}' not found at {Path(expected).resolve()}" + (f" ({reason})" if reason else "")
        + f": download it when online with `python -m lbam.data download dataset={name}` (source: "
        + ", ".join(urls) + "), or point LBAM_DATA_DIR at the folder that contains it "
        + (f"(now LBAM_DATA_DIR={env})" if env else "(LBAM_DATA_DIR is not set)")
    )  # fmt: skip


@dataclass
class Index:
    """What a split is planned on, read without decoding a pixel: one entry per usable sample. Skipped items
    are ``{"id", "reason"}`` (a bare image id: the whole file); duplicates ``{"id", "of", "iou"}``."""

    ids: list[str]
    labels: np.ndarray
    n_sources: int  # source images considered
    boxes: np.ndarray | None = None  # BCCD: one clipped (x0, y0, x1, y1) per sample
    skipped: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)


def decode_images(index: Index, folder: Path, load, side: int) -> dict:
    """Decode each source image ``folder/<image>.jpg`` of ``index`` once: ``load(path, ks)`` returns the RGB
    images (``side``²) of its samples ``ks``. A file the decoder rejects (OSError) is skipped whole, any other
    error surfaces. Returns what is cached: ``{"images": uint8 N×3×S×S, "labels", "ids", "skipped"}``."""
    out = {"images": [], "labels": [], "ids": [], "skipped": []}
    members: dict[str, list[int]] = {}
    for k, sample_id in enumerate(index.ids):
        members.setdefault(sample_id.split("#")[0], []).append(k)  # <image>#<box>
    for stem, ks in members.items():
        path = folder / f"{stem}.jpg"
        try:
            crops = load(path, ks)
        except OSError as e:  # PIL.UnidentifiedImageError, a truncated or broken data stream
            out["skipped"].append({"id": stem, "reason": f"unreadable {path.name}: {type(e).__name__}: {e}"})
            continue
        out["images"] += [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in crops]
        out["labels"] += index.labels[ks].tolist()
        out["ids"] += [index.ids[k] for k in ks]
    images = torch.stack(out["images"]) if out["images"] else torch.zeros(0, 3, side, side, dtype=torch.uint8)
    return {**out, "images": images, "labels": torch.tensor(out["labels"], dtype=torch.int64)}


def resolve_size(value: int | float | None, total: int, what: str) -> int | None:
    """An int is a count, a float in (0, 1) a fraction of ``total`` (rounded); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{what} must be an int count or a fraction in (0, 1), got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        if not 0.0 < value < 1.0:
            raise DataError(f"{what} as a fraction must lie in (0, 1), got {value}")
        return round(value * total)
    if int(value) < 0:
        raise DataError(f"{what} must be >= 0, got {value}")
    return int(value)


def _quotas(counts: np.ndarray, n: int, at_least_one: bool = False) -> np.ndarray:
    """Split ``n`` over classes in proportion to ``counts`` (largest remainder, ties to the lower class).

    ``at_least_one`` moves one unit from the largest quota to every empty present class while it can."""
    exact = counts * n / max(counts.sum(), 1)
    q = np.floor(exact).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - q[c]), c))
    for c in order[: n - int(q.sum())]:
        q[c] += 1
    q = np.minimum(q, counts)
    for c in np.flatnonzero((q == 0) & (counts > 0)) if at_least_one else ():
        if q.max() > 1:
            q[np.argmax(q)] -= 1
            q[c] += 1
    return q


def stratified_split(labels, n_first: int, n_second: int | None, seed, at_least_one: bool = False):
    """Per-sample stratified split: (first, second) index arrays, sorted; ``n_second`` None = the rest.

    Per class (in index order) one seeded generator shuffles the indices; the first quota goes to
    ``first``, the next to ``second``. This is the split of the old per-crop default, unchanged."""
    labels = np.asarray(labels)
    counts = np.bincount(labels) if labels.size else np.zeros(0, np.int64)
    q1 = _quotas(counts, n_first, at_least_one)
    q2 = counts - q1 if n_second is None else _quotas(counts - q1, n_second)
    rng = np.random.default_rng(seed)
    first, second = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in range(len(counts)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        first.append(idx[: q1[c]])
        second.append(idx[q1[c] : q1[c] + q2[c]])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def group_split(labels, groups, n_first: int, n_second: int | None, seed):
    """Split whole groups (source images) so that no group has samples on both sides; (first, second).

    Groups are stratified by their class content: each minority class counted per group up to
    :data:`STRATUM_CAP` (for BCCD the WBC and platelet counts, since RBC is 85 % of the crops). Within a
    stratum the groups are shuffled by ``seed`` and spread evenly over [0, 1) from a random offset
    (systematic sampling); ordering all groups by that position makes every prefix hold each stratum in
    proportion. ``first`` is the prefix whose sample count is closest to ``n_first``, ``second`` the next
    groups closest to ``n_second`` (None = all the rest). A positive target always gets one group or more.
    """
    labels = np.asarray(labels)
    names, g = np.unique(np.asarray(groups), return_inverse=True)
    content = np.zeros((len(names), int(labels.max()) + 1), np.int64)
    np.add.at(content, (g, labels), 1)
    minority = np.argsort(-content.sum(0), kind="stable")[1:]
    _, stratum = np.unique(np.minimum(content[:, minority], STRATUM_CAP), axis=0, return_inverse=True)
    rng = np.random.default_rng(seed)
    pos = np.empty(len(names))
    for s in range(int(stratum.max()) + 1):
        members = rng.permutation(np.flatnonzero(stratum.ravel() == s))
        pos[members] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.lexsort((rng.random(len(names)), pos))
    cum = np.concatenate([[0], np.cumsum(content.sum(1)[order])])

    def cut(start: int, n: int | None) -> int:
        if n is None:
            return len(order)
        k = start + int(np.argmin(np.abs(cum[start:] - cum[start] - n)))
        return max(k, start + 1) if n > 0 and start < len(order) else k

    k1 = cut(0, n_first)
    k2 = cut(k1, n_second)
    return np.flatnonzero(np.isin(g, order[:k1])), np.flatnonzero(np.isin(g, order[k1:k2]))


def plan_split(
    labels, ids, *, name: str, split_by: str, train_size, test_size, val_size, split_seed: int,
    train_subset: int | None = None, subset_seed: int = 0,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Sorted sample indices of train, val, test and the ``train_split`` (train + val, before a subset),
    from labels and ids alone: sizes are checked here, before anything is decoded.

    ``split_by="image"`` keeps each source image on one side (:func:`group_split`), ``"crop"`` splits the
    samples (:func:`stratified_split`); with one sample per image both are the per-sample split. Test depends
    only on the data, split_by, split_seed and train/test sizes. ``train_subset`` draws a class-stratified
    subsample of the training split (``subset_seed``); val is carved from it (or from the whole training
    split), by image when splitting by image.
    """
    labels, groups = np.asarray(labels), np.array([i.split("#")[0] for i in ids])  # <image>#<box>
    total = len(labels)
    by_image = split_by == "image" and len(set(groups.tolist())) < total

    def two_way(idx: np.ndarray, n1: int, n2: int | None, seed) -> tuple[np.ndarray, np.ndarray]:
        if by_image:
            a, b = group_split(labels[idx], groups[idx], n1, n2, seed)
        else:
            a, b = stratified_split(labels[idx], n1, n2, seed)
        return idx[a], idx[b]

    n_train = resolve_size(train_size, total, "train_size")
    n_test = resolve_size(test_size, total, "test_size")
    n_rest = total - n_train if n_test is None else n_test
    fix = "use a smaller count or a fraction, e.g. train_size=0.8"
    if n_train < 2 or n_rest < 1 or n_train + n_rest > total:
        raise DataError(
            f"{name}: train_size={train_size!r}, test_size={test_size!r} ask for {n_train} train (>= 2) + "
            f"{n_test if n_test is not None else '>= 1'} test samples but {total} are usable; {fix}"
        )
    train, test = two_way(np.arange(total), n_train, n_test, split_seed)
    train_split, seed = train, [split_seed, 1]
    if train_subset is not None:
        if train_subset > len(train):
            raise DataError(
                f"{name}: train_subset={train_subset} is larger than the training split ({len(train)} "
                f"samples); use train_subset <= {len(train)} or null"
            )
        pick, _ = stratified_split(labels[train], train_subset, 0, subset_seed, at_least_one=True)
        train, seed = train[pick], [subset_seed, 2]
    n_val = resolve_size(val_size, len(train), "val_size")
    val = np.zeros(0, np.int64)
    if n_val:
        val, _ = two_way(train, n_val, None, seed)
        train = np.setdiff1d(train, val)
    if len(train) < 2 or len(test) < 1:  # whole images can overshoot a target
        raise DataError(
            f"{name}: train_size={train_size!r}, test_size={test_size!r}, val_size={val_size!r} leave {len(train)} "
            f"train and {len(test)} test samples of {total} (at least 2 and 1 are needed); use smaller sizes"
        )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test), "train_split": train_split}


class BatchTensorDataset(Dataset):
    """Indexed by a list of sample indices, returns a whole normalised batch (one tensor op per batch) of side
    ``crop``: at test the centre crop of the stored images; in training a random-resized crop when
    ``rrc_scale`` is set (h-flipped at random if -1 is in ``flips``), else the centre crop randomly flipped
    along each axis in ``flips``."""

    def __init__(self, images, labels, indices, mean, std, crop, train, flips=(), rrc_scale=None):
        # Keep the full tensors and index into them: no per-split copy of the (large) image cache.
        self.images, self.labels, self.indices, self.train = images, labels, indices, train
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.crop, self.flips, self.rrc_scale = crop, tuple(flips), rrc_scale

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        index = self.indices[torch.as_tensor(index, dtype=torch.long)]
        x, y = self.images[index], self.labels[index]
        if self.train and self.rrc_scale is not None:
            x = random_resized_crop(x, self.crop, self.rrc_scale, hflip=-1 in self.flips)
        else:
            top, left = (x.shape[-2] - self.crop) // 2, (x.shape[-1] - self.crop) // 2
            x = x[..., top : top + self.crop, left : left + self.crop]
            if self.train:
                for dim in self.flips:  # on uint8, before the 4x larger float copy
                    flip = (torch.rand(len(x)) < 0.5).nonzero().squeeze(1)  # index: cheaper than a mask
                    x[flip] = x[flip].flip(dim)
            x = x.float()
        return x.sub_(self.mean).div_(self.std), y


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], hflip: bool) -> torch.Tensor:
    """Batched random-resized crop (area fraction in ``scale``, aspect 3/4..4/3) + optional h-flip: one
    ``grid_sample`` call for the whole batch instead of a per-image PIL pipeline."""
    n = len(x)
    area = torch.empty(n).uniform_(*scale)
    log_r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_r)
    sw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(n) * 2 - 1) * (1 - sw)  # centre offset in [-1, 1] coordinates, crop stays inside
    ty = (torch.rand(n) * 2 - 1) * (1 - sh)
    sign = torch.where(torch.rand(n) < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * sign, tx
    theta[:, 1, 1], theta[:, 1, 2] = sh, ty
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def channel_stats(images: torch.Tensor, idx: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of ``images[idx]`` (uint8 N×3×H×W), exact: from the
    histogram of the 256 byte values (in float64), which is also faster than summing floats."""
    hist = torch.zeros(3, 256, dtype=torch.float64)
    for i in range(0, len(idx), 512):  # in chunks of 512 images: no copy of the whole split
        x = images[idx[i : i + 512]]
        for c in range(3):
            hist[c] += torch.bincount(x[:, c].reshape(-1), minlength=256).double()
    value = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum(1)
    mean = (hist * value).sum(1) / n
    var = (hist * value * value).sum(1) / n - mean * mean
    return mean.tolist(), var.clamp(min=1e-12).sqrt().tolist()


class DataModule(pl.LightningDataModule):
    """The declared interface of a dataset, the one thing the runner and the report read from it.

    Right after ``__init__`` (no data read): ``name``, ``is_synthetic``, ``class_names``, ``num_classes``
    and :meth:`describe`. After :meth:`setup` (idempotent, fixed-seed split): ``metadata`` (JSON-
    serialisable; ``root`` and ``cache`` are its only machine paths), ``train_ids``, ``val_ids``, ``test_ids``
    (sample ids in loader order), ``mean`` and ``std`` (per channel, of the training samples) and the
    loaders. Only :meth:`prepare_data` downloads. A problem the user can fix raises :class:`DataError`.

    Subclasses set ``name``, ``classes``, ``urls``, ``folder`` (``dataset_dir()`` is ``root/folder``),
    ``required``, ``fingerprinted``, ``_index(dataset_dir)`` (a cheap :class:`Index`: no pixel decoded) and
    ``_decode(dataset_dir, index, stored_size)`` (:func:`decode_images`' dict, cached on disk), and define
    ``_fetch()``.
    """

    name: str = ""
    is_synthetic: bool = False
    classes: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    flips: tuple[int, ...] = (-1,)
    rrc_scale: tuple[float, float] | None = None
    folder: str = ""
    required: tuple[str, ...] = ()  # paths under dataset_dir() that must exist
    fingerprinted: tuple[str, ...] = ()  # glob patterns under dataset_dir() of the files the cache key hashes
    metadata: dict  # this and the rest after setup()
    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    mean: list[float]
    std: list[float]
    # The constructor arguments that define the data and its split (the others say where it lives and how
    # it is loaded on this machine: root, cache_dir, num_workers, pin_memory, download).
    DEFINING = ("image_size", "train_size", "test_size", "val_size", "split_by", "split_seed",
                "drop_duplicates", "train_subset", "subset_seed", "batch_size")  # fmt: skip

    def __init__(
        self, root: str | Path = "data", cache_dir: str | Path = "data/.cache", image_size: int = 128,
        train_size: int | float = 0.8, test_size: int | float | None = None, val_size: int | float = 0,
        split_by: str = "image", split_seed: int = 0, drop_duplicates: bool = True,
        train_subset: int | None = None, subset_seed: int = 0, batch_size: int = 64,
        num_workers: int | None = 0, pin_memory: bool | None = None, download: bool = False,
    ):  # fmt: skip
        super().__init__()
        if num_workers is None:  # auto: the cores left after two for compute, at most 8. Batches are slices
            # of a preloaded tensor, so workers pay off only when cores are spare: on a 2-core machine they
            # took cores from the training threads (measured: 650-700 vs 800-875 images/s with none).
            num_workers = max(0, min(8, (os.cpu_count() or 1) - 2))
        ints = {"image_size": (image_size, 8), "batch_size": (batch_size, 2), "split_seed": (split_seed, 0),
                "subset_seed": (subset_seed, 0), "num_workers": (num_workers, 0)}  # fmt: skip
        if train_subset is not None:
            ints["train_subset"] = (train_subset, 1)
        for key, (value, low) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(f"{self.name}: {key} must be an int >= {low}, got {value!r}")
        if split_by not in SPLIT_BY:
            raise DataError(f"{self.name}: split_by must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
        if not isinstance(drop_duplicates, bool):
            raise DataError(f"{self.name}: drop_duplicates must be true or false, got {drop_duplicates!r}")
        for key, value in (("train_size", train_size), ("test_size", test_size), ("val_size", val_size)):
            resolve_size(value, 1, f"{self.name}: {key}")  # types now; bounds need the index
        self.root, self.cache_dir = Path(root), Path(cache_dir)
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.train_size, self.test_size, self.val_size = train_size, test_size, val_size
        self.split_by, self.split_seed, self.drop_duplicates = split_by, split_seed, drop_duplicates
        self.train_subset, self.subset_seed = train_subset, subset_seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.download = bool(download)
        self.class_names, self.num_classes = list(self.classes), len(self.classes)
        self._ready = False

    def describe(self) -> dict:
        """``_target_`` and the :attr:`DEFINING` constructor arguments: instantiated with a local ``root`` and
        ``cache_dir``, it rebuilds the same test split."""
        target = f"{type(self).__module__}.{type(self).__qualname__}"
        return {"_target_": target, **{k: getattr(self, k) for k in self.DEFINING}}

    @property
    def stored_size(self) -> int:
        """Side of the cached square images (larger than ``image_size`` when training crops from them)."""
        return self.image_size

    def dataset_dir(self) -> Path:
        return self.root / self.folder

    def _exists(self) -> bool:
        return all((self.dataset_dir() / p).exists() for p in self.required)

    def prepare_data(self) -> None:
        if not self._exists():
            if not self.download:
                raise not_found(self.name, self.dataset_dir(), self.urls, "download=False")
            self._fetch()

    def _check_skipped(self, skipped: list[dict], n_sources: int) -> None:
        bad = [s for s in skipped if "#" not in s["id"]]  # whole source files
        if bad and len(bad) > MAX_BAD_FRACTION * n_sources:
            raise DataError(
                f"{self.name}: {len(bad)} of {n_sources} source images in {self.dataset_dir()} are unusable "
                f"(more than {MAX_BAD_FRACTION:.0%}), e.g. {bad[0]['id']}: {bad[0]['reason']}; restore the "
                f"dataset (delete the folder and run `python -m lbam.data download dataset={self.name}`)"
            )

    def _plan(self, ids: list[str], labels) -> dict[str, np.ndarray]:
        split_args = set(self.DEFINING) - {"image_size", "batch_size", "drop_duplicates"}
        return plan_split(labels, ids, name=self.name, **{k: getattr(self, k) for k in split_args})

    def setup(self, stage: str | None = None) -> None:
        """Index the source (cheap), plan the split (sizes checked), then load or build the decoded cache."""
        if self._ready:
            return
        if not self._exists():
            raise not_found(self.name, self.dataset_dir(), self.urls)
        index = self._index(self.dataset_dir())
        self._check_skipped(index.skipped, index.n_sources)
        dropped = {d["id"] for d in index.duplicates} if self.drop_duplicates else set()
        planned = [i for i in index.ids if i not in dropped]
        plan = self._plan(planned, index.labels[[i not in dropped for i in index.ids]])  # before any decoding
        data = self._cached(index)
        self.images, self.labels, self.ids = data["images"], data["labels"], list(data["ids"])
        self.skipped = index.skipped + list(data["skipped"])  # + images whose pixels could not be decoded
        self._check_skipped(self.skipped, index.n_sources)
        if self.skipped:
            items = ", ".join(f"{s['id']} ({s['reason']})" for s in self.skipped[:20])
            more = f" and {len(self.skipped) - 20} more" if len(self.skipped) > 20 else ""
            warnings.warn(f"{self.name}: skipped {len(self.skipped)} item(s): {items}{more}", stacklevel=2)
        keep = np.array([k for k, i in enumerate(self.ids) if i not in dropped], dtype=np.int64)
        if [self.ids[k] for k in keep] != planned:  # decoding dropped images: plan on what is left
            plan = self._plan([self.ids[k] for k in keep], self.labels.numpy()[keep])
        n_train_split = len(plan.pop("train_split"))
        self.split_indices = {k: torch.from_numpy(keep[v]) for k, v in plan.items()}
        self._describe(index, len(keep), n_train_split)
        self._ready = True

    def _cached(self, index: Index) -> dict:
        """The decoded samples: read from the cache file, else decoded once and written atomically (a cache
        file that cannot be read is rebuilt with a warning). The file's name hashes the stored size and the
        relative paths, sizes and mtimes of the source files: a changed or replaced file changes it."""
        d, h = self.dataset_dir(), hashlib.sha256()
        for f in sorted(f for pattern in self.fingerprinted for f in d.glob(pattern)):
            st = f.stat()
            h.update(f"{f.relative_to(d).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        source = h.hexdigest()
        key = {"dataset": self.name, "source": source, "size": self.stored_size, "version": CACHE_VERSION}
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.cache_file, self.cache_hit = self.cache_dir / self.name / f"{name}.pt", False
        if self.cache_file.exists():
            try:
                data = torch.load(self.cache_file, weights_only=True)
                if isinstance(data, dict) and all(k in data for k in ("images", "labels", "ids", "skipped")):
                    self.cache_hit = True
                    return data
                problem = "not a cache of this version"
            except Exception as e:  # any unreadable file: the cache is only ever a copy of the source
                problem = f"{type(e).__name__}: {e}".splitlines()[0]
            warnings.warn(f"rebuilding the corrupt data cache {self.cache_file} ({problem})", stacklevel=3)
        data = self._decode(self.dataset_dir(), index, self.stored_size)
        buffer = io.BytesIO()
        torch.save(data, buffer)
        atomic_write(self.cache_file, buffer.getbuffer())
        return data

    def _describe(self, index: Index, n_usable: int, n_train_split: int) -> None:
        split = self.split_indices
        ids = {k: [self.ids[i] for i in v.tolist()] for k, v in split.items()}
        self.train_ids, self.val_ids, self.test_ids = ids["train"], ids["val"], ids["test"]
        self.mean, self.std = channel_stats(self.images, split["train"])
        if len(split["val"]):
            # Defined only with a validation split, so Lightning runs no validation loop otherwise.
            self.val_dataloader = self._val_dataloader
        self.metadata = {
            "dataset": self.name,
            "synthetic": self.is_synthetic,
            "root": str(self.root.resolve()),
            "cache": str(self.cache_file.resolve()),
            **{k: v for k, v in self.describe().items() if k not in ("_target_", "batch_size")},
            "class_names": list(self.class_names),
            "n_total": n_usable,
            **{f"n_{k}": len(v) for k, v in split.items()},
            "n_train_split": n_train_split,  # the training split that val and a train_subset come from
            "class_counts": {
                k: torch.bincount(self.labels[v], minlength=self.num_classes).tolist()
                for k, v in split.items()
            },
            "n_images": index.n_sources,
            "images": {k: len({i.split("#")[0] for i in v}) for k, v in ids.items()},
            "skipped": len(self.skipped),
            "skipped_items": self.skipped,
            "duplicates": len(index.duplicates),
            "duplicate_items": index.duplicates,
            "mean": self.mean,
            "std": self.std,
        }

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = BatchTensorDataset(self.images, self.labels, self.split_indices[split], self.mean, self.std,
                                crop=self.image_size, train=train, flips=self.flips, rrc_scale=self.rrc_scale)  # fmt: skip
        sampler = RandomSampler(ds) if train else SequentialSampler(ds)
        # A training batch of one breaks batch norm: drop a last batch of one (it returns in another epoch).
        drop_last = train and len(ds) % self.batch_size == 1
        return DataLoader(
            ds,
            sampler=BatchSampler(sampler, self.batch_size, drop_last=drop_last),
            batch_size=None,  # the dataset returns whole batches
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def _val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
