"""statistics: 95 % intervals of a variant's figures by a paired bootstrap over evaluation windows.

A window is the unit resampled: its tokens are scored in one pass and depend on each other, windows do
not. The variant and its baseline are resampled together (the same windows in every resample), so
what they share (a hard passage) cancels out of their difference. On a handful of windows the bootstrap's
spread is too narrow (it is the plug-in estimate, and normal where Student's t is right): its half-widths
are widened by the small-sample factor (`small_sample_factor`).
"""

import math

import numpy as np

RESAMPLES = 2000
SEED = 18  # fixed: a rerun of the same figures gives the same interval
CONFIDENCE = 0.95


def resampled_windows(windows: int) -> np.ndarray:
    """Window indices drawn with replacement, one row per resample: [RESAMPLES, windows]."""
    return np.random.default_rng(SEED).integers(0, windows, size=(RESAMPLES, windows))


def small_sample_factor(windows: int) -> float:
    """sqrt(n / (n - 1)) t(n - 1) / z: what turns the bootstrap's plug-in, normal half-width of a mean of
    n windows into Student's t one (2.69 at 3 windows, 1.88 at 4, 1.13 at 15, 1.06 at 32, 1 in the limit)."""
    from scipy.stats import norm, t

    quantile = 1 - (1 - CONFIDENCE) / 2
    return math.sqrt(windows / (windows - 1)) * float(t.ppf(quantile, windows - 1) / norm.ppf(quantile))


def percentile_interval(samples: np.ndarray, windows: int) -> tuple[float, float]:
    """The central CONFIDENCE share of the resampled statistic, each side's distance from the resamples'
    median widened by the small-sample factor of `windows` (the bootstrap's skew is kept)."""
    tail = (1 - CONFIDENCE) / 2 * 100
    low, middle, high = np.percentile(samples, [tail, 50, 100 - tail])
    factor = small_sample_factor(windows)
    return float(middle - factor * (middle - low)), float(middle + factor * (high - middle))


def mean_samples(window_sums: np.ndarray, tokens_per_window: int, picks: np.ndarray) -> np.ndarray:
    """The per-token mean of each resample, from the windows' sums."""
    return window_sums[picks].sum(axis=1) / (picks.shape[1] * tokens_per_window)


def tokens_to_decide(value: float, low: float, high: float, limit: float, tokens: int) -> int:
    """How many tokens would put the interval [low, high] around `value` on one side of `limit` (not
    `value`), its width shrinking as 1/sqrt(tokens): the half-width toward the limit must shrink to
    the gap."""
    half_width = high - value if limit > value else value - low
    return math.ceil(tokens * (half_width / abs(limit - value)) ** 2)
