"""Intervals for every reported number, from scipy.stats (pure functions over arrays).

- per-class recall: the Wilson 95 % interval of k hits in n images;
- balanced accuracy / robustness: a 95 % percentile bootstrap that resamples within each class
  (scipy.stats.bootstrap with one sample per class: each is resampled on its own);
- a paired difference of two arms attacked on the same images: the same bootstrap over the
  per-image differences, so what two arms share cancels;
- over seeds: mean, std and a t-interval.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["LEVEL", "N_RESAMPLES", "balanced_interval", "paired_difference", "seed_interval", "separated",
           "stratified_bootstrap", "t_half_width", "wilson"]

LEVEL = 0.95
N_RESAMPLES = 2000   # percentile endpoints move by ~0.1 point between seeds at this size


def wilson(k, n, level: float = LEVEL) -> tuple[float, float]:
    """Wilson interval of a proportion k/n; (nan, nan) for n = 0."""
    k, n = int(k), int(n)
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def _by_class(y_true, values) -> list[np.ndarray]:
    y_true, values = np.asarray(y_true).ravel(), np.asarray(values, dtype=float).ravel()
    return [values[y_true == c] for c in np.unique(y_true)]


def _mean_of_means(*samples, axis=-1):
    return np.mean([s.mean(axis=axis) for s in samples], axis=0)


def stratified_bootstrap(y_true, values, level: float = LEVEL, seed: int = 0,
                         n_resamples: int = N_RESAMPLES) -> tuple[float, float, float]:
    """(estimate, low, high) of the mean over classes of each class's mean of `values`, resampling
    within each class. values = (pred == y) gives balanced accuracy / robustness; values = a per-image
    difference of two arms gives the paired difference of their balanced scores."""
    samples = _by_class(y_true, values)
    est = float(_mean_of_means(*samples))
    if all(len(s) < 2 or np.ptp(s) == 0 for s in samples):   # nothing varies: the interval is the point
        return est, est, est
    res = stats.bootstrap(samples, _mean_of_means, n_resamples=n_resamples, confidence_level=level,
                          method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    return est, float(res.confidence_interval.low), float(res.confidence_interval.high)


def balanced_interval(y_true, y_pred, **kw) -> tuple[float, float, float]:
    """Balanced accuracy (or robustness, on adversarial predictions) with its bootstrap interval."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    return stratified_bootstrap(y_true, (y_true == y_pred).astype(float), **kw)


def paired_difference(y_true, pred_a, pred_b, **kw) -> tuple[float, float, float]:
    """Balanced score of arm a minus arm b, both predicted on the same images, with its paired interval."""
    y_true = np.asarray(y_true).ravel()
    hits_a = (np.asarray(pred_a).ravel() == y_true).astype(float)
    hits_b = (np.asarray(pred_b).ravel() == y_true).astype(float)
    return stratified_bootstrap(y_true, hits_a - hits_b, **kw)


def t_half_width(std, n, level: float = LEVEL) -> np.ndarray:
    """Half-width of the t-interval of a mean of n values with sample std `std` (vectorised; nan for n < 2)."""
    std, n = np.asarray(std, dtype=float), np.asarray(n, dtype=float)
    return np.where(n >= 2, stats.t.ppf((1 + level) / 2, np.maximum(n - 1, 1)) * std / np.sqrt(np.maximum(n, 1)),
                    np.nan)


def seed_interval(values, level: float = LEVEL) -> dict:
    """mean, std (ddof 1), n and the t-interval of the mean over seeds; low/high are nan for one seed."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    mean = float(v.mean()) if n else float("nan")
    if n < 2:
        return {"mean": mean, "std": float("nan"), "n": n, "low": float("nan"), "high": float("nan")}
    std = float(v.std(ddof=1))
    half = float(t_half_width(std, n, level))
    return {"mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half}


def separated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when two (low, high) intervals do not overlap: only then is a ranking stated."""
    return bool(a[1] < b[0] or b[1] < a[0])
