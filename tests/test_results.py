"""The published results folder: its claims read off intervals, its tables equal the CSV it ships with,
and the per-IR budgets of the preset behind it."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from taetlib import presets, results
from taetlib.plan import Sweep, budget_problems

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "results" / "fmnist_lt"


def metrics_frame(diffs: dict, seeds=(0, 1, 2)) -> pd.DataFrame:
    """Per-run metrics of arms taet and at_bsl: at_bsl 0.5 everywhere, taet 0.5 + the given per-seed offsets."""
    rows = []
    for (ir, metric), offsets in diffs.items():
        for seed, off in zip(seeds, offsets):
            for arm, v in (("at_bsl", 0.5), ("taet", 0.5 + off)):
                rows.append({"imbalance_ratio": ir, "protocol": "balanced", "metric": metric, "seed": seed,
                             "arm": arm, "value": v})
    return pd.DataFrame(rows)


def test_seed_differences_are_a_t_interval_over_the_per_seed_differences():
    offsets = [0.02, 0.05, 0.03]
    d = results.seed_differences(metrics_frame({(10.0, "balanced_robustness"): offsets}), "taet", "at_bsl")
    r = d.iloc[0]
    t = st.t.interval(0.95, 2, loc=np.mean(offsets), scale=st.sem(offsets))
    assert r["difference"] == pytest.approx(np.mean(offsets))
    assert (r["low"], r["high"]) == pytest.approx(t)
    assert r["a"] == "taet" and r["b"] == "at_bsl" and r["n"] == 3


def test_the_verdict_says_a_word_only_where_the_interval_excludes_zero():
    d = results.seed_differences(metrics_frame({
        (10.0, "balanced_robustness"): [0.030, 0.032, 0.031],    # interval above 0: holds
        (10.0, "taet_tail_robustness"): [-0.04, -0.05, -0.06],   # interval below 0: contradicted
        (100.0, "balanced_robustness"): [0.05, -0.04, 0.01],     # spans 0: not shown
    }), "taet", "at_bsl")
    lines = results.verdict(d)
    assert len(lines) == 3
    assert "IR 10, claim 1" in lines[0] and "the claim holds" in lines[0]
    assert "claim 2" in lines[1] and "contradicted" in lines[1]
    assert "IR 100, claim 1" in lines[2] and "not shown" in lines[2]


def test_seed_differences_name_a_missing_arm():
    with pytest.raises(KeyError, match="taet"):
        results.seed_differences(metrics_frame({(10.0, "balanced_robustness"): [0.1, 0.1, 0.1]}).query(
            "arm != 'taet'"), "taet", "at_bsl")


def aggregate_frame() -> pd.DataFrame:
    rows = []
    for arm, (m, lo, hi) in {"a": (0.60, 0.58, 0.62), "b": (0.59, 0.57, 0.61), "c": (0.40, 0.38, 0.42)}.items():
        rows.append({"imbalance_ratio": 10.0, "arm": arm, "protocol": "balanced", "metric": "balanced_robustness",
                     "mean": m, "std": 0.01, "n": 3, "low": lo, "high": hi})
    return pd.DataFrame(rows)


def test_rankings_only_where_intervals_separate():
    (line,) = results.leaders(aggregate_frame())
    assert "highest mean balanced robustness: a (60.0)" in line
    assert "not separable from it: b;" in line   # b overlaps a; c lies below


def test_the_table_shows_each_mean_with_its_interval_in_percent():
    t = results.table(aggregate_frame(), "balanced", ["balanced_robustness"])
    assert list(t["arm"]) == ["a", "b", "c"]
    assert t.loc[0, "balanced_robustness"] == "60.0 [58.0, 62.0]"


def test_the_results_preset_sizes_its_budget_per_ir_equal_across_arms(tmp_path):
    p = presets.get("fmnist_lt_results")
    s = Sweep(root=tmp_path, dataset="fashion_mnist", irs=p.sweep["irs"], arms=p.sweep["arms"], seeds=[0],
              config={k: v for k, v in p.config.items() if k != "dataset"}, method_overrides=p.method_overrides,
              ir_overrides=p.ir_overrides, evaluation=p.evaluation)
    runs = s.plan()
    assert not [r.error for r in runs if r.error]
    epochs = {(r.config["imbalance_ratio"], r.config["epochs"]) for r in runs}
    assert epochs == {(10.0, 6), (100.0, 12)}
    assert budget_problems(runs) == []   # every arm of an IR: the same adversarial epochs and lr sequence
    assert p.run_config("taet", 100, 0)["stabilization_epochs"] == 6
    assert p.evaluation["attack_params"]["pgd20"]["iterate"] == "any"
    methods = {a.method for a in p.sweep["arms"]}
    from taetlib.methods import OBJECTIVES
    assert methods == set(OBJECTIVES) - {"ce"}   # every landed adversarial method is in the grid


@pytest.mark.skipif(not (PUBLISHED / "aggregate.csv").exists(), reason="results/fmnist_lt/ not generated yet")
def test_the_published_tables_are_the_published_csv():
    """Every number in results/fmnist_lt/README.md and docs/results.md's results table comes from
    the committed aggregate.csv and claims.csv: nothing typed by hand."""
    agg = pd.read_csv(PUBLISHED / "aggregate.csv")
    claims = pd.read_csv(PUBLISHED / "claims.csv")
    text = (PUBLISHED / "README.md").read_text()
    for protocol in ("balanced", "long_tailed"):
        assert results.markdown(results.table(agg, protocol)) in text
    for line in results.verdict(claims) + results.leaders(agg):
        assert line in text
    top = (ROOT / "docs" / "results.md").read_text()
    assert results.markdown(results.table(agg, "balanced", results.HEADLINE)) in top
    for line in results.verdict(claims):
        assert line in top
    assert re.search(r"Wall time: \d+ min", text)
