"""Real BCCD (from LBAM_DATA_DIR or ../shared/data): counts, skipped and duplicate boxes, the image-level split,
pinned to what the code of d5ef74f produced, and the pinned content digest."""

import hashlib

import numpy as np
import pytest
import torch

from lbam.data import BCCDDataModule, DataError
from lbam.data.bccd import BCCD_CONTENT_SHA256, CLASS_NAMES, content_digest, index_voc, parse_annotation
from lbam.data.split import plan_split
from lbam.results import digest

pytestmark = pytest.mark.bccd
RAW = {"RBC": 4155, "WBC": 372, "Platelets": 361}  # every box in the public annotations
SIZE = 32  # small crops keep the session cache cheap; the split does not depend on the size


def make(root, cache, **kw):
    return BCCDDataModule(root=root, cache_dir=cache, **{"image_size": SIZE, "batch_size": 256, **kw})


def ready(root, cache, **kw):
    dm = make(root, cache, **kw)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def dm(bccd_root, data_cache):
    return ready(bccd_root, data_cache)


@pytest.fixture(scope="module")
def index(bccd_root):
    idx = index_voc(bccd_root / "BCCD")
    dup = {d["id"] for d in idx.duplicates}
    keep = [k for k, i in enumerate(idx.ids) if i not in dup]
    return idx, [idx.ids[k] for k in keep], idx.labels[keep]


def test_annotations_hold_4888_boxes(bccd_root):
    names = [n for f in (bccd_root / "BCCD" / "Annotations").glob("*.xml") for n, _ in parse_annotation(f)]
    assert len(names) == 4888
    assert {c: names.count(c) for c in RAW} == RAW


def test_index_skips_two_degenerate_boxes_and_finds_seven_duplicates(index):
    idx, ids, _ = index
    assert idx.n_sources == 364 and len(idx.ids) == 4886
    assert idx.skipped == [
        {
            "id": "BloodImage_00338#12",
            "reason": "degenerate box (xmin=504, ymin=337, xmax=504, ymax=337): zero or negative area",
        },
        {
            "id": "BloodImage_00343#3",
            "reason": "degenerate box (xmin=181, ymin=329, xmax=181, ymax=329): zero or negative area",
        },
    ]
    assert len(idx.duplicates) == 7 and all(d["iou"] > 0.9 for d in idx.duplicates)
    by_id = dict(zip(idx.ids, idx.labels.tolist()))
    for d in idx.duplicates:  # same image, same label (all RBC)
        assert d["id"].split("#")[0] == d["of"].split("#")[0]
        assert by_id[d["id"]] == by_id[d["of"]] == CLASS_NAMES.index("RBC")
    assert len(ids) == 4879


def test_default_split_is_by_image_near_4000_train_crops(dm):
    m = dm.metadata
    assert m["split_by"] == "image" and m["drop_duplicates"] and m["duplicates"] == 7
    assert m["n_total"] == 4879 and m["n_train"] + m["n_test"] == 4879 and m["n_val"] == 0
    assert abs(m["n_train"] - 4000) <= 15  # half the largest image (30 boxes)
    train_images = {i.split("#")[0] for i in dm.train_ids}
    test_images = {i.split("#")[0] for i in dm.test_ids}
    assert not train_images & test_images
    assert len(train_images) + len(test_images) == 364 == m["n_images"]
    assert m["images"] == {"train": len(train_images), "val": 0, "test": len(test_images)}
    totals = [sum(m["class_counts"][s][c] for s in ("train", "test")) for c in range(3)]
    assert dict(zip(CLASS_NAMES, totals)) == {"WBC": 372, "RBC": 4146, "Platelets": 361}
    share = np.array(totals) / sum(totals)
    assert np.abs(np.array(m["class_counts"]["test"]) / m["n_test"] - share).max() < 0.01


def test_no_image_on_two_sides_for_many_seeds(index):
    _, ids, labels = index
    kw = {"name": "bccd", "split_by": "image", "train_size": 4000, "test_size": None}
    for seed in range(40):
        p = plan_split(labels, ids, split_seed=seed, val_size=0.1, **kw)
        sides = [{ids[i].split("#")[0] for i in p[k]} for k in ("train", "val", "test")]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2]), seed
        assert abs(len(p["train_split"]) - 4000) <= 15
        assert abs(len(p["val"]) - 0.1 * len(p["train_split"])) <= 15


