"""Loaders and the batch hook: bit-identical batches to the old per-batch loader on the CPU, the on-device path
(index batches, gather in the hook) against the CPU path, static training shapes, the augmentation's distribution."""

import math
import types

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from lbam.data import BCCDDataModule, DataModule, SyntheticBCCDDataModule, SyntheticPetsDataModule
from lbam.data.augment import normalise, random_flips, random_resized_crop
from lbam.data.loaders import BatchDataset, ShuffledBatches


# --- the loader of d5ef74f, verbatim but for names: the reference the new path must reproduce bit for bit ---
class OldBatchTensorDataset(Dataset):
    def __init__(self, images, labels, indices, mean, std, crop, train, flips=(), rrc_scale=None):
        self.images, self.labels, self.indices, self.train = images, labels, indices, train
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.crop, self.flips, self.rrc_scale = crop, tuple(flips), rrc_scale

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        index = self.indices[torch.as_tensor(index, dtype=torch.long)]
        x, y = self.images[index], self.labels[index]
        if self.train and self.rrc_scale is not None:
            x = old_random_resized_crop(x, self.crop, self.rrc_scale, hflip=-1 in self.flips)
        else:
            top, left = (x.shape[-2] - self.crop) // 2, (x.shape[-1] - self.crop) // 2
            x = x[..., top : top + self.crop, left : left + self.crop]
            if self.train:
                for dim in self.flips:
                    flip = (torch.rand(len(x)) < 0.5).nonzero().squeeze(1)
                    x[flip] = x[flip].flip(dim)
            x = x.float()
        return x.sub_(self.mean).div_(self.std), y


def old_random_resized_crop(x, size, scale, hflip):
    n = len(x)
    area = torch.empty(n).uniform_(*scale)
    log_r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_r)
    sw = torch.sqrt(area * ratio).clamp(max=1.0)
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(n) * 2 - 1) * (1 - sw)
    ty = (torch.rand(n) * 2 - 1) * (1 - sh)
    sign = torch.where(torch.rand(n) < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * sign, tx
    theta[:, 1, 1], theta[:, 1, 2] = sh, ty
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def old_loader(dm, split, train):
    ds = OldBatchTensorDataset(dm.images, dm.labels, dm.split_indices[split], dm.mean, dm.std,
                               crop=dm.image_size, train=train, flips=dm.flips, rrc_scale=dm.rrc_scale)  # fmt: skip
    sampler = RandomSampler(ds) if train else SequentialSampler(ds)
    drop_last = train and len(ds) % dm.batch_size == 1
    return DataLoader(ds, sampler=BatchSampler(sampler, dm.batch_size, drop_last=drop_last), batch_size=None)


def epochs(make, transform, n=3):
    """``n`` epochs of (x, y) batches, the way Lightning draws them: a new iterator per epoch."""
    return [[transform(b) for b in make()] for _ in range(n)]


def fake(n, side=8, batch_size=32, flips=(-1, -2), rrc=None, seed=0):
    """A DataModule over ``n`` random uint8 images, without files."""
    dm = DataModule(batch_size=batch_size, on_device=False)
    g = torch.Generator().manual_seed(seed)
    dm.images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    dm.labels = torch.arange(n) % 3
    dm.split_indices = {"train": torch.arange(n), "test": torch.arange(n)}
    dm.mean, dm.std, dm.image_size = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], side * 7 // 8 if rrc else side
    dm.flips, dm.rrc_scale = flips, rrc
    return dm


def assert_same(a, b):
    assert len(a) == len(b) and all(len(ea) == len(eb) for ea, eb in zip(a, b))
    for ea, eb in zip(a, b):
        for (xa, ya), (xb, yb) in zip(ea, eb):
            assert xa.dtype == xb.dtype == torch.float32 and torch.equal(ya, yb)
            assert torch.equal(xa, xb)  # bit for bit


# n = 4001-like (n % 32 == 1, dropped before too), 25 (less than a batch), 64: batches that did not change
@pytest.mark.parametrize("n", [65, 25, 64])
@pytest.mark.parametrize("kind", ["flips", "rrc"])
def test_cpu_batches_are_bit_identical_to_the_old_loader(n, kind):
    dm = fake(n, rrc=(0.35, 1.0) if kind == "rrc" else None, flips=(-1,) if kind == "rrc" else (-1, -2))
    for split, train in (("train", True), ("test", False)):
        torch.manual_seed(3)
        old = epochs(lambda split=split, train=train: old_loader(dm, split, train), lambda b: tuple(b))
        torch.manual_seed(3)
        make = dm.train_dataloader if train else dm.test_dataloader
        new = epochs(make, lambda b, train=train: dm.transform(b, train))
        assert_same(new, old)


