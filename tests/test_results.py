"""TAET's claims read off the interval engine, the verdict words, the aggregate table, the README's demo
section, and the per-IR budgets of the short every-method preset."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from taetlib import compare, intervals, presets, results, stats, verdicts
from taetlib.plan import Sweep, budget_problems

ROOT = Path(__file__).resolve().parents[1]


def metrics_frame(diffs: dict, seeds=(0, 1, 2), arms=("at_bsl", "taet")) -> pd.DataFrame:
    """Per-run metrics of arms taet and at_bsl: at_bsl 0.5 everywhere, taet 0.5 + the given per-seed offsets."""
    rows = []
    for (ir, metric), offsets in diffs.items():
        for seed, off in zip(seeds, offsets):
            for arm, v in (("at_bsl", 0.5), ("taet", 0.5 + off)):
                rows.append({"imbalance_ratio": ir, "protocol": "balanced", "metric": metric, "seed": seed,
                             "arm": arm, "value": v})
    return pd.DataFrame(rows)


PRIMARY = presets.taet_claims([10], "balanced")


def test_claim_readings_are_the_t_interval_without_image_variances_and_holm_over_the_primaries():
    offsets = {(10.0, "balanced_robustness"): [0.02, 0.05, 0.03], (10.0, "taet_tail_robustness"): [0.01, 0.06, -0.01],
               (10.0, "weakest_k_robustness"): [0.0, 0.02, 0.01]}
    rs = {r["metric"]: r for r in results.claim_readings(metrics_frame(offsets), primary=PRIMARY)}
    r = rs["balanced_robustness"]
    t = st.t.interval(0.95, 2, loc=np.mean(offsets[(10.0, "balanced_robustness")]),
                      scale=st.sem(offsets[(10.0, "balanced_robustness")]))
    assert (r["low"], r["high"]) == pytest.approx(t) and r["k"] == 3 and r["kind"] == "claim"
    p = [rs[m]["p"] for m in ("balanced_robustness", "taet_tail_robustness")]
    assert [rs[m]["p_holm"] for m in ("balanced_robustness", "taet_tail_robustness")] == pytest.approx(
        list(multipletests(p, method="holm")[1]))
    assert rs["weakest_k_robustness"]["kind"] == "descriptive" and "p_holm" not in rs["weakest_k_robustness"]
    assert rs["balanced_robustness"]["claimed"] == 0.086 and rs["balanced_robustness"]["mde"] > 0


def test_claim_readings_name_a_missing_arm():
    with pytest.raises(KeyError, match="taet"):
        results.claim_readings(metrics_frame({(10.0, "balanced_robustness"): [0.1, 0.1, 0.1]}).query(
            "arm != 'taet'"), primary=PRIMARY)


def test_the_verdict_words_follow_the_adjusted_test_and_the_declaration():
    rs = results.claim_readings(metrics_frame({
        (10.0, "balanced_robustness"): [0.030, 0.032, 0.031],      # primary, significant: holds
        (10.0, "taet_tail_robustness"): [0.05, -0.04, 0.01],       # primary, spans 0: not settled, with a bound
        (10.0, "weakest_k_robustness"): [-0.040, -0.041, -0.042],  # not declared: descriptive, however clear
    }), primary=PRIMARY)
    lines = dict(zip([r["metric"] for r in rs], (verdicts.sentence(r) for r in rs)))
    assert "the claim holds" in lines["balanced_robustness"] and "Holm-adjusted" in lines["balanced_robustness"]
    tail = lines["taet_tail_robustness"]
    assert "not settled" in tail and "at most +" in tail and "80 % power" in tail and "reach" in tail
    assert "holds" not in tail and "contradicted" not in tail and "not shown" not in tail
    assert "descriptive" in lines["weakest_k_robustness"] and "contradicted" not in lines["weakest_k_robustness"]


def test_the_verdict_function_never_says_holds_or_contradicted_unless_primary_and_significant():
    rng = np.random.default_rng(5)
    for _ in range(400):
        k = int(rng.integers(1, 6))
        est = rng.normal(rng.normal(0, 0.05), rng.uniform(0.001, 0.05), k)
        r = {**intervals.combine(est, np.full(k, rng.uniform(1e-5, 1e-3))), "a": "taet", "b": "at_bsl",
             "imbalance_ratio": 10.0, "protocol": "balanced", "metric": "m", "label": "claim",
             "kind": rng.choice(["claim", "descriptive"]), "claimed": 0.08}
        r["mde"] = intervals.detectable(r["se"], r["k"])
        r.update(p_holm=min(1.0, r["p"] * int(rng.integers(1, 5))), family=4)
        if rng.random() < 0.5:   # a design that declared its seeds: fewer ended is an interim look
            r.update(declared=int(rng.integers(k, 9)), ended=k)
        text = verdicts.sentence(r)
        says = "holds" in text or "contradicted" in text
        final = r.get("ended", k) >= r.get("declared", k)
        assert says == (r["kind"] == "claim" and k >= 2 and r["p_holm"] < 0.05 and final), text


def test_a_comparison_without_a_claimed_direction_names_the_higher_arm_and_a_claim_follows_its_sign():
    """Study B asks two-sided questions: a significant one names the higher arm, never 'holds'; a claimed
    direction below zero holds when the difference is below zero."""
    up, down = [0.030, 0.032, 0.031], [-0.030, -0.032, -0.031]
    for values, higher in ((up, "taet"), (down, "at_bsl")):
        m = metrics_frame({(10.0, "balanced_robustness"): values})
        (r,) = compare.primary_readings(m, [{**PRIMARY[0], "claimed": None}], results.CLAIMS)
        text = verdicts.sentence(r)
        assert r["p_holm"] < 0.05 and f"{higher} is higher (no direction was claimed" in text, text
        assert "holds" not in text and "contradicted" not in text
        summary = verdicts.sentence({"kind": "summary", "readings": [r]})
        assert "(Holm-adjusted over the 1), 1 shows a difference where no direction was claimed and 0 are not " \
            "settled" in summary and "hold" not in summary and "contradicted" not in summary
        (neg,) = compare.primary_readings(m, [{**PRIMARY[0], "claimed": -0.05}], results.CLAIMS)
        word = "the claim holds" if higher == "at_bsl" else "the claim is contradicted (taet higher)"
        assert word in verdicts.sentence(neg)
    flat = metrics_frame({(10.0, "balanced_robustness"): [0.05, -0.04, 0.01]})
    (r,) = compare.primary_readings(flat, [{**PRIMARY[0], "claimed": None}], results.CLAIMS)
    assert "not settled" in verdicts.sentence(r) and "is higher" not in verdicts.sentence(r)
    summary = verdicts.sentence({"kind": "summary", "readings": [r]})
    assert "(Holm-adjusted over the 1), 1 is not settled;" in summary and "hold" not in summary


def test_an_interim_look_gets_no_verdict_until_every_declared_seed_has_ended():
    clear = {(10.0, "balanced_robustness"): [-0.090, -0.092, -0.091],
             (10.0, "taet_tail_robustness"): [-0.07, -0.08, -0.075]}
    early = compare.claim_readings(metrics_frame(clear), "taet", "at_bsl", results.CLAIMS, PRIMARY, declared=8)
    for r in early:
        assert (r["k"], r["ended"], r["declared"]) == (3, 3, 8) and r["p_holm"] < 0.05
        text = verdicts.sentence(r)
        assert "an interim look at 3 of the 8 declared seeds" in text and "contradicted" not in text
    summary = verdicts.sentence({"kind": "summary", "readings": early})
    assert "interim look at 3 of the 8" in summary and "contradicted" not in summary
    final = compare.claim_readings(metrics_frame(clear), "taet", "at_bsl", results.CLAIMS, PRIMARY, declared=3)
    assert all("the claim is contradicted (at_bsl higher)" in verdicts.sentence(r) for r in final)
    # a run the health gate left out has ended: its seed is spent, the look is final on the seeds that trained
    m = metrics_frame(clear).assign(trained=True)
    m.loc[(m["seed"] == 2) & (m["arm"] == "taet"), "trained"] = False
    (r, _) = compare.primary_readings(m, PRIMARY, declared=3)
    assert (r["k"], r["ended"]) == (2, 3) and "interim" not in verdicts.sentence(r)
    # no declared design (a sweep without seeds on record): the rule does not apply
    assert "declared" not in compare.primary_readings(m, PRIMARY)[0]


def test_a_primary_comparison_is_read_under_its_own_label_where_it_declares_one():
    """Study B's comparisons are not TAET's claims: the metric's claim label must not name them."""
    m = metrics_frame({(10.0, "balanced_robustness"): [0.01, 0.02, 0.03]})
    spec = {**PRIMARY[0], "label": "HARL's weight threshold"}
    (own,) = compare.primary_readings(m, [spec], results.CLAIMS)
    (by_metric,) = compare.primary_readings(m, [PRIMARY[0]], results.CLAIMS)
    assert own["label"] == "HARL's weight threshold" and "HARL's weight threshold:" in verdicts.sentence(own)
    assert by_metric["label"] == results.CLAIMS[PRIMARY[0]["metric"]]


