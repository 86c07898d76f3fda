"""Confidence intervals of the results tables (scipy.stats): Student t means, bootstrap ratios, Wilson fractions."""

from __future__ import annotations

import numpy as np

from results.common import finite

BOOTSTRAP = 2000


def mean_ci(values) -> tuple[float | None, float | None, int]:
    from eval.run import mean_ci95

    return mean_ci95([finite(v) for v in values])


def ratio_of_means(numerator, denominator, seed: int = 0) -> tuple[float | None, float | None, float | None, int]:
    """mean(numerator) / mean(denominator) over the clips where both exist, and a paired
    percentile-bootstrap 95 % interval (scipy.stats.bootstrap: clips resampled, fixed seed).
    No interval when a resample's denominator mean is not positive (the ratio is then undefined)."""
    from scipy import stats

    pairs = [(a, b) for a, b in zip(numerator, denominator) if finite(a) is not None and finite(b) is not None]
    if not pairs:
        return None, None, None, 0
    a, b = np.array(pairs, dtype=np.float64).T
    if b.mean() <= 0:
        return None, None, None, len(pairs)
    ratio = float(a.mean() / b.mean())
    if len(pairs) < 2:
        return ratio, None, None, 1

    def statistic(x, y, axis=-1):
        den = y.mean(axis=axis)
        return np.where(den > 0, x.mean(axis=axis) / np.where(den > 0, den, 1.0), np.nan)

    ci = stats.bootstrap((a, b), statistic, paired=True, vectorized=True, n_resamples=BOOTSTRAP,
                         method="percentile", rng=np.random.default_rng(seed)).confidence_interval  # fmt: skip
    lo, hi = finite(ci.low), finite(ci.high)
    return (ratio, None, None, len(pairs)) if lo is None or hi is None else (ratio, lo, hi, len(pairs))


def wilson(values) -> tuple[float | None, float | None, float | None, int]:
    """A fraction of 0/1 values and its 95 % Wilson score interval (scipy.stats.binomtest)."""
    from scipy import stats

    values = [v for v in (finite(v) for v in values) if v is not None]
    n = len(values)
    if n == 0:
        return None, None, None, 0
    ci = stats.binomtest(round(sum(values)), n).proportion_ci(0.95, method="wilson")
    return float(np.mean(values)), float(ci.low), float(ci.high), n
