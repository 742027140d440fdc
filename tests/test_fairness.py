"""Fair comparisons: the papers' groups, HARL's per-class weights, equal adversarial budgets."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from taetlib import metrics
from taetlib.methods import class_means
from taetlib.methods.taet import harl_class_weights, harl_terms


# ------------------------------------------------------------------ named groups
def test_groups_select_each_papers_classes():
    counts = [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]   # CIFAR-10-LT IR 10
    thirds = metrics.class_groups(counts)
    assert [list(thirds[g]) for g in ("head", "medium", "tail")] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    taet = metrics.class_groups(counts, "taet_tail")
    assert list(taet["tail"]) == [5, 6, 7, 8, 9] and list(taet["head"]) == [0, 1, 2, 3, 4]
    rlt = metrics.class_groups(counts, "robustlt_tail")
    assert list(rlt["tail"]) == [2, 3, 4, 5, 6, 7, 8, 9] and list(rlt["head"]) == [0, 1]
    # rarity, not label order, decides: a permuted profile moves the tail with it
    perm = [counts[i] for i in (9, 0, 8, 1, 7, 2, 6, 3, 5, 4)]
    assert sorted(metrics.class_groups(perm, "taet_tail")["tail"]) == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="grouping='fifths'"):
        metrics.class_groups(counts, "fifths")


def test_summary_names_tails_and_weakest_classes():
    counts = [100, 80, 60, 40, 20, 10]
    recall = np.array([0.9, 0.2, 0.8, 0.1, 0.7, 0.6])       # weak classes are not the rare ones
    y = np.repeat(np.arange(6), 10)
    pred = np.concatenate([np.where(np.arange(10) < r * 10, c, (c + 1) % 6) for c, r in enumerate(recall)])
    s = metrics.summarize(y, pred, counts)
    assert s["tail_taet"] == pytest.approx(np.mean([0.1, 0.7, 0.6]))
    assert s["tail_robustlt"] == pytest.approx(np.mean([0.2, 0.8, 0.1, 0.7, 0.6]))   # int(0.2*6)=1 head class
    assert s["weakest_classes"] == [3, 1] and s["weakest_k"] == pytest.approx(0.15)
    assert s["worst_class"] == 3 and s["worst_recall"] == pytest.approx(0.1)


# ------------------------------------------------------------------ HARL's effective class weights
@pytest.mark.parametrize("absent", ["zero", "exclude"])
def test_harl_class_weight_is_the_gradient_wrt_each_class_loss(absent):
    g = torch.Generator().manual_seed(3)
    C, weights = 6, (0.1, 0.1, 0.1)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 5])           # class 4 absent
    per_sample = torch.rand(len(y), generator=g, dtype=torch.float64) * 3
    L, present = class_means(per_sample, y, C)
    L = L.clone().requires_grad_(True)
    parts = harl_terms(L, present, absent)
    loss = sum(w * parts[k] for w, k in zip(weights, ("bcl", "hdl", "rcel")))
    (grad,) = torch.autograd.grad(loss, L)
    w = harl_class_weights(L.detach(), present, *weights, absent)
    assert torch.isnan(w[4]) and not torch.isnan(w[present]).any()
    torch.testing.assert_close(w[present], grad[present])


def test_harl_weight_turns_negative_half_a_nat_below_the_mean():
    # alpha/(2 beta) = 0.5 nats: an easy class 0.6 nats below the mean is pushed up, not down
    L = torch.tensor([2.0, 2.0, 2.0, 0.2], dtype=torch.float64)
    present = torch.ones(4, dtype=torch.bool)
    w = harl_class_weights(L, present, 0.1, 0.1, 0.0)
    bcl = L.mean()
    assert bcl - L[3] > 0.5 and w[3] < 0 and (w[:3] > 0).all()
    w_unit = harl_class_weights(L, present, 1.0, 1.0, 0.0)   # the taet_unit control keeps the sign pattern
    assert (torch.sign(w_unit) == torch.sign(w)).all() and torch.allclose(w_unit, 10 * w)


# ------------------------------------------------------------------ released-code options
def test_autoaugment_uses_the_cifar10_policy():
    from torchvision.transforms import v2

    from taetlib.batches import policy_op
    assert policy_op("autoaugment").policy == v2.AutoAugmentPolicy.CIFAR10
    ra = policy_op("randaugment")
    assert (ra.num_ops, ra.magnitude) == (2, 8)


def test_batch_stat_attack_uses_batch_statistics_and_freezes_running_ones():
    from torch import nn

    from taetlib.attacks import pgd_trace
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    x, y = torch.rand(16, 12), torch.randint(0, 3, (16,))
    model(x * 3 + 1)   # running stats far from this batch's, so eval and batch modes differ
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adv = {bn: pgd_trace(model, x, y, eps=0.3, step=0.1, steps=3, random_start="none", bn=bn)
           for bn in ("eval", "batch")}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k            # nothing moved, num_batches_tracked included
    assert model.training and model[2].track_running_stats
    with torch.no_grad():
        model.eval()
        eval_logits = model(x)
        model.train()
        model[2].track_running_stats = False
        batch_logits = model(x)
        model[2].track_running_stats = True
    torch.testing.assert_close(adv["eval"][1], eval_logits)    # first-iterate logits = the mode's own forward
    torch.testing.assert_close(adv["batch"][1], batch_logits)
    assert not torch.allclose(eval_logits, batch_logits)


def test_nesterov_needs_momentum():
    from taetlib.config import RunConfig
    from taetlib.errors import ConfigError
    with pytest.raises(ConfigError, match="nesterov=True: needs momentum > 0"):
        RunConfig(method="pgd_at", nesterov=True, momentum=0.0)


# ------------------------------------------------------------------ equal adversarial budget
@pytest.fixture
def budget_cfg(tiny_config):
    return partial(tiny_config, epochs=6, stabilization_epochs=2, lr=0.1, lr_milestones=[0.75, 0.9])


def adversarial_lrs(cfg):
    """The lr of each adversarial epoch a config trains."""
    from taetlib.schedule import lr_at, stage_epochs
    epochs = stage_epochs(cfg, "all")
    return [lr_at(cfg, e) for e in epochs if not e <= cfg.clean_stage_epochs()]


def test_equal_budget_gives_taet_the_baselines_adversarial_epochs_and_lrs(tmp_path, budget_cfg):
    pgd_at, taet = budget_cfg(tmp_path, method="pgd_at"), budget_cfg(tmp_path, method="taet")
    assert adversarial_lrs(taet) == adversarial_lrs(pgd_at) == pytest.approx([0.1] * 4 + [0.01, 0.001])
    assert taet.total_epochs() == 8 and pgd_at.total_epochs() == 6
    from taetlib.schedule import lr_at
    assert [lr_at(taet, e) for e in (1, 2)] == [0.1, 0.1]          # stage 1 at the initial lr, extra
    # the released rule: stage 1 inside the same 6 epochs, so TAET gets 4 adversarial epochs, 2 at lr 0.1
    released = budget_cfg(tmp_path, method="taet", budget_rule="released")
    assert adversarial_lrs(released) == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_aiw_ramp_spans_the_adversarial_epochs_under_an_equal_budget(tmp_path, budget_cfg):
    from taetlib.methods import build_objective
    y = torch.tensor([0])
    # equal: (t_adv - 1) / (0.5 * 6) over HARL's epochs 3..8; released: (t - 1) / (1.0 * 6) from epoch 1
    for rule, expected in (("equal_adversarial", [0, 1 / 3, 2 / 3, 1, 1, 1]),
                           ("released", [2 / 6, 3 / 6, 4 / 6, 5 / 6])):
        cfg = budget_cfg(tmp_path, method="taet", robustlt=True, robustlt_b=(0.5 if rule != "released" else 1.0),
                   budget_rule=rule, eps=0.1)
        ob = build_objective(cfg, [40, 4], default_eps=0.1)
        head = ob.attack.class_scale[0].item()
        ramp = [ob.attack.radius(y, e)[0][0].item() / (0.1 * head) for e in range(3, cfg.total_epochs() + 1)]
        assert ramp == pytest.approx(expected), rule


def test_harl_class_weights_are_recorded_per_adversarial_epoch(tmp_path, budget_cfg):
    from taetlib.data import load_lt
    from taetlib.history import history_tables
    from taetlib.plots import class_weight_figure
    from taetlib.train import fit
    cfg = budget_cfg(tmp_path, method="taet", epochs=2, stabilization_epochs=1, nesterov=True)
    res = fit(cfg, load_lt(cfg), tmp_path / "run", resume=False)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert res.history[0]["class_weight"] is None                  # stage 1 is clean CE
    for r in res.history[1:]:
        w = r["class_weight"]
        assert len(w) == 10 and all(v is not None and np.isfinite(v) for v in w)
        assert max(w) - min(w) > 1e-4                                # HDL spreads the weights
    fig = class_weight_figure(history_tables(res.history))   # the mean, and the share of negative batches
    assert len(fig.data) == 20 and all(list(t.x) == [2, 3] for t in fig.data)
    older = [{k: v for k, v in r.items() if k != "class_weight_negative"} for r in res.history]
    assert len(class_weight_figure(history_tables(older)).data) == 10   # a run that recorded the mean alone
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert all(g["nesterov"] for g in ck["optimizer"]["param_groups"])


def test_harl_records_the_share_of_batches_in_which_a_class_weight_was_negative(tmp_path, budget_cfg):
    """With beta large, a class whose batch loss is even a little below the batch's mean gets a negative
    weight: the recorded share of negative batches lies strictly between 0 and 1 over the classes, and agrees
    in sign with the epoch's mean weight (a mean below zero needs a negative batch, one above it a positive)."""
    from taetlib.data import load_lt
    from taetlib.train import fit
    cfg = budget_cfg(tmp_path, method="taet", epochs=2, stabilization_epochs=1, **{"taet.beta": 5.0})
    res = fit(cfg, load_lt(cfg), tmp_path / "run", resume=False)
    assert res.history[0]["class_weight_negative"] is None          # stage 1 is clean CE
    shares = []
    for r in res.history[1:]:
        for w, n in zip(r["class_weight"], r["class_weight_negative"]):
            assert 0 <= n <= 1 and (n > 0 if w < 0 else n < 1)
            shares.append(n)
    assert 0 < np.mean(shares) < 1