@pytest.mark.parametrize("kind", ["flips", "rrc"])
def test_the_global_generator_ends_where_the_old_loader_left_it(kind):
    dm = fake(65, rrc=(0.35, 1.0) if kind == "rrc" else None)  # 65 = 2 x 32 + 1: unchanged batches
    torch.manual_seed(5)
    epochs(lambda: old_loader(dm, "train", True), tuple)
    after_old = torch.rand(4)
    torch.manual_seed(5)
    epochs(dm.train_dataloader, lambda b: dm.transform(b, True))
    assert torch.equal(torch.rand(4), after_old)  # same number and order of draws


@pytest.mark.parametrize("kind", ["flips", "rrc"])
def test_on_device_path_matches_the_cpu_path(kind):
    """on_device=true on CPU tensors: index batches, the gather in the hook; same batches as gathering in the
    loader (same draws), the test loader in test_ids order."""
    dm = fake(90, rrc=(0.35, 1.0) if kind == "rrc" else None)
    on = fake(90, rrc=(0.35, 1.0) if kind == "rrc" else None)
    on.on_device = True
    raw = next(iter(on.train_dataloader()))
    assert raw.dtype == torch.int64 and raw.shape == (32,)  # sample indices only
    for train in (True, False):
        torch.manual_seed(7)
        cpu = epochs(
            dm.train_dataloader if train else dm.test_dataloader, lambda b, t=train: dm.transform(b, t)
        )
        torch.manual_seed(7)
        dev = epochs(
            on.train_dataloader if train else on.test_dataloader, lambda b, t=train: on.transform(b, t)
        )
        assert_same(dev, cpu)
    assert torch.cat([y for _, y in dev[0]]).tolist() == dm.labels.tolist()  # test order = split order


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gather_and_augment_on_the_device():
    dm = fake(100, side=16, flips=(-1, -2))
    dm.on_device = True
    torch.manual_seed(0)
    batches = []
    for b in dm.train_dataloader():
        x, y = dm.transform(b.cuda(), train=True)
        batches.append((x, y))
    assert all(
        x.device.type == "cuda" and x.dtype == torch.float32 and x.shape == (32, 3, 16, 16)
        for x, _ in batches
    )
    assert dm._placed[0].device.type == "cuda"  # the cache moved once
    cpu = torch.cat([dm.transform(b, False)[0] for b in fake(100, side=16).test_dataloader()])
    dev = torch.cat([dm.transform(b.cuda(), False)[0].cpu() for b in dm.test_dataloader()])
    assert torch.allclose(cpu, dev, atol=1e-5)  # evaluation: no draws, the same numbers
    pets = fake(64, side=32, rrc=(0.35, 1.0), flips=(-1,))
    pets.on_device = True
    x, _ = pets.transform(next(iter(pets.train_dataloader())).cuda(), True)
    assert x.shape == (32, 3, 28, 28) and x.is_cuda and torch.isfinite(x).all()


