"""The DataModule interface that the runner and the report read: setup (content check, index, plan, damage check,
cache), the loaders and the batch hook that augments on the training device."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from lbam.data import cache, damage, verify
from lbam.data.augment import augment, channel_stats
from lbam.data.errors import (  # noqa: F401 (re-exported)
    DataError,
    DatasetNotFoundError,
    check_root,
    incomplete,
    not_found,
)
from lbam.data.index import Index
from lbam.data.loaders import BatchDataset, batch_loader
from lbam.data.split import SPLIT_BY, plan_split, resolve_size
from lbam.results import digest


class DataModule(pl.LightningDataModule):
    """The declared interface of a dataset, the one thing the runner and the report read from it.

    Right after ``__init__`` (no data read): ``name``, ``is_synthetic``, ``class_names``, ``num_classes``
    and :meth:`describe`. After :meth:`setup` (idempotent, fixed-seed split): ``metadata`` (JSON-
    serialisable; ``root`` and ``cache`` are its only machine paths), ``train_ids``, ``val_ids``, ``test_ids``
    (sample ids in loader order), ``split_hash``, ``mean`` and ``std`` (per channel, of the training samples)
    and the loaders. Only :meth:`prepare_data` downloads. A problem the user can fix raises :class:`DataError`.

    Batches: the loaders yield uint8 images and labels (or, with the cache on the training device, sample
    indices); :meth:`on_after_batch_transfer` (Lightning calls it on the device) turns them into ``(x float32
    N×3×S×S normalised, y int64 N)``, augmented in training. Outside a Trainer call :meth:`transform`.

    Subclasses set ``name``, ``classes``, ``urls``, ``folder`` (``dataset_dir()`` is ``root/folder``), ``unit``,
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
    unit: str = "samples"  # what one sample is, in messages: crops, images
    required: tuple[str, ...] = ()  # paths under dataset_dir() that must exist
    fingerprinted: tuple[str, ...] = ()  # glob patterns under dataset_dir() of the files verified and hashed
    # What pins the content (lbam.data.verify): a manifest in the package and its digest, else the folder's own.
    pinned_manifest: Path | None = None
    pinned_digest: str | None = None
    pinned_test_splits: dict[tuple, str] = {}  # noqa: RUF012 (read-only) split options -> digest of the test ids
    may_create_root: bool = False  # only the default <root>/data may be created by a download
    metadata: dict  # this and the rest after setup()
    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    split_hash: str
    mean: list[float]
    std: list[float]
    # The constructor arguments that define the data and its split (the others say where it lives and how
    # it is loaded on this machine: root, cache_dir, num_workers, pin_memory, on_device, download).
    DEFINING = ("image_size", "train_size", "test_size", "val_size", "split_by", "split_seed",
                "drop_duplicates", "train_subset", "subset_seed", "batch_size")  # fmt: skip

    def __init__(
        self, root: str | Path = "data", cache_dir: str | Path = "data/.cache", image_size: int = 128,
        train_size: int | float = 0.8, test_size: int | float | None = None, val_size: int | float = 0,
        split_by: str = "image", split_seed: int = 0, drop_duplicates: bool = True,
        train_subset: int | None = None, subset_seed: int = 0, batch_size: int = 64,
        num_workers: int | None = 0, pin_memory: bool | None = None, on_device: str | bool = "auto",
        download: bool = False, verify: bool = True,
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
        for key, value in (("drop_duplicates", drop_duplicates), ("verify", verify)):
            if not isinstance(value, bool):
                raise DataError(f"{self.name}: {key} must be true or false, got {value!r}")
        if not (isinstance(on_device, bool) or on_device == "auto"):
            raise DataError(f"{self.name}: on_device must be auto, true or false, got {on_device!r}")
        for key, value in (("train_size", train_size), ("test_size", test_size), ("val_size", val_size)):
            resolve_size(value, 1, f"{self.name}: {key}")  # types now; bounds need the index
        self.root, self.cache_dir = Path(root), Path(cache_dir)
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.train_size, self.test_size, self.val_size = train_size, test_size, val_size
        self.split_by, self.split_seed, self.drop_duplicates = split_by, split_seed, drop_duplicates
        self.train_subset, self.subset_seed = train_subset, subset_seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.on_device, self.download, self.verify = on_device, bool(download), verify
        self.data_sha256: str | None = None  # after setup (lbam.data.verify)
        self.data_verified: bool | None = None
        self.class_names, self.num_classes = list(self.classes), len(self.classes)
        self._ready = False
        self.train_sampler = None
        self.resume_at: tuple[int, int] | None = (
            None  # (epoch seed, batches done) of an epoch stopped mid-way
        )
        self._placed: tuple[torch.Tensor, torch.Tensor] | None = None  # the cache on the training device
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

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
        """Whether the dataset folder is there; DataError when it is there but incomplete (an empty folder, a
        broken or looping link): downloading would not replace it, so the fix is to remove it first."""
        if not self.may_create_root:
            check_root(self.name, self.root, self.folder)
        folder = self.dataset_dir()
        if not os.path.lexists(folder):
            return False
        missing = [p for p in self.required if not (folder / p).exists()]
        if missing:
            raise incomplete(self.name, folder, missing)
        return True

    def prepare_data(self) -> None:
        if not self._exists():
            if not self.download:
                raise not_found(self.name, self.dataset_dir(), self.urls, "download=False")
            self._fetch()

    def _plan(self, ids: list[str], labels) -> dict[str, np.ndarray]:
        split_args = set(self.DEFINING) - {"image_size", "batch_size", "drop_duplicates"}
        return plan_split(labels, ids, name=self.name, **{k: getattr(self, k) for k in split_args})

    def setup(self, stage: str | None = None) -> None:
        """Check the source files against their pinned digests, index them (cheap), plan the split (sizes checked)
        and weigh the damage, then load or build the decoded cache, weigh the damage again with the images the
        decoder rejected, and check a pinned test split."""
        if self._ready:
            return
        if not self._exists():
            raise not_found(self.name, self.dataset_dir(), self.urls)
        verify.check_content(
            self
        )  # the files are the pinned ones (or dataset.verify=false says so), then index
        index = self._index(self.dataset_dir())
        dropped = {d["id"] for d in index.duplicates} if self.drop_duplicates else set()
        planned = [i for i in index.ids if i not in dropped]
        damage.check(self, index.skipped, index.n_sources, len(planned))  # before the sizes are checked
        plan = self._plan(planned, index.labels[[i not in dropped for i in index.ids]])  # before any decoding
        damage.check(self, index.skipped, index.n_sources, len(planned), plan)
        data = self._cached(index)
        self.images, self.labels, self.ids = data["images"], data["labels"], list(data["ids"])
        self.skipped = index.skipped + list(data["skipped"])  # + images whose pixels could not be decoded
        keep = np.array([k for k, i in enumerate(self.ids) if i not in dropped], dtype=np.int64)
        if [self.ids[k] for k in keep] != planned:  # decoding dropped images: plan on what is left
            plan = self._plan([self.ids[k] for k in keep], self.labels.numpy()[keep])
            damage.check(self, self.skipped, index.n_sources, len(keep), plan)
        damage.report_skipped(self.name, self.dataset_dir(), self.skipped)
        n_train_split = len(plan.pop("train_split"))
        self.split_indices = {k: torch.from_numpy(keep[v]) for k, v in plan.items()}
        self._describe(index, len(keep), n_train_split)
        verify.check_split(self)
        self._ready = True

    def cache_key(self) -> dict:
        """What the cached images are: the dataset, its source files, the stored side, the decoder, the version."""
        decoder = getattr(self._decode, "__qualname__", type(self._decode).__name__)
        return {
            "dataset": self.name,
            "source": self.data_sha256,  # the content digest of the source files (lbam.data.verify)
            "side": self.stored_size,
            "decoder": f"{getattr(self._decode, '__module__', '')}.{decoder}",
            "version": cache.CACHE_VERSION,
        }

    def _cached(self, index: Index) -> dict:
        """The decoded samples: read from the cache file when it passes its checks (lbam.data.cache), else
        decoded once and written atomically."""
        key = self.cache_key()
        self.cache_file = cache.cache_path(self.cache_dir, key)
        data = cache.load(self.cache_file, key, index)
        self.cache_hit = data is not None
        if data is None:
            data = self._decode(self.dataset_dir(), index, self.stored_size)
            cache.save(self.cache_file, key, data)
        return data

    def _describe(self, index: Index, n_usable: int, n_train_split: int) -> None:
        split = self.split_indices
        ids = {k: [self.ids[i] for i in v.tolist()] for k, v in split.items()}
        self.train_ids, self.val_ids, self.test_ids = ids["train"], ids["val"], ids["test"]
        self.split_hash = digest({"train": ids["train"], "val": ids["val"], "test": ids["test"]})
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
            "split_hash": self.split_hash,
            "data_sha256": self.data_sha256,
            "data_verified": self.data_verified,
        }

    def gathers_on_device(self) -> bool:
        """Whether the cache goes to the training device and the loaders yield sample indices: ``on_device``, where
        ``auto`` means when the Trainer's root device is CUDA (off outside a Trainer)."""
        if self.on_device != "auto":
            return bool(self.on_device)
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader(self, split: str, train: bool):
        indices = self.split_indices[split]
        on = self.gathers_on_device()  # index batches; else gathered uint8 batches
        ds = BatchDataset(indices) if on else BatchDataset(indices, self.images, self.labels)
        loader = batch_loader(ds, self.batch_size, train, self.num_workers, self.pin_memory)
        if train:
            self.train_sampler = loader.sampler  # its epoch's seed, read by a mid-epoch save (lbam.interrupt)
            if self.resume_at is not None:
                loader.sampler.resume(*self.resume_at)
                self.resume_at = None
        return loader

    def train_dataloader(self):
        return self._loader("train", train=True)

    def _val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)

    def transform(self, batch, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader's batch (sample indices, or uint8 images and labels) → ``(x, y)`` on the batch's device: the
        gather from the cache (moved to that device once), then :func:`lbam.data.augment.augment`. Training
        consumes the batch: its uint8 images are flipped in place, as the old loader flipped its gathered copy."""
        if isinstance(batch, torch.Tensor):
            if self._placed is None or self._placed[0].device != batch.device:
                self._placed = (self.images.to(batch.device), self.labels.to(batch.device))
            x, y = self._placed[0].index_select(0, batch), self._placed[1].index_select(0, batch)
        else:
            x, y = batch
        if x.device not in self._norm:  # per channel, in pixel units, as the old loader built them
            mean, std = (
                torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) * 255 for v in (self.mean, self.std)
            )
            self._norm[x.device] = (mean.to(x.device), std.to(x.device))
        mean, std = self._norm[x.device]
        return augment(x, self.image_size, train, self.flips, self.rrc_scale, mean, std), y

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Lightning's hook, on the training device: augment in the training loop, centre-crop otherwise."""
        trainer = self.trainer
        return self.transform(batch, train=trainer is not None and trainer.training)
