"""CFA and DAFA, the class-wise robust-fairness baselines: values computed by hand from the official formulas,
the epoch-to-epoch calibration, their per-class radii in the attack, resume state, and what they refuse."""
import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from taetlib.config import RunConfig
from taetlib.errors import ConfigError
from taetlib.fawa import class_robust_acc
from taetlib.methods.base import build_objective
from taetlib.methods.cfa import calibrated_beta, calibrated_eps, calibrated_trades
from taetlib.methods.dafa import class_similarity, dafa_weights, warmup_epochs

EPS = 8 / 255


# ---------------------------------------------------------------- CFA: hand values
def test_cfa_class_accuracy_margins_and_weights_hand_values():
    correct, counts = torch.tensor([3.0, 1.0, 0.0]), torch.tensor([4.0, 2.0, 2.0])
    r = class_robust_acc(correct, counts)                       # official: C * correct_c / N = 3 [3, 1, 0] / 8
    assert torch.allclose(r, torch.tensor([1.125, 0.375, 0.0]))
    assert torch.allclose(class_robust_acc(correct, counts, "recall"), torch.tensor([0.75, 0.5, 0.0]))
    assert torch.allclose(calibrated_eps(r, EPS, 0.5), torch.tensor([1.625, 0.875, 0.5]) * EPS)
    # (0.5 + r) 6 / (1 + (0.5 + r) 6) = 9.75 / 10.75, 5.25 / 6.25, 3 / 4
    assert torch.allclose(calibrated_beta(r, 6.0, 0.5), torch.tensor([0.906977, 0.84, 0.75]), atol=1e-6)


def test_cfa_calibrated_trades_loss_hand_value():
    # z = [.5, .2, -.1], z' = [.1, .4, -.2]: CE(z, 0) = 0.828390, CE(z, 2) = 1.428390, KL(p || p') = 0.033959
    z = torch.tensor([[0.5, 0.2, -0.1], [0.5, 0.2, -0.1]])
    z_adv = torch.tensor([[0.1, 0.4, -0.2], [0.1, 0.4, -0.2]])
    loss, natural, robust = calibrated_trades(z, z_adv, torch.tensor([0, 2]), torch.tensor([0.75, 0.84]))
    # ((0.25 * 0.828390 + 0.75 * 0.033959) + (0.16 * 1.428390 + 0.84 * 0.033959)) / 2
    assert float(loss) == pytest.approx(0.244818, abs=1e-6)
    assert float(natural) == pytest.approx((0.828390 + 1.428390) / 2, abs=1e-6)
    assert float(robust) == pytest.approx(0.033959, abs=1e-6)


# ---------------------------------------------------------------- the epoch-to-epoch calibration
def linear_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))


def batch():
    torch.manual_seed(1)
    return torch.rand(30, 3, 2, 2), torch.arange(30) % 3


def cfa(**kw):
    base = dict(method="cfa", eps=EPS, step_size=2 / 255, attack_steps=2, epochs=5, cfa_begin=1)
    return build_objective(RunConfig(**{**base, **kw}), [10, 10, 10], EPS)


@pytest.mark.parametrize("base", ("trades", "at"))
def test_cfa_calibrates_each_epoch_from_the_last_and_attacks_within_each_class_radius(base):
    model, (x, y) = linear_model(), batch()
    obj = cfa(cfa_base=base, random_start="none")
    eps1, beta1 = obj.class_eps_beta(1, x.device)
    assert torch.allclose(eps1, torch.full((3,), EPS)) and torch.allclose(beta1, torch.full((3,), 6 / 7))
    out = obj.step(model, x, y, 1)
    correct = torch.zeros(3).index_add_(0, y, (out.adv_logits.argmax(1) == y).float())
    obj.step(model, x, y, 2)   # the first step of epoch 2 closes epoch 1
    r = 3 * correct / 30
    eps2, beta2 = obj.class_eps_beta(2, x.device)
    assert torch.allclose(eps2, (0.5 + r) * EPS)
    want_beta = (0.5 + r) * 6 / (1 + (0.5 + r) * 6) if base == "trades" else torch.full((3,), 6 / 7)
    assert torch.allclose(beta2, want_beta)
    assert 0 < float(correct.sum()) < 30   # some right, some wrong: r is not trivially 0 or 1
    # the objective's attack: steps larger than any radius end on each sample's own class radius
    big = cfa(cfa_base=base, random_start="normal", step_size=2 * EPS)
    big.load_state_dict(obj.state_dict())
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    big.step(model, x, y, 2)
    reach = (seen[-1] - x).abs().flatten(1).amax(1)   # the last forward is the one on x_adv
    assert torch.allclose(reach, eps2[y], atol=1e-6)


