"""Synthetic twins through the real loaders: pets labels and messy files, VOC parsing, cache, loaders, split."""

import numpy as np
import PIL.Image
import pytest
import torch
from pytorch_lightning.utilities.model_helpers import is_overridden

from lbam.data import SyntheticBCCDDataModule, SyntheticPetsDataModule
from lbam.data.base import random_resized_crop, resolve_size, stratified_split
from lbam.data.synthetic import PETS_SPECIAL


@pytest.fixture(scope="module")
def pets(data_cache):
    dm = SyntheticPetsDataModule(cache_dir=data_cache, image_size=32)
    dm.prepare_data()
    with pytest.warns(UserWarning, match=r"British_Shorthair_1.*unreadable"):
        dm.setup()
    return dm


@pytest.fixture(scope="module")
def bccd(data_cache):
    dm = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16, val_size=0.2)
    with pytest.warns(UserWarning, match=r"skipped 1 item"):
        dm.setup()
    return dm


def test_pets_layout_is_the_official_one(pets):
    ann = pets.dataset_dir() / "annotations"
    header = [line for line in (ann / "list.txt").read_text().splitlines() if line.startswith("#")]
    assert header[0].startswith("#Image CLASS-ID SPECIES BREED ID") and len(header) == 6
    assert (ann / "test.txt").is_file()
    assert (pets.dataset_dir() / "images" / "Abyssinian_1.jpg").is_file()


def test_pets_labels_come_from_species_column(pets):
    species = {}
    for line in (pets.dataset_dir() / "annotations" / "trainval.txt").read_text().splitlines():
        image_id, _, sp, _ = line.split()
        species[image_id] = int(sp) - 1
    assert pets.name == "synthetic_pets" and pets.is_synthetic and pets.metadata["synthetic"]
    assert pets.class_names == ["cat", "dog"]
    assert len(pets.ids) == len(species) - 1  # all but the corrupt file
    for image_id, label in zip(pets.ids, pets.labels.tolist()):
        assert label == species[image_id]
        assert label == (0 if image_id[0].isupper() else 1)  # cat breeds are capitalised


def test_pets_non_rgb_converted_and_corrupt_skipped(pets):
    for image_id, mode in PETS_SPECIAL.items():
        if mode == "corrupt":
            assert image_id not in pets.ids
        else:
            assert PIL.Image.open(pets.dataset_dir() / "images" / f"{image_id}.jpg").mode == mode
            assert image_id in pets.ids
    gray = pets.images[pets.ids.index("Abyssinian_1")].int()
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert pets.images.shape[1:] == (3, pets.stored_size, pets.stored_size) and pets.stored_size == 37
    assert pets.metadata["skipped"] == 1
    assert pets.metadata["skipped_items"][0]["id"] == "British_Shorthair_1"


def test_pets_loaders_crop_to_image_size(pets):
    x, y = next(iter(pets.train_dataloader()))
    assert x.shape == (pets.batch_size, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xt, _ = next(iter(pets.test_dataloader()))
    assert xt.shape[1:] == (3, 32, 32)
    xt2, _ = next(iter(pets.test_dataloader()))
    assert torch.equal(xt, xt2)


def test_bccd_twin_parsed_with_varied_whitespace(bccd):
    xml = (bccd.dataset_dir() / "Annotations" / "BloodImage_00000.xml").read_text()
    assert "<name> RBC </name>" in xml and "<name>\n" in xml
    assert bccd.name == "synthetic_bccd" and bccd.is_synthetic
    # 40 images x 6 cells + 2 extra boxes on image 0, of which the degenerate one is skipped
    assert len(bccd.ids) == 241
    assert torch.bincount(bccd.labels).tolist() == [40, 161, 40]
    assert "BloodImage_00000#7" in bccd.ids  # the box past the border is clipped, not dropped
    assert bccd.metadata["skipped_items"] == [
        {"id": "BloodImage_00000#6", "reason": "empty box after clipping to the image"}
    ]


def test_val_split_and_val_loader_only_when_asked(bccd, data_cache):
    m = bccd.metadata
    assert m["n_train"] + m["n_val"] + m["n_test"] == 241 and m["n_val"] == round(0.2 * 181)
    assert is_overridden("val_dataloader", bccd)
    assert sum(len(y) for _, y in bccd.val_dataloader()) == m["n_val"]
    plain = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16)
    with pytest.warns(UserWarning):
        plain.setup()
    assert plain.metadata["n_val"] == 0 and not is_overridden("val_dataloader", plain)


