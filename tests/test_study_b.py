"""Study B's analyses: the rarity slope's interval covers a known truth at its level (simulated per-class
recall from a known log-count slope, class difficulties and run levels), the slope is not read from one
class order, and the negative-weight share is counted from a hand-made history as fit writes it."""
import numpy as np
import pandas as pd
import pytest

from taetlib import study_b
from taetlib.data import by_rank, longtail_counts
from taetlib.history import history_text

CLASSES = [f"c{i}" for i in range(10)]
LABEL = list(range(10))
HARD_RAREST = [0, 1, 2, 3, 5, 7, 8, 9, 6, 4]   # four classes moved to the rare end, as class_order does


def simulated(rng, slope: float, orders=(LABEL, HARD_RAREST), seeds=4, arms=3, images=200,
              extra: float = 0.0) -> pd.DataFrame:
    """Per run and class: correct ~ Binomial(images, p), p = run level + class difficulty + slope * log n
    (+ a class-and-run deviation of sd `extra`: more spread than the test images alone give)."""
    difficulty = np.linspace(-0.2, 0.2, 10)
    profile = longtail_counts(1000, 10, 10)
    rows = []
    for o, order in enumerate(orders):
        counts = by_rank(profile, order)
        for arm in range(arms):
            for seed in range(seeds):
                run = f"o{o}/a{arm}/s{seed}"
                level = 0.1 + 0.05 * arm + rng.normal(0, 0.03)
                for c in range(10):
                    p = np.clip(level + difficulty[c] + slope * np.log(counts[c]) + rng.normal(0, extra), 0.01, 0.99)
                    rows.append({"run": run, "arm": f"a{arm}", "class": c, "class_name": CLASSES[c],
                                 "train_count": counts[c], "recall": rng.binomial(images, p) / images})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("extra", [0.0, 0.04])
def test_the_rarity_slope_interval_covers_the_true_slope_at_its_level(extra):
    rng = np.random.default_rng(11)
    truth, sims = 0.04, 300
    hits = 0
    for _ in range(sims):
        r = study_b.rarity_slope(simulated(rng, truth, extra=extra))
        hits += r["low"] <= truth <= r["high"]
    coverage = hits / sims
    # 300 simulations: a 95 % interval's coverage lies in [0.92, 0.98] with probability ~0.99
    assert 0.92 <= coverage <= 0.98, coverage


def test_the_slope_finds_a_real_effect_and_not_a_null_one():
    rng = np.random.default_rng(3)
    strong = study_b.rarity_slope(simulated(rng, 0.06))
    assert strong["low"] > 0 and strong["estimate"] == pytest.approx(0.06, abs=0.02)
    null = [study_b.rarity_slope(simulated(rng, 0.0)) for _ in range(40)]
    assert sum(r["low"] > 0 or r["high"] < 0 for r in null) <= 6   # ~5 % false positives, never most


def test_one_class_order_does_not_identify_the_slope_and_per_arm_slopes_are_read():
    rng = np.random.default_rng(4)
    assert study_b.rarity_slope(simulated(rng, 0.05, orders=(LABEL,))) is None
    assert study_b.class_effects(simulated(rng, 0.05, orders=(LABEL,))) is None
    per_arm = study_b.rarity_slopes(simulated(rng, 0.05, seeds=6), "arm")
    assert list(per_arm["arm"]) == ["a0", "a1", "a2"]
    assert ((per_arm["estimate"] - 0.05).abs() < 3.5 * per_arm["se"]).all() and (per_arm["se"] > 0).all()


def test_class_effects_order_the_classes_by_their_difficulty_at_equal_count():
    rng = np.random.default_rng(5)
    effects = study_b.class_effects(simulated(rng, 0.05, seeds=6))
    assert list(effects["class_name"][:3]) == ["c0", "c1", "c2"] and list(effects["class_name"][-2:]) == ["c8", "c9"]
    assert effects["effect"].sum() == pytest.approx(0, abs=1e-9)   # centred on the mean class
    truth = np.linspace(-0.2, 0.2, 10)
    got = effects.set_index("class_name").loc[CLASSES]
    assert ((got["low"] <= truth + 0.05) & (got["high"] >= truth - 0.05)).all()


def hand_made_history(tmp_path) -> list[dict]:
    """Two clean epochs without weights, then three HARL epochs: class 0 negative twice, class 1 once, class 2
    never, class 3 absent in one epoch (None); written and read back as fit does."""
    records = [{"epoch": e, "stage": "stabilization", "loss": 1.0, "class_weight": None} for e in (0, 1)]
    weights = [[-0.1, 0.2, 0.3, None], [-0.05, -0.01, 0.3, 0.1], [0.02, 0.1, 0.3, -0.2]]
    records += [{"epoch": 2 + i, "stage": "adversarial", "loss": 1.0, "class_weight": w} for i, w in enumerate(weights)]
    path = tmp_path / "history.jsonl"
    path.write_text(history_text(records))
    from taetlib.history import read_history
    return read_history(tmp_path)