def test_stopping_at_the_first_significant_look_would_inflate_the_error_the_one_final_look_keeps():
    """Why an interim look gets no verdict: with no true difference, reading the engine after every seed
    from 2 to 8 and stopping at the first p < 0.05 rejects far more often than 5 %; one look at the 8
    declared seeds rejects at about 5 % (simulated against the known truth, zero)."""
    rng = np.random.default_rng(0)
    sims, peeking, final = 2000, 0, 0
    for _ in range(sims):
        d = rng.normal(0.0, 0.04, 8)
        p = [intervals.combine(d[:k])["p"] for k in range(2, 9)]
        peeking += any(x < 0.05 for x in p)
        final += p[-1] < 0.05
    se = np.sqrt(0.05 * 0.95 / sims)
    assert abs(final / sims - 0.05) < 3 * se
    assert peeking / sims > 0.05 + 10 * se


def ranking_metrics(values: dict) -> pd.DataFrame:
    return pd.DataFrame([{"imbalance_ratio": 10.0, "protocol": "balanced", "metric": "balanced_robustness",
                          "arm": arm, "seed": s, "value": v} for arm, vs in values.items() for s, v in enumerate(vs)])


def test_rankings_come_from_paired_differences_not_interval_overlap():
    # seeds move every arm together: the arms' own intervals overlap widely, the paired differences do not
    shift = np.array([0.0, 0.10, -0.08, 0.05])
    m = ranking_metrics({"a": 0.50 + shift, "b": 0.45 + shift + [0.001, -0.001, 0.0, 0.001],
                         "c": 0.499 + shift + [0.004, -0.003, 0.002, -0.002]})
    (r,) = compare.rankings(m)
    assert r["best"] == "a" and r["tied"] == ["c"] and r["arms"] == 3
    own = {arm: intervals.hartung_knapp(g["value"].to_numpy()) for arm, g in m.groupby("arm")}
    assert own["b"]["high"] > own["a"]["low"]   # overlap would have called b level with a
    line = verdicts.sentence(r)
    assert "cannot tell a from c" in line and "ranks 1-2 of 3" in line
    (b,) = [d for d in r["differences"] if d["arm"] == "b"]
    assert b["p_holm"] < 0.05 and line.endswith(f"; lower than a (Holm-adjusted): b (p {verdicts._p(b['p_holm'])}).")


