"""The one interval engine for comparisons over seeds: per-seed estimates with their test-image variance,
combined by a random-effects model with a Hartung-Knapp interval (DerSimonian-Laird between-seed
variance; statsmodels calls the same interval 'random effect wls' in combine_effects).

Why this and not a hierarchical bootstrap: a sweep has 3 seeds. Resampling 3 seeds with replacement
gives 10 distinct resamples, and its percentile interval covers far less than 95 % (the bootstrap of a
mean of n = 3 is known to under-cover badly). The Hartung-Knapp interval uses a t quantile with k - 1
degrees of freedom and a weighted spread of the seed estimates, so it is exact for normal per-seed
estimates and holds its level at k = 3 (tests/test_coverage.py measures 93-97 % for 3 and 6 seeds).

Two designs:
- nested (the default: split_seed follows seed): each seed draws its own training subsample and test
  images, so the spread of the per-seed estimates already holds model seed, data draw and test images;
- shared (every seed on one fixed split): the seeds share the test images, whose draw the spread over
  seeds cannot see; `shared_var` adds it (the image variance of the seed-averaged estimate) with
  Satterthwaite's degrees of freedom (the added part is estimated from thousands of images). Keeping
  k - 1 df instead covered 100 % in the simulation; Satterthwaite covers about 97 % (conservative, as
  the shared part counts the per-image seed noise again).

Proportions (one arm's score): the t-interval over seeds is carried to the logit scale around the
mean (delta method) and mapped back, so it stays inside [0, 1] and always holds the mean; a cell where
every seed scored one value (0, 1 or any) gets the Wilson interval of the pooled count, never [0, 0].
Not inverse-variance weights on per-seed logits: near 0 a seed's logit variance falls as its score rises,
so the weighted centre drifts above the mean (tests/test_coverage.py measures 36 % coverage that way for
a worst class at 1.8 % over 43 images and 8 seeds, 95-97 % this way). Every p-value family is
Holm-adjusted with statsmodels' multipletests.
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

__all__ = ["LEVEL", "NESTED", "ONE_SEED", "POWER", "SHARED", "class_mean_variance", "combine", "detectable",
           "from_summary", "hartung_knapp", "holm", "one_seed", "proportion", "proportion_from_summary"]

LEVEL = 0.95
POWER = 0.8
NESTED = "model seed, data draw, test images"        # what a nested design's interval includes
SHARED = "model seed, test images (one fixed split: the training draw is not varied)"
ONE_SEED = "test images only (one seed: seed and data-draw variance left out)"


def class_mean_variance(y, values) -> tuple[float, float]:
    """(mean over classes of each class's mean of `values`, its sampling variance over the test images):
    sum_c s_c^2 / n_c / C^2, classes resampled independently. values = hits gives a balanced score,
    values = hits_a - hits_b a paired difference of two arms on the same images."""
    y, v = np.asarray(y).ravel(), np.asarray(values, dtype=float).ravel()
    groups = [v[y == c] for c in np.unique(y)]
    est = float(np.mean([g.mean() for g in groups]))
    var = sum(g.var(ddof=1) / len(g) if len(g) > 1 else 0.0 for g in groups) / len(groups) ** 2
    return est, float(var)


def hartung_knapp(est, var=None, level: float = LEVEL, shared_var=None) -> dict:
    """Random-effects mean of per-seed estimates along the last axis (vectorised over the leading ones),
    with its Hartung-Knapp interval and two-sided p-value against 0. `var`: each estimate's test-image
    variance (None or nan: equal weights, the plain t-interval over seeds). `shared_var`: variance the
    seeds share (one fixed test set), added to the Hartung-Knapp variance with Satterthwaite's df.
    Returns arrays: mean, se, low, high, df, p, tau2, k."""
    y = np.asarray(est, dtype=float)
    v = np.zeros_like(y) if var is None else np.nan_to_num(np.asarray(var, dtype=float) + 0 * y, nan=0.0)
    k = y.shape[-1]
    known = np.all(v > 0, axis=-1, keepdims=True)
    w0 = np.where(known, 1 / np.where(v > 0, v, 1), 1.0)
    mu_fe = (w0 * y).sum(-1, keepdims=True) / w0.sum(-1, keepdims=True)
    q_stat = (w0 * (y - mu_fe) ** 2).sum(-1)
    c = w0.sum(-1) - (w0 ** 2).sum(-1) / w0.sum(-1)
    tau2 = np.where(known[..., 0], np.maximum(0.0, (q_stat - (k - 1)) / np.where(c > 0, c, 1)), 0.0)
    w = np.where(known, 1 / np.where(known, v + tau2[..., None], 1.0), 1.0)
    mu = (w * y).sum(-1) / w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        hk = (w * (y - mu[..., None]) ** 2).sum(-1) / ((k - 1) * w.sum(-1)) if k > 1 else np.full(mu.shape, np.nan)
        df = np.full(mu.shape, float(k - 1))
        if shared_var is not None:   # Satterthwaite: the shared part is estimated from many images (df ~ inf)
            s = np.asarray(shared_var, dtype=float) + 0 * mu
            df = np.where(hk > 0, (hk + s) ** 2 / np.where(hk > 0, hk ** 2, 1) * (k - 1), np.inf)
            hk = hk + s
        se = np.sqrt(hk)
        half = stats.t.ppf((1 + level) / 2, np.maximum(df, 1)) * se
        # no spread and no image variance: nothing to test against (nan, never a certainty)
        p = np.where(se > 0, 2 * stats.t.sf(np.abs(mu) / np.where(se > 0, se, 1), np.maximum(df, 1)), np.nan)
    return {"mean": mu, "se": se, "low": mu - half, "high": mu + half, "df": df, "p": p, "tau2": tau2,
            "k": k}


def one_seed(est: float, var: float, level: float = LEVEL) -> dict:
    """One seed: a normal interval from the test images alone (it leaves out seed and data-draw variance)."""
    se = float(np.sqrt(var)) if np.isfinite(var) else float("nan")
    half = stats.norm.ppf((1 + level) / 2) * se
    p = float(2 * stats.norm.sf(abs(est) / se)) if se > 0 else float("nan")
    return {"mean": float(est), "se": se, "low": est - half, "high": est + half, "df": float("inf"), "p": p,
            "tau2": float("nan"), "k": 1}


def combine(est, var=None, level: float = LEVEL, shared_var=None) -> dict:
    """Per-seed estimates of one comparison -> the engine's reading (floats): Hartung-Knapp for two or
    more seeds, the test images alone for one (`sources` says which variance the interval holds)."""
    y = np.asarray(est, dtype=float)
    v = np.full(y.shape, np.nan) if var is None else np.asarray(var, dtype=float)
    keep = np.isfinite(y)
    y, v = y[keep], v[keep]
    if len(y) == 0:
        return {"mean": np.nan, "se": np.nan, "low": np.nan, "high": np.nan, "df": np.nan, "p": np.nan,
                "tau2": np.nan, "k": 0, "sources": ""}
    if len(y) == 1:
        return {**one_seed(float(y[0]), float(v[0]), level), "sources": ONE_SEED}
    out = hartung_knapp(y, v if np.isfinite(v).all() else None, level, shared_var)
    return {**{key: float(val) for key, val in out.items()}, "k": len(y),
            "sources": SHARED if shared_var is not None else NESTED}


# ------------------------------------------------------------------------------ one arm's score, inside [0, 1]
def proportion(values, n_images, level: float = LEVEL, shared: bool = False) -> dict:
    """One arm's score over seeds (each a proportion of `n_images` test images, or a mean of class rates
    read as that many images): the mean, and an interval inside [0, 1] around it (`proportion_from_summary`
    on the seeds' mean and spread); every seed at one value (no spread to read): the Wilson interval of
    the pooled count, which holds its mean."""
    p = np.asarray(values, dtype=float)
    n = np.broadcast_to(np.asarray(n_images, dtype=float), p.shape)
    keep = np.isfinite(p) & np.isfinite(n) & (n > 0)
    p, n = p[keep], n[keep]
    if len(p) == 0:
        return {"mean": np.nan, "low": np.nan, "high": np.nan, "k": 0}
    if np.all(p == p[0]):
        x, m = float(np.round((p * n).sum())), float(n.sum())
        ci = stats.binomtest(int(x), int(m)).proportion_ci(confidence_level=level, method="wilson")
        return {"mean": float(p.mean()), "low": float(ci.low), "high": float(ci.high), "k": len(p)}
    return proportion_from_summary(float(p.mean()), float(p.std(ddof=1)), len(p), float(n.mean()), level, shared)


# ------------------------------------------------------------------------------ families and power
def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels' multipletests); nan stays nan and is not counted."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def detectable(se: float, k: int, alpha: float = 1 - LEVEL, power: float = POWER) -> float:
    """The smallest true difference a two-sided t-test over k seeds detects with `power`, given the
    reading's standard error (statsmodels' TTestPower on the implied seed spread se * sqrt(k))."""
    if k < 2 or not np.isfinite(se) or se <= 0:
        return float("nan")
    d = TTestPower().solve_power(effect_size=None, nobs=k, alpha=alpha, power=power, alternative="two-sided")
    return float(d * se * np.sqrt(k))


# ------------------------------------------------------------------------------ from saved summaries only
def _t(mean, var, k, shared_var, level):
    df = (k - 1) if not shared_var else ((var + shared_var) ** 2 / (var ** 2 / (k - 1)) if var > 0 else np.inf)
    se = float(np.sqrt(var + (shared_var or 0.0)))
    half = float(stats.t.ppf((1 + level) / 2, df)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df)) if se > 0 else float("nan")
    return {"mean": float(mean), "se": se, "low": mean - half, "high": mean + half, "df": float(df), "p": p, "k": k}


def from_summary(mean: float, std: float, k: int, level: float = LEVEL, shared_var: float | None = None) -> dict:
    """The engine's reading from a saved mean, std (ddof 1) and k seeds alone: Hartung-Knapp with equal
    weights (the per-seed variances were not kept), i.e. the t-interval, plus `shared_var` (the test-image
    variance seeds on one fixed split share) with Satterthwaite's df."""
    if k < 2 or not np.isfinite(std):
        return {"mean": float(mean), "se": np.nan, "low": np.nan, "high": np.nan, "df": np.nan, "p": np.nan, "k": k}
    return {**_t(mean, std ** 2 / k, k, shared_var, level),
            "sources": SHARED if shared_var is not None else NESTED}


def proportion_from_summary(mean: float, std: float, k: int, images: float, level: float = LEVEL,
                            shared: bool = False) -> dict:
    """One arm's score from its mean, std (ddof 1) and k seeds of `images` test images each: the t-interval
    over seeds (plus one seed's image variance where the seeds share one split, Satterthwaite's df) carried
    to the logit scale around the mean by the delta method, mapped back inside [0, 1]; a mean of 0 (or 1)
    with no spread: Wilson of the pooled count."""
    m, total = float(mean), float(images) * k
    if not np.isfinite(std) or k < 2 or (std == 0 and m in (0.0, 1.0)):
        ci = stats.binomtest(int(round(m * total)), int(total)).proportion_ci(confidence_level=level, method="wilson")
        return {"mean": m, "low": float(ci.low), "high": float(ci.high), "k": k}
    c = min(max(m, 0.5 / total), 1 - 0.5 / total)   # the empirical logit's half-image guard
    scale = c * (1 - c)
    out = _t(np.log(c / (1 - c)), std ** 2 / k / scale ** 2, k, 1 / (images * scale) if shared else None, level)
    back = stats.logistic.cdf
    return {"mean": m, "low": float(back(out["low"])), "high": float(back(out["high"])), "k": k}