# ------------------------------------------------------------------ checkpoint selection
@pytest.mark.slow
def test_selection_reads_a_validation_split_never_the_test_set(tmp_path, budget_cfg):
    import dataclasses

    from taetlib.data import load_lt
    from taetlib.selection import validation_split
    from taetlib.train import fit
    cfg = budget_cfg(tmp_path, method="pgd_at", epochs=3, select="best_val_pgd", val_fraction=0.2, eval_every=1,
               eval_per_class=5, eval_pgd_steps=2)
    lt = load_lt(cfg)
    train, val = validation_split(lt.train, cfg, 10)
    assert set(train.index.tolist()).isdisjoint(val.index.tolist())
    assert sorted(train.index.tolist() + val.index.tolist()) == sorted(lt.train.index.tolist())
    assert val.counts(10) == [max(int(n * 0.2), 1) for n in lt.train.counts(10)]
    # the same run with a scrambled test set selects the same epoch and writes the same model.pt
    g = torch.Generator().manual_seed(0)
    scrambled = {k: dataclasses.replace(s, y=torch.randint(0, 10, s.y.shape, generator=g)) for k, s in lt.test.items()}
    runs = [fit(cfg, d, tmp_path / name, resume=False)
            for name, d in (("a", lt), ("b", dataclasses.replace(lt, test=scrambled)))]
    assert runs[0].history[-1]["test_clean_acc"] != runs[1].history[-1]["test_clean_acc"]   # test did change
    sel = [torch.load(tmp_path / n / "model.pt", weights_only=True) for n in ("a", "b")]
    assert all(torch.equal(sel[0][k], sel[1][k]) for k in sel[0])
    scores = [np.mean(r["val_pgd_acc"]) for r in runs[0].history]
    best = int(np.argmax(scores)) + 1
    best_w = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    assert all(torch.equal(best_w[k], sel[0][k]) for k in best_w)
    if best != 3:   # the last epoch's weights differ from the selected ones
        last = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
        assert not all(torch.equal(last[k], sel[0][k]) for k in last)