@pytest.mark.parametrize(
    ("n", "train_batches"), [(65, [32, 32]), (66, [32, 32]), (64, [32, 32]), (33, [32]), (25, [25]), (2, [2])]
)
@pytest.mark.parametrize("on_device", [False, True])
def test_training_batches_are_full_and_eval_sees_every_sample(n, train_batches, on_device):
    dm = fake(n)
    dm.on_device = on_device
    for _ in range(2):  # every epoch: a set smaller than a batch is one batch of all of it
        assert [len(dm.transform(b, True)[1]) for b in dm.train_dataloader()] == train_batches
    test = [dm.transform(b, False)[1] for b in dm.test_dataloader()]
    assert [len(y) for y in test] == [32] * (n // 32) + ([n % 32] if n % 32 else [])
    assert torch.cat(test).tolist() == dm.labels.tolist()


def test_hook_augments_in_training_only_and_knows_the_device():
    dm = fake(64, side=8)

    def batch():  # a fresh batch each time: training consumes it (flips in place)
        return next(iter(dm.test_dataloader()))

    assert dm.gathers_on_device() is False and dm.trainer is None
    plain = dm.on_after_batch_transfer(batch(), 0)[0]  # outside a Trainer: evaluation
    assert torch.equal(plain, dm.transform(batch(), False)[0])
    trainer = types.SimpleNamespace(
        training=True, strategy=types.SimpleNamespace(root_device=torch.device("cpu"))
    )
    dm.trainer = trainer
    torch.manual_seed(0)
    assert not torch.equal(dm.on_after_batch_transfer(batch(), 0)[0], plain)  # flipped samples
    trainer.training = False
    assert torch.equal(dm.on_after_batch_transfer(batch(), 0)[0], plain)
    dm.on_device = "auto"
    assert not dm.gathers_on_device()
    trainer.strategy.root_device = torch.device("cuda", 0)
    assert dm.gathers_on_device() and isinstance(next(iter(dm.test_dataloader())), torch.Tensor)


@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("kind", ["flips", "rrc"])
def test_augmenting_never_touches_the_cache(on_device, kind):
    dm = fake(64, rrc=(0.35, 1.0) if kind == "rrc" else None)
    dm.on_device = on_device
    before = dm.images.clone()
    for train in (True, False):
        for _ in range(3):
            for b in dm.train_dataloader() if train else dm.test_dataloader():
                dm.transform(b, train)
    assert torch.equal(dm.images, before)


def test_normalise_keeps_uint8_until_the_subtraction():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean = torch.tensor([120.0, 110.0, 100.0]).view(1, 3, 1, 1)
    std = torch.tensor([50.0, 60.0, 70.0]).view(1, 3, 1, 1)
    out = normalise(x, mean, std)
    assert out.dtype == torch.float32 and torch.equal(out, x.float().sub_(mean).div_(std))
    assert x.dtype == torch.uint8  # the input is left alone


def test_flips_happen_half_the_time_along_each_axis():
    x = torch.zeros(4000, 3, 4, 4, dtype=torch.uint8)
    x[:, :, 0, 0] = 255  # a mark in the top-left corner shows which flips were applied
    torch.manual_seed(0)
    out = random_flips(x.clone(), (-1, -2))
    right = out[:, 0, :, -1].amax(1) == 255
    bottom = out[:, 0, -1, :].amax(1) == 255
    assert abs(right.float().mean().item() - 0.5) < 0.03 and abs(bottom.float().mean().item() - 0.5) < 0.03
    both = (right & bottom).float().mean().item()
    assert abs(both - 0.25) < 0.03  # independent per axis
    assert (
        out.dtype == torch.uint8 and (out.sum((1, 2, 3)) == x.sum((1, 2, 3))).all()
    )  # pixels move, none change


def test_random_resized_crop_areas_lie_in_the_scale_range_and_flip_half():
    """A ramp image (channel 0 = column, 1 = row) shows each crop's extent and direction in its output."""
    side, n, scale = 256, 2000, (0.35, 1.0)
    ramp = torch.arange(side, dtype=torch.float32)
    x = torch.zeros(n, 3, side, side, dtype=torch.uint8)
    x[:, 0] = ramp.view(1, side).to(torch.uint8)
    x[:, 1] = ramp.view(side, 1).to(torch.uint8)
    torch.manual_seed(0)
    out = random_resized_crop(x, 64, scale, hflip=True)
    col, row = out[:, 0, 0, :], out[:, 1, :, 0]
    width = ((col[:, -1] - col[:, 0]).abs() * 64 / 63 + 1) / side  # crop side / image side
    height = ((row[:, -1] - row[:, 0]).abs() * 64 / 63 + 1) / side
    area = width * height
    assert area.min() >= scale[0] - 0.02 and area.max() <= scale[1] + 0.01
    assert area.min() < 0.45 and area.max() > 0.9  # the whole range is drawn
    mirrored = (col[:, -1] < col[:, 0]).float().mean().item()
    assert abs(mirrored - 0.5) < 0.04
    aspect = width / height
    assert aspect.min() > 0.7 and aspect.max() < 1.45  # 3/4 .. 4/3, up to the clamp at the image border


def test_random_resized_crop_shapes_and_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    out = random_resized_crop(x, 4, (0.5, 1.0), hflip=True)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    half = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    half[..., 4:] = 255  # dark left, bright right
    kept = random_resized_crop(half, 8, (1.0, 1.0), hflip=False)
    assert (kept[..., 0].mean(dim=(1, 2)) < kept[..., -1].mean(dim=(1, 2))).all()


@pytest.fixture(scope="module")
def twins(data_cache):
    bccd = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16)
    pets = SyntheticPetsDataModule(cache_dir=data_cache, image_size=32)
    bccd.setup()
    pets.setup()
    return bccd, pets


