"""Shared DataModule machinery: size checks, stratified split, in-memory uint8 batches, cheap augmentation."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from lbam.data import cache


def resolve_size(value: int | float | None, total: int, what: str) -> int | None:
    """An int is a count, a float in (0, 1) a fraction of ``total`` (rounded); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be an int count or a fraction in (0, 1), got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        if not 0.0 < value < 1.0:
            raise ValueError(f"{what} as a fraction must lie in (0, 1), got {value}")
        return round(value * total)
    n = int(value)
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return n


def _quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over classes proportionally to ``counts`` (largest remainder, ties to the lower class)."""
    exact = counts * n / counts.sum()
    q = np.floor(exact).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - q[c]), c))
    for c in order[: n - int(q.sum())]:
        q[c] += 1
    return np.minimum(q, counts)


def stratified_split(
    labels: np.ndarray, n_train: int, n_test: int, n_val: int, seed: int
) -> dict[str, np.ndarray]:
    """Deterministic stratified split of sample indices into train/val/test (each sorted ascending).

    Per class, indices are shuffled by one seeded generator (classes in index order), then the first
    quota goes to train, the next to test; val is carved out of train with the same proportions.
    Depends only on ``labels`` (in sample order), the sizes and ``seed``.
    """
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if labels.size else 0
    counts = np.bincount(labels, minlength=num_classes)
    q_train = _quotas(counts, n_train)
    q_test = _quotas(counts - q_train, n_test)
    q_val = _quotas(q_train, n_val)
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train = idx[: q_train[c]]
        parts["test"].append(idx[q_train[c] : q_train[c] + q_test[c]])
        parts["val"].append(train[: q_val[c]])
        parts["train"].append(train[q_val[c] :])
    return {k: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for k, v in parts.items()}


def auto_num_workers() -> int:
    """Loader processes for `num_workers: null`: the cores left after two for compute, at most 8.

    Batches are slices of a preloaded uint8 tensor, so workers only pay off when cores are spare: on a 2-core
    machine they took cores from the training threads (measured: 650-700 vs 800-875 images/s with none)."""
    return max(0, min(8, (os.cpu_count() or 1) - 2))


class BatchTensorDataset(Dataset):
    """Indexed by a list of sample indices, returns a whole normalised batch (one tensor op per batch).

    ``crop`` is the output side; stored images may be larger (centre crop at test, random-resized crop in
    training when ``rrc_scale`` is set). ``flips`` lists the flip axes applied at random in training.
    """

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
            x = center_crop(x, self.crop)
            if self.train:
                for dim in self.flips:  # on uint8, before the 4x larger float copy
                    flip = (torch.rand(len(x)) < 0.5).nonzero().squeeze(1)  # index: cheaper than a mask
                    x[flip] = x[flip].flip(dim)
            x = x.float()
        return x.sub_(self.mean).div_(self.std), y


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], hflip: bool) -> torch.Tensor:
    """Batched random-resized crop (area fraction in ``scale``, aspect 3/4..4/3) + optional h-flip.

    One ``grid_sample`` call for the whole batch instead of a per-image PIL pipeline.
    """
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


def channel_stats(
    images: torch.Tensor, indices: torch.Tensor, chunk: int = 256
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of ``images[indices]`` (uint8 N×3×H×W; chunked)."""
    s = torch.zeros(3, dtype=torch.float64)
    ss = torch.zeros(3, dtype=torch.float64)
    for i in range(0, len(indices), chunk):
        x = images[indices[i : i + chunk]].float() / 255
        s += x.sum(dim=(0, 2, 3)).double()
        ss += x.square_().sum(dim=(0, 2, 3)).double()
    n = len(indices) * images.shape[-1] * images.shape[-2]
    mean = s / n
    std = (ss / n - mean * mean).clamp(min=1e-12).sqrt()
    return mean.tolist(), std.tolist()