def test_train_loader_normalised_and_augmented(bccd):
    torch.manual_seed(0)
    xs = torch.cat([x for x, _ in bccd.train_dataloader()])
    assert xs.shape == (bccd.metadata["n_train"], 3, 16, 16)
    # flips move pixels but keep per-channel statistics: train split ~ zero mean, unit std
    assert torch.allclose(xs.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(xs.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
    seen = []
    for _ in range(2):
        torch.manual_seed(1)
        seen.append(next(iter(bccd.train_dataloader())))
    assert torch.equal(seen[0][0], seen[1][0])  # reproducible under a seed
    torch.manual_seed(2)
    _, y3 = next(iter(bccd.train_dataloader()))
    assert not torch.equal(seen[0][1], y3)  # shuffled per epoch


def test_cache_hit_never_decodes(bccd, data_cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image on a cache hit")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    again = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16, val_size=0.2)
    with pytest.warns(UserWarning):
        again.setup()
    assert again.cache_hit and again.cache_file == bccd.cache_file
    assert torch.equal(again.images, bccd.images)
    bigger = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=24)
    with pytest.raises(AssertionError, match="decoded"):  # another size is another cache entry
        bigger.setup()


def test_stratified_split_properties():
    labels = np.random.default_rng(0).integers(0, 4, 503)
    a = stratified_split(labels, 300, 150, 30, seed=7)
    b = stratified_split(labels, 300, 150, 30, seed=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [len(a[k]) for k in ("train", "val", "test")] == [270, 30, 150]
    allidx = np.concatenate(list(a.values()))
    assert len(np.unique(allidx)) == len(allidx) == 450
    counts = np.bincount(labels)
    for k, n in (("test", 150), ("val", 30)):
        assert np.abs(np.bincount(labels[a[k]], minlength=4) - counts * n / len(labels)).max() <= 1
    c = stratified_split(labels, 300, 150, 30, seed=8)
    assert not np.array_equal(a["test"], c["test"])


def test_sizes_and_constructor_checks(data_cache):
    assert resolve_size(0.25, 100, "x") == 25 and resolve_size(40, 100, "x") == 40
    assert resolve_size(None, 100, "x") is None and resolve_size(1.0, 100, "x") == 1
    for bad in (-3, 1.5, "half", True):
        with pytest.raises(ValueError, match="x"):
            resolve_size(bad, 100, "x")
    with pytest.raises(ValueError, match="image_size"):
        SyntheticBCCDDataModule(cache_dir=data_cache, image_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        SyntheticBCCDDataModule(cache_dir=data_cache, num_workers=-1)


@pytest.mark.parametrize(("cores", "workers"), [(2, 0), (1, 0), (6, 4), (64, 8)])
def test_num_workers_null_leaves_two_cores_for_compute(data_cache, monkeypatch, cores, workers):
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert SyntheticBCCDDataModule(cache_dir=data_cache, num_workers=None).num_workers == workers


def test_random_resized_crop_shapes_and_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    out = random_resized_crop(x, 4, (0.5, 1.0), hflip=True)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    half = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    half[..., 4:] = 255  # dark left, bright right
    kept = random_resized_crop(half, 8, (1.0, 1.0), hflip=False)
    assert (kept[..., 0].mean(dim=(1, 2)) < kept[..., -1].mean(dim=(1, 2))).all()
    torch.manual_seed(0)
    flipped = random_resized_crop(half, 8, (1.0, 1.0), hflip=True)
    left_bright = (flipped[..., 0].mean(dim=(1, 2)) > flipped[..., -1].mean(dim=(1, 2))).sum().item()
    assert 10 < left_bright < 54  # about half the batch mirrored