def test_selection_needs_validated_epochs():
    from taetlib.config import RunConfig
    from taetlib.errors import ConfigError
    with pytest.raises(ConfigError, match="select='best_val_pgd': selects among validated epochs"):
        RunConfig(method="pgd_at", select="best_val_pgd", eval_every=0)


def test_small_protocols_are_named_with_their_n():
    import pandas as pd

    from taetlib.sanity import SMALL_N, small_classes
    t = pd.DataFrame({"protocol": ["balanced"] * 3 + ["long_tailed"] * 3, "attack": "clean", "class": [0, 1, 2] * 2,
                      "class_name": ["a", "b", "c"] * 2, "n": [100, 100, 100, 100, SMALL_N, SMALL_N - 1]})
    assert small_classes(t) == {"balanced": "", "long_tailed": f"c (n={SMALL_N - 1})"}


def test_recall_vs_count_plots_each_class_at_its_training_count():
    import pandas as pd

    from taetlib.plots import recall_vs_count
    t = pd.DataFrame({"arm": ["taet"] * 3, "class": [0, 1, 2], "class_name": ["a", "b", "c"],
                      "train_count": [800, 200, 80], "recall": [0.3, 0.9, 0.8]})
    fig = recall_vs_count(t)
    assert list(fig.data[0].x) == [800, 200, 80] and list(fig.data[0].y) == [0.3, 0.9, 0.8]
    assert fig.layout.xaxis.type == "log"


