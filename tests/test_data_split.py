"""The split planner on its own (no files): image-level and per-crop splits, subsets, validation, size errors;
the constructor's checks."""

import numpy as np
import pytest

from lbam.data import DataError
from lbam.data.base import DataModule
from lbam.data.split import plan_split, resolve_size, stratified_split


def smears(n_images=120, seed=0):
    """Labels and ids of a BCCD-like set: per image 2-20 RBC (1), 0-2 WBC (0), 0-4 platelets (2)."""
    rng = np.random.default_rng(seed)
    labels, ids = [], []
    for i in range(n_images):
        cells = [0] * rng.choice(3, p=[0.1, 0.8, 0.1]) + [1] * rng.integers(2, 21) + [2] * rng.integers(0, 5)
        for k, c in enumerate(rng.permutation(cells)):
            labels.append(int(c))
            ids.append(f"img{i:03d}#{k}")
    return np.array(labels), ids


def images_of(ids, idx):
    return {ids[i].split("#")[0] for i in idx}


def plan(labels, ids, **kw):
    kw = {
        "name": "t",
        "split_by": "image",
        "train_size": 0.8,
        "test_size": None,
        "val_size": 0,
        "split_seed": 0,
        **kw,
    }
    return plan_split(labels, ids, **kw)


@pytest.mark.parametrize("seed", range(30))
def test_image_split_keeps_every_image_on_one_side(seed):
    labels, ids = smears(seed=seed)
    p = plan(labels, ids, split_seed=seed, val_size=0.15)
    sides = [images_of(ids, p[k]) for k in ("train", "val", "test")]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    # everything is used, nothing twice
    assert sorted(np.concatenate([p["train"], p["val"], p["test"]]).tolist()) == list(range(len(labels)))
    # train + val is the whole training split; train size is as close to the target as whole images allow
    assert sorted(np.concatenate([p["train"], p["val"]]).tolist()) == sorted(p["train_split"].tolist())
    biggest = max(sum(1 for i in ids if i.startswith(img + "#")) for img in images_of(ids, range(len(ids))))
    assert abs(len(p["train_split"]) - round(0.8 * len(labels))) <= biggest / 2


def test_image_split_is_stratified_by_class_content():
    """Over many seeds the test split's minority classes stay near their share, closer than a split that
    ignores the class content (all images in one stratum)."""
    import lbam.data.split as base

    labels, ids = smears(n_images=300)
    share = np.bincount(labels) / len(labels)

    def mean_dev():
        devs = []
        for seed in range(40):
            test = plan(labels, ids, split_seed=seed)["test"]
            devs.append(np.abs(np.bincount(labels[test], minlength=3) - share * len(test)))
        return np.mean(devs, axis=0)

    stratified = mean_dev()
    base.STRATUM_CAP = 0  # one stratum: a plain random image split
    try:
        plain = mean_dev()
    finally:
        base.STRATUM_CAP = 3
    assert stratified[0] < plain[0] and stratified[2] < plain[2], (stratified, plain)
    assert stratified[0] <= 0.1 * share[0] * 0.2 * len(labels)  # WBC within 10 % of its expected count


