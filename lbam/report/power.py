"""Power of the paired comparisons, from what was observed (PLAN.md amendment of 2026-12-07): the Δ a design
detects with 80 % power, and the power TOST had at a true Δ of 0, at a Holm-adjusted α.

Two noise models, as the tests: (a) over seeds, SE = s/√n with t quantiles on n − 1 df; (b) with the test smears,
the bootstrap's SE of Δ̄ with normal quantiles. The bootstrap SE over-estimates (it counts the seed × smear
interaction twice), so (b)'s power is a lower bound."""

from __future__ import annotations

import math

from scipy import stats

POWER = 0.8


def _q(p: float, df: float | None) -> float:
    return float(stats.t.ppf(p, df) if df else stats.norm.ppf(p))


def detectable(se: float, alpha: float, df: float | None = None, power: float = POWER) -> float:
    """The |Δ| a two-sided test at ``alpha`` detects with ``power``: (q(1 − α/2) + q(power))·SE."""
    if not se > 0:
        return math.nan
    return (_q(1 - alpha / 2, df) + _q(power, df)) * se


def tost_power(se: float, margin: float, alpha: float, df: float | None = None) -> float:
    """Power of TOST (two one-sided tests at ``alpha``, bounds ±margin) when the true Δ is 0:
    2·F(margin/SE − q(1 − α)) − 1, at least 0."""
    if not se > 0:
        return math.nan
    z = margin / se - _q(1 - alpha, df)
    cdf = stats.t.cdf(z, df) if df else stats.norm.cdf(z)
    return max(0.0, float(2 * cdf - 1))


def seeds_for_tost(
    sd: float, margin: float, alpha: float, power: float = POWER, most: int = 100_000
) -> int | None:
    """The fewest seeds (≥ 3) at which TOST over seeds (SE = sd/√n, t on n − 1 df) reaches ``power`` at a true Δ
    of 0 (power grows with n: a bisection); None beyond ``most``."""
    if not sd > 0:
        return None

    def enough(n: int) -> bool:
        return tost_power(sd / math.sqrt(n), margin, alpha, n - 1) >= power

    if not enough(most):
        return None
    low, high = 2, most  # enough(high); not enough(low) unless low + 1 is the answer
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def columns(sd: float, n: int, boot_se: float, m: int, alpha: float, margin: float) -> dict[str, float]:
    """The power columns of one comparison of a family of ``m``, at Holm's first step (α/m) and its last (α):
    the detectable Δ and TOST's power at Δ = 0, over seeds (t) and with the smears (boot), and the seeds TOST
    over seeds alone would need for 80 % power."""
    se_t = sd / math.sqrt(n) if n > 1 else math.nan
    out: dict[str, float] = {"family_size": m}
    for step, a in (("first", alpha / max(m, 1)), ("last", alpha)):
        need = seeds_for_tost(sd, margin, a) if sd > 0 else math.nan  # no spread: nothing to size
        need = math.inf if need is None else need
        out |= {
            f"detect_{step}_t": detectable(se_t, a, n - 1),
            f"detect_{step}_boot": detectable(boot_se, a),
            f"tost_power_{step}_t": tost_power(se_t, margin, a, n - 1),
            f"tost_power_{step}_boot": tost_power(boot_se, margin, a),
            f"seeds_for_tost_{step}": float(need),
        }
    return out
