"""Real BCCD (from LBAM_DATA_DIR or ../shared/data): counts, skipped boxes, a deterministic stratified split."""

import pytest
import torch

from lbam.data import BCCDDataModule
from lbam.data.bccd import CLASS_NAMES, parse_annotation

pytestmark = pytest.mark.bccd
RAW = {"RBC": 4155, "WBC": 372, "Platelets": 361}  # every box in the public annotations
SIZE = 32  # small crops keep the session cache cheap; the split does not depend on the size


def make(root, cache, **kw):
    kw = {"image_size": SIZE, "batch_size": 256, **kw}
    return BCCDDataModule(root=root, cache_dir=cache, **kw)


@pytest.fixture(scope="module")
def dm(bccd_root, data_cache):
    with pytest.warns(UserWarning, match=r"bccd: skipped 2 item\(s\)"):
        module = make(bccd_root, data_cache)
        module.setup()
    return module


def test_annotations_hold_4888_boxes(bccd_root):
    names = [n for f in (bccd_root / "BCCD" / "Annotations").glob("*.xml") for n, _ in parse_annotation(f)]
    assert len(names) == 4888
    assert {c: names.count(c) for c in RAW} == RAW


def test_crops_classes_and_skipped(dm):
    assert dm.name == "bccd" and not dm.is_synthetic
    assert dm.class_names == list(CLASS_NAMES) and dm.num_classes == 3
    assert dm.images.shape == (4886, 3, SIZE, SIZE) and dm.images.dtype == torch.uint8
    assert dm.metadata["skipped"] == 2
    assert sorted(s["id"] for s in dm.metadata["skipped_items"]) == [
        "BloodImage_00338#12",
        "BloodImage_00343#3",
    ]
    totals = [sum(dm.class_counts[s][c] for s in ("train", "val", "test")) for c in range(3)]
    # both degenerate boxes are RBC
    assert dict(zip(CLASS_NAMES, totals)) == {"WBC": 372, "RBC": 4153, "Platelets": 361}


def test_split_sizes_and_stratification(dm):
    m = dm.metadata
    assert (m["n_train"], m["n_val"], m["n_test"]) == (4000, 0, 886)
    counts = torch.bincount(dm.labels, minlength=3)
    for split, n in (("train", 4000), ("test", 886)):
        expected = counts.double() * n / len(dm.labels)
        got = torch.tensor(dm.class_counts[split], dtype=torch.float64)
        assert (got - expected).abs().max() <= 1, (split, got, expected)


def test_no_overlap_and_everything_used(dm):
    train = {dm.ids[i] for i in dm.split_indices["train"].tolist()}
    test = set(dm.test_ids)
    assert not train & test
    assert len(train | test) == len(dm.ids) == len(set(dm.ids))


def test_split_is_deterministic_and_seeded(dm, bccd_root, data_cache):
    again = make(bccd_root, data_cache)
    with pytest.warns(UserWarning):
        again.setup()
    assert again.cache_hit
    assert again.test_ids == dm.test_ids
    assert torch.equal(again.split_indices["train"], dm.split_indices["train"])
    other = make(bccd_root, data_cache, split_seed=1)
    with pytest.warns(UserWarning):
        other.setup()
    assert other.test_ids != dm.test_ids
    assert other.class_counts == dm.class_counts  # same quotas, different members


def test_setup_is_idempotent(dm):
    before = dm.split_indices
    dm.setup("fit")
    dm.setup("test")
    assert dm.split_indices is before


def test_test_loader_follows_test_ids(dm):
    labels = torch.cat([y for _, y in dm.test_dataloader()])
    by_id = dict(zip(dm.ids, dm.labels.tolist()))
    assert labels.tolist() == [by_id[i] for i in dm.test_ids]


def test_fraction_and_too_large_sizes(bccd_root, data_cache):
    half = make(bccd_root, data_cache, train_size=0.5)
    with pytest.warns(UserWarning):
        half.setup()
    assert (half.metadata["n_train"], half.metadata["n_test"]) == (2443, 2443)
    too_big = make(bccd_root, data_cache, train_size=5000)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"4886 are available.*fractions"):
        too_big.setup()