def test_twins_batches_have_the_shape_dtype_and_range_the_model_gets(twins):
    for dm in twins:
        for on_device in (False, True):
            dm.on_device = on_device
            for train, loader in ((True, dm.train_dataloader()), (False, dm.test_dataloader())):
                x, y = dm.transform(next(iter(loader)), train)
                assert x.dtype == torch.float32 and y.dtype == torch.int64
                assert x.shape == (len(y), 3, dm.image_size, dm.image_size)
                lo = (0 - torch.tensor(dm.mean)) / torch.tensor(dm.std)
                hi = (1 - torch.tensor(dm.mean)) / torch.tensor(dm.std)
                per_channel = x.transpose(0, 1).reshape(3, -1)
                assert (per_channel.amin(1) >= lo - 1e-4).all() and (per_channel.amax(1) <= hi + 1e-4).all()
        dm.on_device = "auto"
    bccd, pets = twins
    torch.manual_seed(0)
    train = torch.cat([bccd.transform(b, True)[0] for b in bccd.train_dataloader()])
    assert torch.allclose(train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.03)  # flips keep the statistics
    assert torch.allclose(train.std(dim=(0, 2, 3)), torch.ones(3), atol=0.03)
    batch = next(iter(pets.test_dataloader()))
    assert not torch.equal(
        pets.transform(batch, True)[0], pets.transform(batch, False)[0]
    )  # RRC moves content


@pytest.mark.bccd
def test_curve_batches_on_real_bccd_match_the_old_loader(bccd_root, data_cache):
    """The curve's full-split (4,001 crops) and 25-crop runs at 32 px, batch 32: the same batches as before."""
    for subset in (None, 25):
        dm = BCCDDataModule(
            root=bccd_root, cache_dir=data_cache, image_size=32, batch_size=32, train_subset=subset
        )
        dm.setup()
        assert len(dm.train_ids) == (4001 if subset is None else 25)
        torch.manual_seed(11)
        old = epochs(lambda dm=dm: old_loader(dm, "train", True), tuple, n=2)
        torch.manual_seed(11)
        assert_same(epochs(dm.train_dataloader, lambda b, dm=dm: dm.transform(b, True), n=2), old)


def test_batch_dataset_returns_indices_or_gathered_batches():
    idx = torch.tensor([5, 3, 9])
    images, labels = torch.arange(10 * 3).view(10, 3, 1, 1).to(torch.uint8), torch.arange(10)
    assert torch.equal(BatchDataset(idx)[[2, 0]], torch.tensor([9, 5]))
    x, y = BatchDataset(idx, images, labels)[[1]]
    assert torch.equal(y, torch.tensor([3])) and torch.equal(x, images[[3]])


class Recorder(pl.LightningModule):
    """Records what a Trainer hands the LightningModule, and trains one weight so that fit runs."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = {"train": [], "test": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append(batch)
        return (self.w * batch[0].mean()).sum()

    def test_step(self, batch, batch_idx):
        self.seen["test"].append(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("on_device", ["auto", True])
def test_a_trainer_hands_the_model_finished_batches(twins, on_device):
    bccd = twins[0]
    bccd.on_device = on_device
    model = Recorder()
    kw = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = pl.Trainer(max_steps=4, enable_model_summary=False, **kw)
    torch.manual_seed(0)
    trainer.fit(model, datamodule=bccd)
    trainer.test(model, datamodule=bccd, verbose=False)
    bccd.on_device = "auto"
    for x, y in model.seen["train"]:
        assert x.dtype == torch.float32 and x.shape == (bccd.batch_size, 3, 16, 16) and y.dtype == torch.int64
    x_test = torch.cat([x for x, _ in model.seen["test"]])
    expected = torch.cat([bccd.transform(b, False)[0] for b in bccd.test_dataloader()])
    assert torch.equal(x_test, expected)  # evaluation: the centre crop, no draws
    labels = dict(zip(bccd.ids, bccd.labels.tolist()))
    assert torch.cat([y for _, y in model.seen["test"]]).tolist() == [labels[i] for i in bccd.test_ids]


@pytest.mark.parametrize(("n", "size"), [(240, 16), (100, 32), (7, 32)])
def test_shuffled_batches_draw_the_numbers_of_randomsampler_and_can_replay_an_epoch(n, size):
    """The committed rows were trained with BatchSampler(RandomSampler(n), size, drop_last=True): the same batches
    from the same global RNG state, and the same RNG state after. An epoch resumed at batch k (a signal's
    checkpoint) replays the rest of the same batches without drawing."""
    size = min(size, n)
    torch.manual_seed(3)
    old = [list(b) for _ in range(2) for b in BatchSampler(RandomSampler(range(n)), size, drop_last=True)]
    after_old = torch.get_rng_state()
    torch.manual_seed(3)
    sampler = ShuffledBatches(n, size)
    new = [b for _ in range(2) for b in sampler]
    assert new == old and torch.equal(torch.get_rng_state(), after_old) and len(sampler) == n // size
    state = torch.get_rng_state()
    sampler.resume(sampler.seed, 1)
    assert list(sampler) == new[len(sampler) + 1 :] and torch.equal(torch.get_rng_state(), state)