def test_same_seed_same_split_other_seed_other_split():
    labels, ids = smears()
    a, b, c = (plan(labels, ids, split_seed=s, val_size=10) for s in (3, 3, 4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


def test_crop_split_is_the_old_per_crop_stratified_split():
    labels, ids = smears()
    p = plan(labels, ids, split_by="crop", train_size=500, test_size=200)
    assert (len(p["train"]), len(p["test"])) == (500, 200)
    share = np.bincount(labels) / len(labels)
    assert np.abs(np.bincount(labels[p["test"]], minlength=3) - 200 * share).max() <= 1
    assert images_of(ids, p["train"]) & images_of(ids, p["test"])  # crops of one image on both sides
    # the old code: one generator shuffles each class in turn; the first quota is train, the next test
    rng = np.random.default_rng(0)
    for c in range(3):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_tr, n_te = (int((labels[p[k]] == c).sum()) for k in ("train", "test"))
        assert set(idx[:n_tr].tolist()) == set(p["train"][labels[p["train"]] == c].tolist())
        assert set(idx[n_tr : n_tr + n_te].tolist()) == set(p["test"][labels[p["test"]] == c].tolist())


def test_one_sample_per_image_is_the_per_sample_split():
    labels = np.random.default_rng(1).integers(0, 2, 300)
    ids = [f"pet{i}" for i in range(300)]
    by_image = plan(labels, ids, split_by="image", train_size=200)
    by_crop = plan(labels, ids, split_by="crop", train_size=200)
    assert all(np.array_equal(by_image[k], by_crop[k]) for k in ("train", "val", "test"))


@pytest.mark.parametrize("split_by", ["image", "crop"])
def test_subset_leaves_test_alone_and_is_stratified(split_by):
    labels, ids = smears(n_images=200)
    full = plan(labels, ids, split_by=split_by)
    share = np.bincount(labels[full["train"]]) / len(full["train"])
    for n, seed in ((12, 0), (25, 1), (25, 2), (300, 0)):
        p = plan(labels, ids, split_by=split_by, train_subset=n, subset_seed=seed, val_size=0.2)
        assert np.array_equal(p["test"], full["test"])
        assert np.array_equal(p["train_split"], full["train"])
        drawn = np.concatenate([p["train"], p["val"]])
        assert len(drawn) == n and set(drawn.tolist()) <= set(full["train"].tolist())
        counts = np.bincount(labels[drawn], minlength=3)
        assert counts.min() >= 1 and np.abs(counts - n * share).max() <= 1.5
        if split_by == "image":
            assert not images_of(ids, p["train"]) & images_of(ids, p["val"])
    a = plan(labels, ids, train_subset=25, subset_seed=1)
    b = plan(labels, ids, train_subset=25, subset_seed=1)
    c = plan(labels, ids, train_subset=25, subset_seed=2)
    assert np.array_equal(a["train"], b["train"]) and not np.array_equal(a["train"], c["train"])


def test_subset_keeps_rare_classes():
    labels = np.array([0] * 200 + [1] * 3 + [2] * 3)
    ids = [f"s{i}" for i in range(len(labels))]
    for seed in range(10):
        p = plan(labels, ids, split_by="crop", train_size=0.5, train_subset=5, subset_seed=seed)
        assert sorted(set(labels[p["train"]].tolist())) == [0, 1, 2]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"train_size": 5000}, r"t: train_size=5000.*but 2\d\d\d are usable; use a smaller count"),
        ({"train_size": 1}, r"1 train \(>= 2\)"),
        ({"train_size": 100, "test_size": 5000}, r"100 train \(>= 2\) \+ 5000 test"),
        ({"train_subset": 10_000}, r"train_subset=10000 is larger than the training split \(\d+ samples\)"),
        ({"train_subset": 3, "val_size": 2}, r"val_size=2 leave 1 train and \d+ test samples"),
        ({"val_size": 0.9999}, r"val_size"),
        ({"train_size": 1.5}, r"train_size as a fraction must lie in \(0, 1\)"),
    ],
)
def test_bad_sizes_are_one_line_data_errors(kw, match):
    labels, ids = smears(n_images=200)
    with pytest.raises(DataError, match=match) as err:
        plan(labels, ids, **kw)
    assert "\n" not in str(err.value)


def test_resolve_size():
    assert resolve_size(0.25, 100, "x") == 25 and resolve_size(40, 100, "x") == 40
    assert resolve_size(None, 100, "x") is None and resolve_size(1.0, 100, "x") == 1
    for bad in (-3, 1.5, "half", True):
        with pytest.raises(DataError, match="x"):
            resolve_size(bad, 100, "x")


def test_stratified_split_quotas_and_rest():
    labels = np.random.default_rng(0).integers(0, 4, 503)
    a, b = stratified_split(labels, 300, 150, seed=7)
    assert (len(a), len(b)) == (300, 150) and not set(a.tolist()) & set(b.tolist())
    _, rest = stratified_split(labels, 300, None, seed=7)
    assert len(rest) == 203
    counts = np.bincount(labels)
    assert np.abs(np.bincount(labels[b], minlength=4) - counts * 150 / 503).max() <= 1


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"image_size": 0}, "image_size must be an int >= 8"),
        ({"batch_size": 1}, "batch_size must be an int >= 2"),
        ({"num_workers": -1}, "num_workers"),
        ({"split_by": "smear"}, "split_by must be one of image, crop, got 'smear'"),
        ({"drop_duplicates": "yes"}, "drop_duplicates must be true or false"),
        ({"train_subset": 0}, "train_subset must be an int >= 1"),
        ({"subset_seed": 1.5}, "subset_seed must be an int"),
        ({"val_size": "a few"}, "val_size must be an int count or a fraction"),
        ({"on_device": "gpu"}, "on_device must be auto, true or false, got 'gpu'"),
    ],
)
def test_constructor_refuses_bad_values_in_one_line(kw, match):
    with pytest.raises(DataError, match=match) as err:
        DataModule(**kw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("cores", "workers"), [(2, 0), (1, 0), (6, 4), (64, 8)])
def test_num_workers_null_leaves_two_cores_for_compute(monkeypatch, cores, workers):
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert DataModule(num_workers=None).num_workers == workers
