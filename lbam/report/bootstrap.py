"""The paired two-level bootstrap of Δ̄ = mean over seeds of (A − B) balanced accuracy, which includes test-set
sampling (PLAN.md of embodiment1_curve): each resample draws the seeds with replacement and the test smears
with replacement, the same draw for both settings of a pair, and recomputes every run's balanced accuracy on
the resampled test set.

Vectorised: a resample of the smears is a (B, J) matrix of multiplicities w, so the resampled count of crops of
class c a run got right is w @ correct[:, :, c] and balanced accuracy is a few matrix products for all runs at
once; a resample of n seeds is a (B, n) matrix of multiplicities. A class absent from a resampled test set has
no recall and is left out of that resample's mean, as `lbam.metrics` does for the whole test set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 18  # the generator seed, fixed in advance (issue #18): the report is deterministic
EPS = 1e-12  # a resampled Δ̄ on a bound (up to float noise) counts as beyond it: ties never reject H0


@dataclass(frozen=True)
class Draws:
    smears: np.ndarray  # (B, J) multiplicity of each test smear in each resample
    seeds: np.ndarray  # (B, K) uniforms in [0, 1): the first n columns give a resample of n seeds


def draw(n_smears: int, max_seeds: int, resamples: int = RESAMPLES, seed: int = SEED) -> Draws:
    """Resamples of ``n_smears`` smears, and uniforms for resamples of up to ``max_seeds`` seeds."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_smears, size=(resamples, n_smears))
    return Draws(multiplicities(picks, n_smears), rng.random((resamples, max_seeds)))


def multiplicities(picks: np.ndarray, n: int) -> np.ndarray:
    """(B, n) counts of each index 0..n-1 in each row of ``picks`` (B, k)."""
    offset = picks + n * np.arange(len(picks))[:, None]
    return np.bincount(offset.ravel(), minlength=n * len(picks)).reshape(len(picks), n)


def seed_multiplicities(d: Draws, n: int) -> np.ndarray:
    """(B, n): a resample of n seeds with replacement per row. Pairs with the same number of seeds get the same
    draw; a pair that lost a seed to a failed run still gets a uniform draw of its own n."""
    if n > d.seeds.shape[1]:
        raise ValueError(f"draws for at most {d.seeds.shape[1]} seeds, asked for {n}")
    return multiplicities(np.minimum((d.seeds[:, :n] * n).astype(np.int64), n - 1), n)


def resampled_balanced_acc(correct: np.ndarray, total: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, R) balanced accuracy of every run on every resampled test set; ``correct`` (R, J, C), ``total``
    (J, C), ``w`` (B, J) smear multiplicities."""
    w = w.astype(np.float64)
    den = w @ total  # (B, C)
    acc = np.zeros((len(w), len(correct)))
    for c in range(total.shape[1]):
        num, d = w @ correct[:, :, c].T, den[:, c : c + 1]  # (B, R), (B, 1)
        acc += np.divide(num, d, out=np.zeros_like(num), where=d > 0)
    return acc / (den > 0).sum(1, keepdims=True)


def deltas(ba: np.ndarray, a: np.ndarray, b: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(B,) resampled Δ̄: per resample the mean over the drawn seeds of ba[:, a_i] − ba[:, b_i], where run a_i of
    setting A and run b_i of setting B share seed i; ``seeds`` (B, n) multiplicities."""
    d = ba[:, a] - ba[:, b]
    return (seeds * d).sum(1) / seeds.shape[1]


def summary(dstar: np.ndarray, margin: float, alpha: float) -> dict[str, float]:
    """The (1 − 2α) percentile interval of the resampled Δ̄ and the bootstrap p-values: one-sided, the fraction
    beyond the bound, (1 + count) / (B + 1); two-sided (difference), twice the smaller tail."""
    b = len(dstar)

    def frac(count: int) -> float:
        return (1 + int(count)) / (b + 1)

    p_low, p_high = frac((dstar <= -margin + EPS).sum()), frac((dstar >= margin - EPS).sum())
    low, high = np.quantile(dstar, [alpha, 1 - alpha])
    p_diff = min(1.0, 2 * min(frac((dstar <= EPS).sum()), frac((dstar >= -EPS).sum())))
    return {"low": float(low), "high": float(high), "p": p_diff, "p_ni": p_low, "p_tost": max(p_low, p_high)}