def test_cfa_state_resumes_and_loads_weights_only():
    model, (x, y) = linear_model(), batch()
    obj = cfa(random_start="none")
    obj.step(model, x, y, 1)
    obj.step(model, x, y, 2)
    buf = io.BytesIO()
    torch.save(obj.state_dict(), buf)
    buf.seek(0)
    again = cfa(random_start="none")
    again.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(again.classwise, obj.classwise) and torch.equal(again.tally.sums, obj.tally.sums)
    assert torch.allclose(again.class_eps_beta(3, x.device)[0], obj.class_eps_beta(3, x.device)[0])


def test_cfa_and_dafa_refuse_robustlt_and_bad_settings():
    for method in ("cfa", "dafa"):
        with pytest.raises(ConfigError, match=f"robustlt=True.*method='{method}'"):
            RunConfig(method=method, robustlt=True)
    with pytest.raises(ConfigError, match="cfa_ccr=True"):
        RunConfig(method="cfa", cfa_base="at", cfa_ccr=True)
    with pytest.raises(ConfigError, match="cfa_base='pgd'"):
        RunConfig(method="cfa", cfa_base="pgd")
    with pytest.raises(ConfigError, match="dafa_warmup=10"):
        RunConfig(method="dafa", epochs=10, dafa_warmup=10)
    assert warmup_epochs(RunConfig(method="dafa", epochs=110).hparams, 110) == 70
    assert warmup_epochs(RunConfig(method="dafa", epochs=100).hparams, 100) == 64


# ---------------------------------------------------------------- DAFA: hand values
def official_class_weights(probs, labels, lamb):
    """utils.py calculate_class_weights, read literally."""
    num_classes = len(np.unique(labels))
    class_similarity = np.zeros((num_classes, num_classes))
    class_weights = np.ones(num_classes)
    for i in range(num_classes):
        class_similarity[i] = np.mean(probs[np.where(labels == i)[0]], axis=0)
    for i in range(num_classes):
        for j in range(num_classes):
            if i == j:
                continue
            if class_similarity[i, i] < class_similarity[j, j]:
                class_weights[i] += lamb * class_similarity[i, j] * class_similarity[j, j]
            else:
                class_weights[i] -= lamb * class_similarity[j, i] * class_similarity[i, i]
    return class_weights


def test_dafa_weights_hand_values():
    P = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    # w0 = 1 + .3 * .7 + .1 * .8; w1 = 1 - .3 * .7 + .1 * .8; w2 = 1 - .1 * .8 - .1 * .8
    assert torch.allclose(dafa_weights(P, 1.0), torch.tensor([1.29, 0.87, 0.84], dtype=torch.float64))
    assert torch.allclose(dafa_weights(P, 1.5), 1 + 1.5 * torch.tensor([0.29, -0.13, -0.16], dtype=torch.float64))


def test_dafa_weights_match_the_official_loop():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(200, 10, generator=g) * 2, 1).double()
    labels = torch.arange(200) % 10
    sums = torch.zeros(10, 10, dtype=torch.float64).index_add_(0, labels, probs)
    got = dafa_weights(class_similarity(sums, torch.bincount(labels).double()), 1.0)
    want = official_class_weights(probs.numpy(), labels.numpy(), 1.0)
    assert np.allclose(got.numpy(), want, atol=1e-12)
    assert float(got.sum()) == pytest.approx(10.0)   # what a harder class gains its easier partner loses


def test_dafa_sets_weights_after_the_warmup_epoch_and_scales_each_class_radius():
    model, (x, y) = linear_model(), batch()
    obj = build_objective(RunConfig(method="dafa", eps=EPS, step_size=2 / 255, attack_steps=2, epochs=5,
                                    dafa_warmup=2, random_start="none"), [10, 10, 10], EPS)
    obj.step(copy.deepcopy(model), x, y, 1)
    assert obj.classwise is None and float(obj.tally.counts.sum()) == 0   # only the warm-up epoch is kept
    out = obj.step(model, x, y, 2)
    obj.step(model, x, y, 3)
    sums = torch.zeros(3, 3, dtype=torch.float64).index_add_(0, y, torch.softmax(out.adv_logits.double(), 1))
    want = dafa_weights(class_similarity(sums, torch.full((3,), 10.0, dtype=torch.float64)), 1.0).float()
    assert torch.allclose(obj.classwise, want, atol=1e-6)
    assert not torch.allclose(want, torch.ones(3), atol=1e-3)
    # past the warm-up, steps larger than any radius end on w_y eps (the official per-class radius and step)
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    obj.attack.step = 4 * EPS
    obj.attack.start = "normal"
    obj.step(model, x, y, 4)
    reach = (seen[-2] - x).abs().flatten(1).amax(1)   # official order: x_adv's forward, then x's
    assert torch.allclose(reach, EPS * obj.classwise[y], atol=1e-6)


