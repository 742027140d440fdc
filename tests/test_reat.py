"""REAT: hand-computed values of docs/methods.md §2, the official loop form of TAIL, the RBL no-op."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taetlib.attacks import pgd
from taetlib.config import RunConfig
from taetlib.errors import ConfigError
from taetlib.methods import build_objective
from taetlib.methods.reat import rbl_weights, tail_classes, tail_term
from taetlib.models import create_model, features_and_logits

COUNTS4 = [40, 20, 10, 5]
Z = torch.tensor([[2, .5, .1, -1], [.3, .2, .1, .4], [1, 0, 0, 0]])
F3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Y3 = torch.tensor([3, 3, 0])


def linear_model():
    """x = the features themselves; a Linear whose outputs at F3 are exactly Z (bias Z1 + Z2 - Z3)."""
    lin = nn.Linear(2, 4)
    with torch.no_grad():
        b = Z[0] + Z[1] - Z[2]
        lin.bias.copy_(b)
        lin.weight.copy_(torch.stack([Z[0] - b, Z[1] - b], 1))
    return nn.Sequential(nn.Identity(), lin)


def test_tail_classes_index_rule_and_rarest():
    assert tail_classes([1] * 10) == [7, 8, 9]
    assert tail_classes([1] * 100) == list(range(67, 100))
    assert tail_classes(COUNTS4) == [3]
    lt = [500, 300, 180, 110, 65, 40, 24, 15, 9, 5]
    assert tail_classes(lt, "rarest") == tail_classes(lt, "index")   # the LT profile: the same classes
    derma = [228, 359, 769, 80, 779, 4693, 99]                         # natural imbalance: not by index
    assert tail_classes(derma, "index") == [5, 6] and tail_classes(derma, "rarest") == [3, 6]


def test_tail_term_hand_values():
    n = torch.tensor(COUNTS4, dtype=torch.float32)
    w = (n.sum() / n).sqrt()
    assert torch.allclose(w, torch.tensor([1.369306, 1.936492, 2.738613, 3.872983]), atol=1e-6)
    tail = torch.tensor([False, False, False, True])
    assert abs(float(tail_term(F3, Y3, w, tail)) - (-0.326315)) < 1e-6


def test_reat_loss_hand_values():
    cfg = RunConfig(method="reat", eps=0.0, attack_steps=1, random_start="none")
    obj = build_objective(cfg, COUNTS4, 0.1)
    out = obj.step(linear_model(), F3, Y3, epoch=1)
    assert torch.allclose(out.adv_logits, Z, atol=1e-6)
    assert abs(float(out.parts["bsl"]) - 2.689116) < 1e-6
    assert abs(float(out.parts["tail"]) - (-0.326315)) < 1e-6
    assert abs(float(out.loss.detach()) - 2.362801) < 1e-6


def official_tail(f, y, counts):
    """The official loop, read literally: KLDivLoss 'mean' (the legacy size_average='none' flag) per tail
    anchor, times the anchor's sign x weight vector, summed, then .mean() / number of anchors."""
    kl = nn.KLDivLoss(reduction="mean")
    n = torch.tensor(counts, dtype=f.dtype)
    w = torch.sqrt(1.0 / (n / n.sum()))
    tails = tail_classes(counts)
    total, count = 0.0, 0
    for i in range(len(y)):
        if int(y[i]) in tails:
            sign = torch.tensor([-1.0 if y[i] == y[j] else 1.0 for j in range(len(y))], dtype=f.dtype)
            W = torch.stack([w[y[i]] + w[y[j]] for j in range(len(y))])
            anchor = F.softmax(f[i].detach().view(1, -1).tile(len(y), 1), 1)
            total = total + kl(F.log_softmax(f, 1), anchor) * sign * W
            count += 1
    return total.mean() / count if count else torch.zeros(())


def test_tail_term_equals_the_official_loop_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    counts = [500, 300, 180, 110, 65, 40, 24, 15, 9, 5]
    n = torch.tensor(counts, dtype=torch.float64)
    w, tail = (n.sum() / n).sqrt(), torch.zeros(10, dtype=torch.bool)
    tail[tail_classes(counts)] = True
    for trial in range(5):
        f = torch.randn(12, 6, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.randint(0, 10, (12,), generator=g)
        y[0] = 8   # at least one tail anchor
        got, want = tail_term(f, y, w, tail), official_tail(f, y, counts)
        (g_got,), (g_want,) = torch.autograd.grad(got, f), torch.autograd.grad(want, f)
        assert torch.allclose(got, want, atol=1e-12), trial
        assert torch.allclose(g_got, g_want, atol=1e-12), trial
    assert float(tail_term(f, torch.zeros(12, dtype=torch.long), w, tail)) == 0.0   # no tail anchor: 0, not NaN


def test_rbl_weights_hand_values():
    got = rbl_weights(COUNTS4, COUNTS4)
    assert torch.allclose(got, torch.tensor([0.276381, 0.548673, 1.080821, 2.094125], dtype=torch.float64), atol=1e-6)
    assert math.isclose(float(got.sum()), 4, rel_tol=1e-9)


def test_rbl_attack_gives_the_plain_ce_iterates_bit_for_bit():
    """The official attack maximises RBL (weighted-mean CE, positive weights) in eval mode: per sample a
    positive factor on the gradient, so sign-PGD takes the same steps as with plain CE."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1).eval()
    counts = [500, 300, 180, 110, 65, 40, 24, 15, 9, 5]
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    kw = dict(eps=0.1, step=0.025, steps=4, random_start="none")
    for trial in range(2):
        a = torch.randint(1, 600, (10,), generator=torch.Generator().manual_seed(trial)).tolist()
        w = rbl_weights(counts, a).float()
        def rbl(z, t, w=w):
            return w[t] * F.cross_entropy(z, t, reduction="none") / w[t].sum()

        assert torch.equal(pgd(model, x, y, loss=rbl, **kw), pgd(model, x, y, loss="ce", **kw)), trial


def test_reat_attack_is_plain_ce_and_training_uses_penultimate_features():
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1)
    x = torch.rand(16, 1, 28, 28)
    feats, logits = features_and_logits(model, x)
    assert feats.shape == (16, 256) and torch.allclose(logits, model.net[-1](feats))
    obj = build_objective(RunConfig(method="reat", random_start="none", attack_steps=2), [100] * 10, 0.1)
    assert obj.attack.loss == "ce" and obj.tail.nonzero().flatten().tolist() == [7, 8, 9]


def test_reat_config_is_checked():
    with pytest.raises(ConfigError, match="reat_tail='tail'"):
        RunConfig(method="reat", reat_tail="tail")
    assert RunConfig(method="reat", reat_tail="rarest").reat_tail == "rarest"


def test_reat_composes_with_robustlt():
    obj = build_objective(RunConfig(method="reat", robustlt=True), [100, 50, 20, 10], 0.1)
    assert obj.name == "robustlt(reat)" and obj.attack.class_scale is not None and obj.tail.any()


def test_reat_trains_on_synthetic_data(tmp_path, smoke_fit):
    _, result, _, _ = smoke_fit(tmp_path, method="reat", random_start="uniform", robustlt=True)
    assert {"loss_bsl", "loss_tail"} <= set(result.history[-1])