def test_a_capped_long_tailed_test_set_lies_inside_the_balanced_one(tmp_path, budget_cfg):
    from taetlib.data import load_lt
    lt = load_lt(budget_cfg(tmp_path, method="pgd_at", test_per_class=20))
    bal, ltt = lt.test["balanced"], lt.test["long_tailed"]
    assert bal.counts(10) == [20] * 10 and ltt.counts(10) == [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    assert set(ltt.index.tolist()) <= set(bal.index.tolist())


def test_training_a_finished_run_again_says_it_is_complete(tmp_path, capsys):
    from taetlib.cli import main
    args = ["train", "--run", str(tmp_path / "run"), "--set", "dataset=synthetic", f"data_root={tmp_path}",
            "method=pgd_at", "n_max=20", "epochs=1", "attack_steps=1", "eval_every=0", "device=cpu"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "epoch 1/1" in first and "already complete" not in first
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "already complete (epoch 1 of 1)" in again and "model.pt" in again and "epoch 1/1" not in again


def test_comparisons_report_unequal_budgets_and_short_ramps(tmp_path, budget_cfg):
    from taetlib import presets
    from taetlib.plan import Sweep, budget_problems
    from taetlib.schedule import budget, unequal_budgets
    demo = presets.get("fmnist_lt_demo")
    s = Sweep(tmp_path, "fashion_mnist", demo.sweep["irs"], demo.sweep["arms"], demo.sweep["seeds"],
              config={k: v for k, v in demo.config.items() if k != "dataset"}, method_overrides=demo.method_overrides)
    assert budget_problems(s.plan()) == []                       # the demo is fair by construction
    taet = budget(budget_cfg(tmp_path, method="taet", robustlt=True, robustlt_b=0.5))
    assert taet["adversarial_epochs"] == 6 and taet["clean_epochs"] == 2 and taet["aiw_final"] == 1.0
    released, ramp = budget_cfg(tmp_path, method="taet", budget_rule="released"), budget_cfg(tmp_path, method="taet",
                                                                                  robustlt=True, robustlt_b=1.0)
    problems = unequal_budgets({"pgd_at": budget_cfg(tmp_path, method="pgd_at"), "taet": released, "ramp": ramp})
    assert len(problems) == 2
    assert problems[0].startswith("adversarial budgets differ") and "taet: 4 epochs" in problems[0]
    assert problems[1].startswith("ramp: RobustLT's AIW ramp ends at 0.83 of the radius")
