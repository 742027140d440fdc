"""Fair comparisons: the papers' groups, HARL's per-class weights, equal adversarial budgets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taetlib import metrics
from taetlib.methods import class_means
from taetlib.methods.longtail import harl_class_weights, harl_terms


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
