"""Per-crop outcomes of the runs of one context as numpy arrays: which test crops each run got right, and each
crop's class and smear (the sample id's part before ``#``: the unit the test split is made of). From them:
balanced accuracy per run recomputed from the predictions, the per-smear per-class counts the bootstrap
resamples, the ceiling, and all of these with audited crops removed from the test set."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lbam.report.rows import ReportError, Run


@dataclass(frozen=True)
class Outcomes:
    ids: np.ndarray  # (N,) sample ids, sorted
    target: np.ndarray  # (N,) class index
    smear: np.ndarray  # (N,) index into smears
    smears: tuple[str, ...]  # (J,) smear names, sorted
    right: np.ndarray  # (R, N) bool: run r predicted crop n right
    keys: tuple[tuple[str, int], ...]  # (setting, seed) of each run
    n_classes: int

    def run(self, setting: str, seed: int) -> int:
        return self.keys.index((setting, seed))


def outcomes(runs: list[Run], settings: list[str]) -> Outcomes:
    """The outcomes of ``runs`` (ok runs of one context; ``settings[r]`` names run r's setting); every run must
    have the same test ids and targets, else a ReportError names two runs that differ."""
    first = runs[0]
    ids = np.array(sorted(first.preds))
    target = np.array([first.preds[i][0] for i in ids], dtype=np.int64)
    right = np.empty((len(runs), len(ids)), dtype=bool)
    for r, run in enumerate(runs):
        tp = np.array([run.preds.get(i, (-1, -1)) for i in ids], dtype=np.int64).reshape(-1, 2)
        if len(run.preds) != len(ids) or (tp[:, 0] != target).any():
            raise ReportError(
                f"runs {first.path} and {run.path} differ in test samples or targets: cannot pair them"
            )
        right[r] = tp[:, 1] == target
    smears, smear = np.unique([i.partition("#")[0] for i in ids], return_inverse=True)
    n_classes = max(len(first.row.class_names), int(target.max()) + 1)
    keys = tuple((s, run.row.seed) for s, run in zip(settings, runs))
    return Outcomes(ids, target, smear, tuple(smears), right, keys, n_classes)


def without(o: Outcomes, drop: set[str]) -> Outcomes:
    """``o`` with the crops whose ids are in ``drop`` removed from the test set (smears left empty go too)."""
    keep = ~np.isin(o.ids, list(drop))
    smears, smear = np.unique(np.array(o.smears)[o.smear[keep]], return_inverse=True)
    return replace(o, ids=o.ids[keep], target=o.target[keep], smear=smear, smears=tuple(smears), right=o.right[:, keep])  # fmt: skip


def counts(o: Outcomes) -> tuple[np.ndarray, np.ndarray]:
    """(correct, total): correct[r, j, c] = crops of smear j and class c that run r got right, (R, J, C);
    total[j, c] = crops of smear j and class c, (J, C)."""
    r, cells = len(o.keys), len(o.smears) * o.n_classes
    cell = o.smear * o.n_classes + o.target  # one (smear, class) cell per crop
    per_run = (cell + cells * np.arange(r)[:, None]).ravel()  # run r's cells offset by r·cells
    correct = np.bincount(per_run, weights=o.right.ravel(), minlength=r * cells).reshape(r, len(o.smears), -1)
    return correct, np.bincount(cell, minlength=cells).reshape(len(o.smears), -1).astype(np.float64)


def balanced_acc(o: Outcomes) -> np.ndarray:
    """(R,) balanced accuracy per run: the mean recall over the classes present in the test set."""
    correct, total = counts(o)
    present = total.sum(0) > 0
    return (correct.sum(1)[:, present] / total.sum(0)[present]).mean(1)


def ceiling(o: Outcomes) -> dict:
    """Crops wrong in at least one run and in every run, and the highest reachable balanced accuracy: every crop
    right except those wrong in every run."""
    wrong = ~o.right
    always = wrong.all(0)
    present = np.unique(o.target)
    best = np.mean([1 - always[o.target == c].sum() / (o.target == c).sum() for c in present])
    return {
        "runs": len(o.keys),
        "crops": len(o.ids),
        "wrong_any": int(wrong.any(0).sum()),
        "wrong_all": [str(i) for i in o.ids[always]],
        "best": float(best),
    }


def mcnemar_counts(o: Outcomes, a: int, b: int) -> tuple[int, int]:
    """(b, c) of runs a and b: crops a gets right and b wrong, and the reverse."""
    return int((o.right[a] & ~o.right[b]).sum()), int((~o.right[a] & o.right[b]).sum())