def test_an_arm_of_one_seed_is_never_ranked_nor_told_apart_on_its_test_images_alone():
    # a partial study: two arms have every seed, two have one; one image-level reading alone gives a p-value
    m = ranking_metrics({"a": [0.60, 0.62, 0.61], "b": [0.598, 0.625, 0.606], "lucky": [0.80], "low": [0.20]})
    m["images"] = 2000
    one = compare.difference_reading(compare.seed_pairs(m, "a", "low", 10.0, "balanced", "balanced_robustness"))
    assert one["k"] == 1 and one["p"] < 0.001   # what a ranking must not read as "lower"
    (r,) = compare.rankings(m)
    assert r["best"] == "a" and r["tied"] == ["b"] and r["unranked"] == ["lucky", "low"] and r["arms"] == 4
    assert [d["arm"] for d in r["differences"]] == ["b"]   # the Holm family holds the tested arms only
    line = verdicts.sentence(r)
    assert "of the 2 arms with two seeds or more" in line and "ranks 1-2 of 2" in line
    assert line.endswith("not ranked, with fewer than two seeds in common with a: lucky, low.")
    (clear,) = compare.rankings(ranking_metrics({"a": [0.60, 0.62, 0.61], "b": [0.40, 0.41, 0.42], "c": [0.9]}))
    assert clear["tied"] == [] and "every other ranked arm is lower" in verdicts.sentence(clear)   # not c
    # the best arm has two seeds, the others three: the pairs hold two seeds, not the study's three
    (two,) = compare.rankings(ranking_metrics({"a": [0.70, 0.60], "b": [0.60, 0.62, 0.61], "c": [0.61, 0.6, 0.62]}))
    assert two["best"] == "a" and sorted(two["tied"]) == ["b", "c"] and two["k"] == 3 and two["pair_k"] == [2]
    assert "paired differences over 2 seeds" in verdicts.sentence(two)
    (mixed,) = compare.rankings(ranking_metrics({"a": [0.70, 0.60, 0.65], "b": [0.60, 0.62, 0.61], "c": [0.6, 0.7]}))
    assert mixed["pair_k"] == [2, 3] and "paired differences over 2-3 seeds" in verdicts.sentence(mixed)
    (demo,) = compare.rankings(ranking_metrics({"x": [0.5], "y": [0.4]}))   # every arm one seed: no ranking
    assert demo["best"] == "x" and "one seed, so no ranking" in verdicts.sentence(demo)


