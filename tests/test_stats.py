"""Intervals against scipy and against what they must do."""
import numpy as np
import pytest
from scipy import stats as sps

from taetlib import intervals, stats


def test_wilson_matches_the_closed_form():
    for k, n in ((0, 10), (3, 10), (45, 100), (100, 100)):
        z = sps.norm.ppf(0.975)
        p = k / n
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
        assert stats.wilson(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert np.isnan(stats.wilson(0, 0)).all()


def test_stratified_bootstrap_brackets_the_balanced_score_and_matches_the_normal_width():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [400, 200, 100, 50])
    p = np.array([0.9, 0.7, 0.5, 0.3])
    hit = rng.random(len(y)) < p[y]
    pred = np.where(hit, y, (y + 1) % 4)
    est, lo, hi = stats.balanced_interval(y, pred)
    recall = np.array([hit[y == c].mean() for c in range(4)])
    assert est == pytest.approx(recall.mean())
    se = np.sqrt(np.sum(recall * (1 - recall) / np.bincount(y))) / 4   # the delta-method standard error
    assert lo < est < hi and (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_paired_interval_shrinks_when_arms_share_predictions():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(5), 200)
    a = np.where(rng.random(len(y)) < 0.6, y, (y + 1) % 5)
    flip = rng.random(len(y)) < 0.1                    # b differs from a on 10 % of the images only
    b = np.where(flip, np.where(rng.random(len(y)) < 0.5, y, (y + 2) % 5), a)
    independent = np.where(rng.random(len(y)) < 0.6, y, (y + 1) % 5)
    _, lo_shared, hi_shared = stats.paired_difference(y, a, b)
    _, lo_indep, hi_indep = stats.paired_difference(y, a, independent)
    assert hi_shared - lo_shared < 0.5 * (hi_indep - lo_indep)
    assert stats.paired_difference(y, a, a) == (0.0, 0.0, 0.0)


def test_aggregate_carries_intervals_over_seeds_or_from_the_one_run():
    import pandas as pd

    from taetlib import report
    rows = []
    for arm, seeds in (("taet", [0, 1, 2]), ("at_bsl", [0])):
        for seed in seeds:
            v = 0.4 + 0.01 * seed + (0.1 if arm == "at_bsl" else 0)
            rows.append({"dataset": "d", "imbalance_ratio": 10.0, "arm": arm, "method": arm, "robustlt": False,
                         "protocol": "balanced", "metric": "balanced_robustness", "robust_attack": "pgd20",
                         "seed": seed, "value": v, "low": v - 0.02, "high": v + 0.02})
    agg = report.aggregate(pd.DataFrame(rows)).set_index("arm")
    assert {"mean", "std", "n", "low", "high", "interval"} <= set(agg.columns)
    t = sps.t.interval(0.95, 2, loc=0.41, scale=sps.sem([0.40, 0.41, 0.42]))   # no image counts: the t over seeds
    assert (agg.loc["taet", "low"], agg.loc["taet", "high"]) == pytest.approx(t)
    assert agg.loc["taet", "interval"] == intervals.NESTED    # no split_seed column: taken as resampled
    assert (agg.loc["at_bsl", "low"], agg.loc["at_bsl", "high"]) == pytest.approx((0.48, 0.52))
    assert agg.loc["at_bsl", "interval"] == intervals.ONE_SEED


def test_summary_and_per_class_tables_carry_their_intervals():
    from taetlib.eval_result import per_class_table
    y = np.repeat(np.arange(3), 50)
    pred = np.where(np.arange(150) % 5 == 0, (y + 1) % 3, y)   # 80 % recall in every class
    t = per_class_table("clean", "balanced", 0.0, y, pred, ["a", "b", "c"])
    for row in t.itertuples():
        assert (row.recall_low, row.recall_high) == pytest.approx(stats.wilson(row.correct, row.n))
        assert row.recall_low < row.recall < row.recall_high


# ------------------------------------------------------------------------------ the engine's proportions and families
def test_holm_equals_statsmodels_on_a_worked_example():
    from statsmodels.stats.multitest import multipletests
    p = np.array([0.0033, 0.022, 0.04, 0.3, 0.012, 0.6, 0.25, 0.08, 0.5, 0.9, 0.15, 0.45])   # 12 claim readings
    adj = intervals.holm(p)
    assert adj == pytest.approx(multipletests(p, method="holm")[1])
    assert adj[0] == pytest.approx(0.0033 * 12) and adj[1] == pytest.approx(min(1, max(0.0396, 0.022 * 10)))
    assert np.isnan(intervals.holm([0.01, np.nan])[1]) and intervals.holm([0.01, np.nan])[0] == pytest.approx(0.01)


def test_proportion_intervals_never_leave_the_unit_range():
    rng = np.random.default_rng(3)
    for _ in range(300):
        k = int(rng.integers(1, 7))
        p = np.clip(rng.choice([0.0, 0.002, 0.5, 0.97, 1.0]) + rng.normal(0, 0.05, k), 0, 1)
        out = intervals.proportion(p, rng.integers(20, 2000, k))
        assert 0 <= out["low"] <= out["high"] <= 1


def test_seeds_at_one_value_get_the_pooled_wilson_interval_around_their_mean():
    out = intervals.proportion([0.23, 0.23], [100, 100])   # no spread: Hartung-Knapp's interval would be a point
    assert out["low"] < 0.23 < out["high"] and (out["low"], out["high"]) == pytest.approx(stats.wilson(46, 200))


def test_an_all_zero_cell_gets_its_wilson_upper_bound():
    out = intervals.proportion([0.0, 0.0, 0.0], [200, 200, 400])
    assert out["low"] == 0 and out["high"] == pytest.approx(stats.wilson(0, 800)[1]) and out["high"] > 0.004
    import pandas as pd

    from taetlib import report
    rows = [{"dataset": "d", "imbalance_ratio": 100.0, "arm": "mart", "method": "mart", "robustlt": False,
             "protocol": "balanced", "metric": "weakest_k_robustness", "robust_attack": "pgd20", "seed": s,
             "value": 0.0, "low": np.nan, "high": np.nan, "images": 800.0, "split_seed": s} for s in range(3)]
    cell = report.aggregate(pd.DataFrame(rows)).iloc[0]
    assert cell["low"] == 0 and cell["high"] > 0 and cell["interval"] == intervals.NESTED


def test_detectable_effect_is_the_t_tests_80_percent_power_point():
    se, k = 0.039 / np.sqrt(3), 3   # claim 1's seed std of the difference, 3.9 points
    mde = intervals.detectable(se, k)
    t = sps.t.ppf(0.975, k - 1)
    power = sps.nct.sf(t, k - 1, mde / se) + sps.nct.cdf(-t, k - 1, mde / se)
    assert power == pytest.approx(0.8, abs=1e-3) and 0.11 < mde < 0.15   # the 'about 13 points'