# ---------------------------------------------------------------- DAFA's --loss pgd (losses.py madry_loss)
def signed_model():
    """z = W x with W = [[1, -1], [-1, 1]]: the CE gradient's sign is (-1, +1) for label 0 and (+1, -1) for label 1
    whatever the point, so the attack's path can be followed by hand."""
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    return net


def dafa_pgd(**kw):
    base = dict(method="dafa", dafa_base="pgd", eps=0.1, step_size=0.03, attack_steps=3, epochs=5, dafa_warmup=2,
                random_start="none")
    return build_objective(RunConfig(**{**base, **kw}), [10, 10], 0.1)


def test_dafa_pgd_base_attack_and_loss_hand_values():
    model, obj = signed_model(), dafa_pgd()
    obj.classwise = torch.tensor([0.5, 1.5])   # past the warm-up: w_0 = 0.5, w_1 = 1.5
    obj.tally.epoch = 3
    x, y = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.98, 0.5]]), torch.tensor([0, 1, 1])
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    out = obj.step(model, x, y, 3)
    # label 0, w 0.5 (ball 0.05 for the weighted step, 0.1 for the plain one), step 0.03 per pixel:
    #   0 -> 0.015 -> 0.045;  0.045 -> 0.06, clipped 0.05 -> 0.08;  0.08 -> 0.095, clipped 0.05 -> 0.08
    # label 1, w 1.5 (ball 0.15, then 0.1): 0 -> 0.045 -> 0.075;  -> 0.12 -> 0.15, clipped 0.1;  stays 0.1
    # the third image: pixel 0 from 0.98 upward ends on 1 ([0,1] only after the plain step)
    want = torch.tensor([[0.42, 0.58], [0.6, 0.4], [1.0, 0.4]])
    assert torch.allclose(seen[-1], want, atol=1e-6)   # the loss's forward is on x_adv only
    # CE of z = W x' for two classes is log(1 + exp(-(z_y - z_other))), z_y - z_other = 2 (x'_y - x'_other):
    # 0.865893 (= log(1 + e^0.32)), 0.913015 (= log(1 + e^0.4)), 1.463282 (= log(1 + e^1.2)); weighted mean
    assert float(out.loss.detach()) == pytest.approx((0.5 * 0.865893 + 1.5 * 0.913015 + 1.5 * 1.463282) / 3, abs=1e-6)
    assert out.clean_logits is None and torch.equal(out.adv_logits, model(want))
    assert obj.describe()["attack"]["loss"] == "ce (double step)" and obj.describe()["dafa"]["base"] == "pgd"


def test_dafa_pgd_base_steps_twice_in_the_warmup_and_keeps_its_probabilities():
    model, obj = signed_model(), dafa_pgd(attack_steps=1)
    x, y = torch.tensor([[0.5, 0.5]]), torch.tensor([0])
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    out = obj.step(model, x, y, 2)   # the warm-up epoch: w = 1, so one iteration moves 0.03 + 0.03
    assert torch.allclose(seen[-1], torch.tensor([[0.44, 0.56]]), atol=1e-6)
    assert torch.allclose(obj.tally.sums[0].float(), torch.softmax(out.adv_logits, 1)[0])   # P from x_adv
    with pytest.raises(ConfigError, match="dafa_base='madry'"):
        RunConfig(method="dafa", dafa_base="madry")


# ---------------------------------------------------------------- training: smoke run and exact resume
@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [("cfa", {"cfa_begin": 1}), ("cfa", {"cfa_begin": 1, "cfa_base": "at"}),
                                           ("dafa", {"dafa_warmup": 1}),
                                           ("dafa", {"dafa_warmup": 1, "dafa_base": "pgd"})])
def test_smoke_run_and_resume_is_bit_identical(tmp_path, method, extra, smoke_fit):
    """Three epochs whose last two are calibrated from the one before; a run stopped after epoch 1 and resumed
    (the epoch's open tally in last.pt) ends with the same weights and losses, bit for bit."""
    from conftest import stopped_and_resumed

    from taetlib.data import load_lt
    cfg, full, _, _ = smoke_fit(tmp_path / "full", method=method, epochs=3, **extra)
    resumed = stopped_and_resumed(cfg, load_lt(cfg), tmp_path / "resumed")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