def test_a_constant_predictor_and_a_nan_loss_did_not_train_and_are_left_out_of_rankings():
    from taetlib import health
    y = np.repeat(np.arange(10), 100)
    summary = pd.DataFrame([{"attack": "clean", "protocol": "balanced", "balanced": 0.1,
                             "balanced_low": stats.balanced_interval(y, np.zeros_like(y))[1]}])
    good = pd.DataFrame([{"attack": "clean", "protocol": "balanced", "balanced": 0.7, "balanced_low": 0.67}])
    history = [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(5)]
    constant = health.run_health(summary, history, 10)
    nan_loss = health.run_health(good, history + [{"epoch": 5, "loss": float("nan")}], 10)
    fine = health.run_health(good, history, 10)
    assert not constant["trained"] and constant["above_chance"] is False and "chance" in constant["reason"]
    assert not nan_loss["trained"] and nan_loss["finite_loss"] is False and fine["trained"]
    m = ranking_metrics({"good": [0.40, 0.42, 0.41], "constant": [0.9, 0.9, 0.9], "diverged": [0.8, 0.8, 0.8]})
    m["trained"] = ~m["arm"].isin(["constant", "diverged"])
    (r,) = compare.rankings(m)
    assert r["best"] == "good" and r["arms"] == 1 and r["tied"] == []


def test_a_still_rising_validation_curve_fails_the_plateau_check():
    from taetlib import health
    rising = [{"epoch": e, "stage": "adversarial", "loss": 1.0, "test_clean_acc": [0.1 + 0.1 * e] * 10}
              for e in range(5)]
    flat = [{**r, "test_clean_acc": [0.6 + 0.001 * r["epoch"]] * 10} for r in rising]
    assert health.levelled(rising, health.Rules()) is False and health.levelled(flat, health.Rules()) is True
    assert health.levelled(rising[:2], health.Rules()) is None   # too few evaluations: not measured


def test_the_table_shows_each_mean_with_its_interval_in_percent_and_marks_runs_that_did_not_train():
    agg = pd.DataFrame([{"imbalance_ratio": 10.0, "arm": arm, "protocol": "balanced", "metric": "balanced_robustness",
                         "mean": m, "std": 0.01, "n": n, "low": m - 0.02, "high": m + 0.02, "did_not_train": bad}
                        for arm, m, bad, n in (("a", 0.6, 0, 3), ("b", 0.1, 3, 3), ("c", 0.4, 1, 3), ("d", 0.5, 0, 1))])
    t = results.table(agg, "balanced", ["balanced_robustness"])
    assert list(t["arm"]) == ["a", "b (did not train)", "c (1 of 3 runs did not train)", "d"]
    assert list(t["seeds"]) == [3, 3, 3, 1]   # a partial study: how many seeds each mean holds
    assert t.loc[0, "balanced_robustness"] == "60.0 [58.0, 62.0]"
    # the sweep's order where given (the aggregate lists arms alphabetically); the did-not-train marks follow
    t = results.table(agg, "balanced", ["balanced_robustness"], arms=["d", "c", "a", "b"])
    assert list(t["arm"]) == ["d", "c (1 of 3 runs did not train)", "a", "b (did not train)"]
    assert list(t["seeds"]) == [1, 3, 3, 3]


