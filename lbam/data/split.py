"""The split planner: train / val / test sample indices from labels and ids alone, checked before any pixel is
decoded. Whole source images stay on one side (``split_by="image"``) or samples are split per class (``"crop"``)."""

from __future__ import annotations

import numpy as np

from lbam.data.errors import DataError

# Group strata count each minority class per image up to this cap (BCCD: 0-3+ WBC, 0-3+ platelets).
STRATUM_CAP = 3
SPLIT_BY = ("image", "crop")


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


def targets(train_size, test_size, total: int) -> tuple[int, int]:
    """The (training split, test) sample counts that the size options ask of ``total`` samples, before whole
    images round them: what damage to the data is measured against."""
    n_train = resolve_size(train_size, total, "train_size")
    n_test = resolve_size(test_size, total, "test_size")
    return n_train, total - n_train if n_test is None else n_test
