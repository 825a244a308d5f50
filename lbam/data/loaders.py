"""Batch loaders over the in-memory uint8 cache: whole batches of sample indices, or of gathered images.

Augmentation is not done here but in the DataModule's ``on_after_batch_transfer`` (lbam.data.augment), after the
batch reached the training device. With the cache on that device the loader yields index batches only and the
gather happens there; otherwise it gathers uint8 images and labels on the CPU (in workers when there are any).
"""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler


class BatchDataset(Dataset):
    """Indexed by a list of positions in ``indices`` (a split's sample indices), returns a whole batch: the sample
    indices themselves when ``images`` is None, else ``(images[i], labels[i])``, uint8 and int64."""

    def __init__(self, indices: torch.Tensor, images: torch.Tensor | None = None, labels=None):
        # The full tensors, indexed per batch: no per-split copy of the (large) image cache.
        self.indices, self.images, self.labels = indices, images, labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions):
        index = self.indices[torch.as_tensor(positions, dtype=torch.long)]
        if self.images is None:
            return index
        # index_select copies whole rows: 20x faster on the CPU than images[index] (measured at 128 px)
        return self.images.index_select(0, index), self.labels.index_select(0, index)


class ShuffledBatches(Sampler[list[int]]):
    """Shuffled full batches of ``n`` positions, the numbers of ``BatchSampler(RandomSampler(n), size, drop_last=
    True)``: each epoch draws a seed from torch's global CPU generator when its iteration starts, then takes
    ``randperm(n)`` under that seed. It can also replay an epoch: :meth:`resume` makes the next iteration use a
    recorded seed (no draw) and skip the batches already trained, so a run stopped mid-epoch by a signal resumes
    exactly (``lbam.interrupt``). ``seed`` is the current epoch's."""

    def __init__(self, n: int, size: int):
        self.n, self.size, self.seed = n, max(size, 1), None
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.n // self.size

    def resume(self, seed: int, done: int) -> None:
        self._resume = (int(seed), int(done))

    def __iter__(self):
        seed, done = self._resume or (int(torch.empty((), dtype=torch.int64).random_().item()), 0)
        self._resume, self.seed = None, seed
        generator = torch.Generator()
        generator.manual_seed(seed)
        order = torch.randperm(self.n, generator=generator).tolist()
        for i in range(done, len(self)):
            yield order[i * self.size : (i + 1) * self.size]


def batch_loader(
    ds: BatchDataset, batch_size: int, train: bool, num_workers: int, pin_memory: bool
) -> DataLoader:
    """Training: shuffled full batches only (``drop_last``: static shapes, and never a batch of one for batch
    norm); a training set smaller than one batch is one batch of the whole set, every epoch
    (:class:`ShuffledBatches`). Evaluation: every sample in order, the last batch possibly smaller."""
    size = min(batch_size, len(ds)) if train else batch_size
    sampler = ShuffledBatches(len(ds), size) if train else BatchSampler(SequentialSampler(ds), size, False)
    workers = num_workers if ds.images is not None else 0  # index batches cost nothing to make
    return DataLoader(
        ds,
        sampler=sampler,
        batch_size=None,  # the dataset returns whole batches
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory and ds.images is not None,
    )