def test_the_negative_share_counts_class_epochs_with_a_negative_weight(tmp_path):
    got = study_b.negative_shares(hand_made_history(tmp_path), ["a", "b", "c", "d"]).set_index("class_name")
    assert got["epochs"].to_dict() == {"a": 3, "b": 3, "c": 3, "d": 2}
    assert got["negative"].to_dict() == {"a": 2, "b": 1, "c": 0, "d": 1}
    assert got["share"].to_dict() == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 0.0, "d": 0.5})
    assert got["batch_share"].isna().all()   # this history recorded no batch-level signs


def test_the_batch_share_averages_each_epochs_share_of_negative_batches(tmp_path):
    """Class c's mean weight stays positive while a third of its batches turn negative: the batch share sees
    what the epoch share cannot."""
    records = [{"epoch": e, "stage": "adversarial", "loss": 1.0, "class_weight": [0.1, 0.2, None],
                "class_weight_negative": [n, 0.0, None]} for e, n in ((0, 1 / 3), (1, 0.0), (2, 2 / 3))]
    (tmp_path / "history.jsonl").write_text(history_text(records))
    from taetlib.history import read_history
    got = study_b.negative_shares(read_history(tmp_path), ["a", "b", "c"]).set_index("class_name")
    assert got["negative"].to_dict() == {"a": 0, "b": 0}
    assert got["batch_share"].to_dict() == pytest.approx({"a": 1 / 3, "b": 0.0})
    assert study_b.negative_shares([{"epoch": 0, "loss": 1.0, "class_weight": None}]).empty


def test_recall_deltas_pair_each_class_with_the_reference_on_the_same_seed_and_order():
    rows = []
    for seed in (0, 1):
        for order in ("label", "hard_rarest"):
            for method, arm, base in (("at_bsl", "at_bsl", 0.5), ("taet", "taet", 0.4)):
                for c in range(3):
                    rows.append({"run": f"{arm}/{order}/{seed}", "arm": arm, "method": method, "robustlt": False,
                                 "seed": seed, "class_order": order, "class": c, "class_name": f"k{c}",
                                 "recall": base + 0.1 * c + 0.01 * seed + (0.05 if order == "label" else 0)})
    pc = pd.DataFrame(rows)
    shares = pd.DataFrame([{"run": f"taet/{o}/{s}", "class": c, "share": 0.1 * c, "epochs": 10}
                           for o in ("label", "hard_rarest") for s in (0, 1) for c in range(3)])
    d = study_b.recall_deltas(pc, shares)
    assert len(d) == 12 and d["delta"].to_numpy() == pytest.approx(np.full(12, -0.1))
    assert set(d["arm"]) == {"taet"}
    a = study_b.weight_association(d.assign(delta=d["delta"] - 0.2 * d["share"]))
    assert a["across_classes"]["estimate"] == pytest.approx(-0.2) and a["runs"] == 4


def test_an_arm_whose_finished_runs_hold_one_class_order_is_named_not_identified():
    """A partial study: arm a2 has finished only under label order, so its own slope is not identified;
    the README says so instead of printing nan."""
    from taetlib.study_b_readme import rarity_lines
    d = simulated(np.random.default_rng(5), 0.05)
    d = d[~((d["arm"] == "a2") & d["run"].str.startswith("o1"))].rename(columns={"arm": "variant"})
    lines, tables = rarity_lines(d, "worst_case")
    per = tables["rarity_slopes"].set_index("variant")
    assert np.isnan(per.loc["a2", "estimate"]) and np.isfinite(per.loc["a0", "estimate"])
    text = "\n".join(lines)
    assert "| a2 | not identified yet (its finished runs hold one class order) |" in text and "nan" not in text


@pytest.mark.parametrize("batches", [False, True])
def test_without_a_negative_mean_weight_the_readme_reads_no_association_and_says_what_batches_showed(tmp_path,
                                                                                                     batches):
    """Every epoch's mean HARL weight positive (Study B's finding): the association is not read, for that
    reason. Whether single batches went negative is reported where the runs recorded it, and said to be
    unmeasured where they did not."""
    from taetlib.study_b_readme import weight_lines
    rows = []
    for seed in (0, 1):
        for method in ("at_bsl", "taet"):
            run = tmp_path / method / str(seed)
            run.mkdir(parents=True)
            negative = {"class_weight_negative": [0.25 * seed, 0.0, 0.0]} if batches else {}
            records = [{"epoch": e, "stage": "adversarial", "loss": 1.0, "class_weight": [0.1, 0.2, 0.3], **negative}
                       for e in range(3)] if method == "taet" else [{"epoch": 0, "loss": 1.0, "class_weight": None}]
            (run / "history.jsonl").write_text(history_text(records))
            rows += [{"run": str(run), "arm": method, "method": method, "robustlt": False, "seed": seed,
                      "class_order": "label", "class": c, "class_name": f"k{c}", "recall": 0.5} for c in range(3)]
    text = "\n".join(weight_lines(pd.DataFrame(rows))[0])
    # 2 runs x 3 epochs x 3 classes, none negative on average; batches: 0.25 of class k0's, seed 1 -> 0.25 / 6
    assert ("| taet | 18 | 0 | 0.0 | 4.2 |" if batches else "| taet | 18 | 0 | 0.0 |\n") in text
    assert "no class had a negative mean weight in any epoch of any run" in text and "does not vary" not in text
    assert ("share of class-batches with a negative weight" in text) is batches
    assert ("not measured" in text) is not batches