def test_crop_split_reproduces_the_old_sizes(bccd_root, data_cache):
    dm = ready(bccd_root, data_cache, split_by="crop", drop_duplicates=False)
    m = dm.metadata
    assert (m["n_train"], m["n_test"]) == (4000, 886)
    counts = torch.bincount(dm.labels, minlength=3).double()
    for split, n in (("train", 4000), ("test", 886)):
        got = torch.tensor(m["class_counts"][split], dtype=torch.float64)
        assert (got - counts * n / len(dm.labels)).abs().max() <= 1
    assert m["images"]["test"] > 300  # crops of most smears on both sides: why it is not the default


def test_split_is_deterministic_and_seeded(dm, bccd_root, data_cache):
    again = ready(bccd_root, data_cache)
    assert again.cache_hit and again.test_ids == dm.test_ids and again.train_ids == dm.train_ids
    other = ready(bccd_root, data_cache, split_seed=1)
    assert other.test_ids != dm.test_ids
    before = dm.split_indices
    dm.setup("fit")
    dm.setup("test")
    assert dm.split_indices is before


def test_subset_leaves_the_test_split_alone(dm, bccd_root, data_cache):
    for n, seed in ((25, 0), (25, 1), (400, 0)):
        sub = ready(bccd_root, data_cache, train_subset=n, subset_seed=seed, val_size=0.2)
        assert sub.test_ids == dm.test_ids
        assert len(sub.train_ids) + len(sub.val_ids) == n
        assert set(sub.train_ids + sub.val_ids) <= set(dm.train_ids)
        assert min(sub.metadata["class_counts"]["train"]) >= 1
        assert sub.metadata["n_train_split"] == len(dm.train_ids)


def test_test_loader_follows_test_ids(dm):
    labels = torch.cat([y for _, y in dm.test_dataloader()])
    by_id = dict(zip(dm.ids, dm.labels.tolist()))
    assert labels.tolist() == [by_id[i] for i in dm.test_ids]


def test_describe_rebuilds_the_same_test_split(dm, bccd_root, data_cache):
    from hydra.utils import instantiate

    spec = dm.describe()
    assert spec["_target_"] == "lbam.data.bccd.BCCDDataModule"
    assert not {"root", "cache_dir", "num_workers", "pin_memory", "download"} & set(spec)
    rebuilt = instantiate({**spec, "root": str(bccd_root), "cache_dir": str(data_cache)})
    rebuilt.setup("test")
    assert rebuilt.test_ids == dm.test_ids


def test_too_large_sizes_fail_before_decoding(bccd_root, tmp_path, monkeypatch):
    import PIL.ImageFile

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded an image"))
    for kw, match in (
        ({"train_size": 5000}, "4879 are usable"),
        ({"train_subset": 4500}, "train_subset=4500"),
    ):
        with pytest.raises(DataError, match=match):
            make(bccd_root, tmp_path, **kw).setup()
    assert not (tmp_path / "bccd").exists()  # no cache built either


def test_split_ids_and_crops_are_those_of_d5ef74f(dm):
    """The 4,001 / 878 split, the sample ids, labels and crop pixels at 32 px, as the code of d5ef74f made them
    (digests computed with that checkout): the learning-curve experiment depends on them."""
    assert (len(dm.train_ids), len(dm.test_ids)) == (4001, 878)
    assert dm.split_hash == "d12e296f6aca4c5a" == dm.metadata["split_hash"]
    assert dm.split_hash == digest({"train": dm.train_ids, "val": dm.val_ids, "test": dm.test_ids})
    assert digest(dm.ids) == "74bca985a2d99d5c" and digest(dm.labels.tolist()) == "843580460fc688f4"
    pixels = hashlib.sha256(dm.images.numpy().tobytes()).hexdigest()
    assert pixels == "c08899f21d428c0f4fdbf91a9fb29f7cb9bdd3ef93553767ce08d3f31696e403"


def test_real_bccd_is_the_pinned_content(bccd_root):
    assert content_digest(bccd_root / "BCCD") == BCCD_CONTENT_SHA256