def test_a_three_seed_sweep_draws_three_splits(tmp_path):
    from taetlib import data
    from taetlib.config import RunConfig
    s = Sweep(root=tmp_path / "sw", dataset="synthetic", irs=[10], arms=["pgd_at", "taet"], seeds=[0, 1, 2],
              config={"n_max": 60, "test_per_class": 20, "data_root": str(tmp_path / "data")})
    runs = s.plan()
    assert sorted({r.config["split_seed"] for r in runs}) == [0, 1, 2]
    from taetlib.sweep import stage_dirs
    stages = stage_dirs(runs)
    assert len(stages) == 3 and all(len(members) == 2 for _, members in stages.values())
    manifests = {}
    for config, _ in stages.values():
        lt = data.load_lt(RunConfig.from_dict(config))
        ind = lt.manifest["indices"]
        manifests[lt.manifest["path"]] = (tuple(ind["train"]), tuple(ind["balanced"]))
    assert len(manifests) == 3 and all(Path(p).exists() for p in manifests)
    assert len({v[0] for v in manifests.values()}) == 3 and len({v[1] for v in manifests.values()}) == 3
    fixed = Sweep(root=tmp_path / "fx", dataset="synthetic", irs=[10], arms=["pgd_at"], seeds=[0, 1, 2],
                  config={"split_seed": 0}).plan()
    assert {r.config["split_seed"] for r in fixed} == {0}   # a preset can still fix the split


def test_the_demo_section_comes_from_the_verdict_function(tmp_path):
    agg_rows, metric_rows = [], []
    for arm, v in (("at_bsl", 0.58), ("taet", 0.49)):
        for metric in results.CLAIMS:
            agg_rows.append({"imbalance_ratio": 10.0, "arm": arm, "protocol": "balanced", "metric": metric, "mean": v,
                             "std": np.nan, "n": 1, "low": v - 0.01, "high": v + 0.01, "interval": intervals.ONE_SEED})
            metric_rows.append({"imbalance_ratio": 10.0, "arm": arm, "protocol": "balanced", "metric": metric,
                                "seed": 0, "value": v, "images": 3000.0})
    pd.DataFrame(agg_rows).to_csv(tmp_path / "aggregate.csv", index=False)
    pd.DataFrame(metric_rows).to_csv(tmp_path / "metrics.csv", index=False)
    (tmp_path / "sweep.json").write_text('{"preset": "fmnist_lt_demo"}')
    section = results.demo_section(tmp_path)
    assert section.startswith(results.DEMO_MARKERS[0]) and section.endswith(results.DEMO_MARKERS[1])
    assert "holds" not in section and "contradicted" not in section   # one seed: no verdict
    assert "no verdict" in section and re.search(r"\ntaet +49\.0 \[48\.0, 50\.0\]\n", section)
    readings = compare.claim_readings(pd.DataFrame(metric_rows), "taet", "at_bsl", results.CLAIMS,
                                      presets.get("fmnist_lt_demo").primary)
    for r in readings:
        assert verdicts.sentence(r) in section


def test_the_short_zoo_preset_sizes_its_budget_per_ir_equal_across_arms(tmp_path):
    p = presets.get("fmnist_lt_zoo_short")
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


def test_readme_section_refuses_a_folder_without_results(tmp_path, capsys):
    from taetlib import cli
    readme_before = (ROOT / "README.md").read_text()
    assert cli.main(["readme-section", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run_dir=" in err[0] and "aggregate.csv" in err[0]
    assert (ROOT / "README.md").read_text() == readme_before and list(tmp_path.iterdir()) == []
