"""Seed statistics and paired comparisons (McNemar's exact test) on per-sample test predictions."""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from lbam.report.rows import Group, Setting

ALPHA = 0.05
MIN_SEEDS = 3
# With b + c discordant pairs the smallest attainable two-sided p is 2 * 0.5**(b+c): below 6 it is >= 0.0625.
MIN_DISCORDANT = 6


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n); std is nan when n < 2 and mean is nan when n == 0."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    return statistics.fmean(values), statistics.stdev(values) if n > 1 else math.nan, n


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial(b + c, 0.5) on the discordant pairs b, c."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def read_predictions(row: dict) -> dict[str, tuple[int, int]]:
    """id -> (target, pred) from the .preds.csv beside a row (empty dict when absent or unreadable)."""
    name = row.get("predictions_file") or Path(row["_path"]).name.removesuffix(".json") + ".preds.csv"
    path = Path(row["_path"]).parent / Path(name).name
    try:
        with path.open(newline="") as f:
            return {r["id"]: (int(r["target"]), int(r["pred"])) for r in csv.DictReader(f)}
    except (OSError, KeyError, ValueError, TypeError):
        return {}


@dataclass
class SeedTest:
    seed: int
    n_common: int  # samples present in both prediction files
    b: int  # LBAM right, baseline wrong
    c: int  # LBAM wrong, baseline right
    p: float


@dataclass
class Comparison:
    """LBAM setting vs one baseline setting of the same group."""

    lbam: Setting
    baseline: Setting
    tests: list[SeedTest]
    acc_diffs: list[float]  # LBAM - baseline test_acc per shared seed
    missing_preds: list[int]  # shared seeds without usable paired predictions

    def verdict(self) -> str:
        """Plain statement of what the comparison supports."""
        n = len(self.acc_diffs)
        notes = []
        if n == 0:
            return "no seed run for both: nothing to compare"
        if n < MIN_SEEDS:
            notes.append(f"only {n} seed{'s' if n > 1 else ''} (< {MIN_SEEDS}): too few to conclude anything")
        if self.missing_preds:
            notes.append(f"no paired predictions for seed(s) {', '.join(map(str, self.missing_preds))}")
        if self.tests:
            few = [t.seed for t in self.tests if t.b + t.c < MIN_DISCORDANT]
            if few:
                notes.append(
                    f"seed(s) {', '.join(map(str, few))}: fewer than {MIN_DISCORDANT} discordant samples, "
                    f"McNemar cannot reach p < {ALPHA}"
                )
            sig = [t for t in self.tests if t.p < ALPHA]
            better = sum(t.b > t.c for t in sig)
            notes.append(
                f"p < {ALPHA} in {len(sig)}/{len(self.tests)} seeds"
                + (f" ({better} favour LBAM, {len(sig) - better} the baseline)" if sig else "")
            )
        return "; ".join(notes)


def compare(lbam: Setting, baseline: Setting) -> Comparison:
    """Per shared seed: McNemar on predictions joined by sample id, and the test-accuracy difference."""
    base_by_seed = {int(r["seed"]): r for r in baseline.ok}
    tests, diffs, missing = [], [], []
    for row in lbam.ok:
        seed = int(row["seed"])
        other = base_by_seed.get(seed)
        if other is None:
            continue
        diffs.append(float(row["test_acc"]) - float(other["test_acc"]))
        mine, theirs = read_predictions(row), read_predictions(other)
        common = sorted(set(mine) & set(theirs))
        if not common:
            missing.append(seed)
            continue
        b = sum(mine[i][1] == mine[i][0] and theirs[i][1] != theirs[i][0] for i in common)
        c = sum(mine[i][1] != mine[i][0] and theirs[i][1] == theirs[i][0] for i in common)
        tests.append(SeedTest(seed, len(common), b, c, mcnemar_exact(b, c)))
    return Comparison(lbam, baseline, tests, diffs, missing)


def comparisons(group: Group) -> list[Comparison]:
    """Every LBAM setting of the group against every non-LBAM setting that has ok runs."""
    lbams = [s for s in group.settings if s.attention == "lbam" and s.ok]
    baselines = [s for s in group.settings if s.attention != "lbam" and s.ok]
    return [compare(lb, base) for lb in lbams for base in baselines]