class CachedImageDataModule(pl.LightningDataModule):
    """Base: subclasses set ``name``/``classes``, and implement ``dataset_dir``, ``_fetch`` and ``_build``.

    ``_build()`` decodes the source into ``{"images": uint8 N×3×S×S, "labels": int64 N, "ids": [str],
    "skipped": [{"id", "reason"}]}`` and is called only on a cache miss.
    """

    name: str = ""
    is_synthetic: bool = False
    classes: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    flips: tuple[int, ...] = (-1,)
    rrc_scale: tuple[float, float] | None = None

    def __init__(
        self,
        root: str | Path = "data",
        cache_dir: str | Path = "data/.cache",
        image_size: int = 128,
        train_size: int | float = 0.8,
        test_size: int | float | None = None,
        val_size: int | float = 0,
        split_seed: int = 0,
        batch_size: int = 64,
        num_workers: int | None = 0,
        pin_memory: bool | None = None,
        download: bool = False,
    ):
        super().__init__()
        for key, value, low in (("image_size", image_size, 8), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} must be an int >= {low}, got {value!r}")
        if num_workers is None:
            num_workers = auto_num_workers()
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0 or null (auto), got {num_workers!r}")
        for key, value in (("train_size", train_size), ("test_size", test_size), ("val_size", val_size)):
            resolve_size(value, 1, key)  # type check early; bounds need the data
        self.root = Path(root)
        self.cache_dir = Path(cache_dir)
        self.image_size = image_size
        self.train_size, self.test_size, self.val_size = train_size, test_size, val_size
        self.split_seed = int(split_seed)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.download = bool(download)
        self.class_names = list(self.classes)
        self.num_classes = len(self.class_names)
        self._ready = False

    # --- to implement -------------------------------------------------------------------------------
    def dataset_dir(self) -> Path:
        """The dataset folder under ``root`` (e.g. root/BCCD)."""
        raise NotImplementedError

    def _exists(self) -> bool:
        raise NotImplementedError

    def _fetch(self) -> None:
        """Download the dataset into ``dataset_dir()``."""
        raise NotImplementedError

    def _source_files(self) -> list[Path]:
        raise NotImplementedError

    def _build(self) -> dict:
        raise NotImplementedError

    @property
    def stored_size(self) -> int:
        """Side of the cached square images (larger than ``image_size`` when training crops from them)."""
        return self.image_size

    # --- Lightning hooks ----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self._exists():
            return
        if not self.download:
            raise self._missing("download=False")
        self._fetch()

    def _missing(self, reason: str):
        from lbam.data.download import DatasetNotFoundError, missing_message

        return DatasetNotFoundError(missing_message(self.name, self.dataset_dir(), self.urls, reason))

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        if not self._exists():
            raise self._missing("run prepare_data() or the download command first")
        key = {
            "dataset": self.name,
            "source": cache.fingerprint(self._source_files(), self.dataset_dir()),
            "size": self.stored_size,
        }
        self.cache_file = cache.cache_path(self.cache_dir, self.name, key)
        data, self.cache_hit = cache.load_or_build(self.cache_file, self._build)
        self.images, self.labels, self.ids = data["images"], data["labels"], list(data["ids"])
        self.skipped = list(data["skipped"])
        if self.skipped:
            warnings.warn(self._skip_warning(), stacklevel=2)
        self._split()
        self._ready = True

    def _skip_warning(self) -> str:
        items = ", ".join(f"{s['id']} ({s['reason']})" for s in self.skipped[:20])
        more = f" and {len(self.skipped) - 20} more" if len(self.skipped) > 20 else ""
        return f"{self.name}: skipped {len(self.skipped)} item(s): {items}{more}"

    def _split(self) -> None:
        total = len(self.labels)
        n_train = resolve_size(self.train_size, total, "train_size")
        n_test = resolve_size(self.test_size, total, "test_size")
        n_test = max(total - n_train, 0) if n_test is None else n_test
        if n_train < 1 or n_test < 1 or n_train + n_test > total:
            raise ValueError(
                f"{self.name}: train_size={self.train_size!r}, test_size={self.test_size!r} ask for {n_train} "
                f"train + {n_test} test samples (both >= 1) but {total} are available "
                f"({len(self.skipped)} skipped); use fractions instead, e.g. train_size=0.8."
            )
        n_val = resolve_size(self.val_size, n_train, "val_size")
        if n_val >= n_train:
            raise ValueError(
                f"{self.name}: val_size={self.val_size!r} leaves no training samples of {n_train}"
            )
        self.split_indices = {
            k: torch.from_numpy(v)
            for k, v in stratified_split(self.labels.numpy(), n_train, n_test, n_val, self.split_seed).items()
        }
        self.mean, self.std = channel_stats(self.images, self.split_indices["train"])
        self.class_counts = {
            k: torch.bincount(self.labels[v], minlength=self.num_classes).tolist()
            for k, v in self.split_indices.items()
        }
        self.test_ids = [self.ids[i] for i in self.split_indices["test"].tolist()]
        if n_val:
            # Defined only with a validation split, so Lightning runs no validation loop otherwise.
            self.val_dataloader = self._val_dataloader
        self.metadata = {
            "dataset": self.name,
            "synthetic": self.is_synthetic,
            "root": str(self.root.resolve()),
            "image_size": self.image_size,
            "split_seed": self.split_seed,
            "n_total": total,
            "n_train": len(self.split_indices["train"]),
            "n_val": len(self.split_indices["val"]),
            "n_test": len(self.split_indices["test"]),
            "class_names": list(self.class_names),
            "class_counts": self.class_counts,
            "skipped": len(self.skipped),
            "skipped_items": self.skipped,
            "cache": str(self.cache_file.resolve()),
            "mean": self.mean,
            "std": self.std,
        }

    # --- loaders ------------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = BatchTensorDataset(
            self.images,
            self.labels,
            self.split_indices[split],
            self.mean,
            self.std,
            crop=self.image_size,
            train=train,
            flips=self.flips,
            rrc_scale=self.rrc_scale,
        )
        sampler = RandomSampler(ds) if train else SequentialSampler(ds)
        return DataLoader(
            ds,
            sampler=BatchSampler(sampler, self.batch_size, drop_last=False),
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
