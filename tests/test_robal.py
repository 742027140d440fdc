"""RoBal: hand-computed values of docs/methods.md §1, its plain-CE attack, RoBal-N's evaluation."""
import copy

import pytest
import torch
from torch import nn

from taetlib.attacks import pgd
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.methods import build_objective, model_head
from taetlib.methods.robal import margins_and_bias, taus
from taetlib.models import classifier, create_model

N3 = [100, 10, 1]


def robal(**kw):
    return build_objective(RunConfig(method="robal", **kw), N3, 0.1)


def test_margins_and_bias_hand_values():
    m, b = margins_and_bias(N3, s=10, m=0.1, tau_m=0.3, tau_b=1.5)
    assert torch.allclose(m, torch.tensor([0.238155, 0.169078, 0.100000]), atol=1e-6)
    assert torch.allclose(b, torch.tensor([-0.156540, -3.610418, -7.064295]), atol=1e-6)


def test_margin_ce_hand_values():
    obj = robal()
    z = torch.tensor([[0.5, 0.2, -0.1]])
    assert abs(float(obj.margin_ce(z, torch.tensor([0]))) - 0.016921) < 1e-6
    assert abs(float(obj.margin_ce(z, torch.tensor([2]))) - 13.909329) < 1e-5


def two_point_model(z_clean, z_adv):
    """x = [1, 0] -> z_clean, x = [0, 1] -> z_adv."""
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([z_clean, z_adv]).T)
    return nn.Sequential(nn.Identity(), lin)


def test_total_loss_hand_value():
    obj = robal()
    obj.attack = lambda model, x, y, epoch, **kw: (torch.tensor([[0.0, 1.0]]), None)
    out = obj.step(two_point_model([0.5, 0.2, -0.1], [0.1, 0.4, -0.2]), torch.tensor([[1.0, 0.0]]),
                   torch.tensor([0]), epoch=1)
    assert abs(float(out.parts["kl"]) - 0.03395943) < 1e-7
    assert abs(float(out.loss.detach()) - 2.267328) < 1e-5
    # the pair above happens to have KL(p||q) = KL(q||p); the official form on another pair fixes the direction
    z_nat, z_adv = [2.0, 0.0, -1.0], [0.0, 1.0, 0.5]
    out = obj.step(two_point_model(z_nat, z_adv), torch.tensor([[1.0, 0.0]]), torch.tensor([0]), epoch=1)
    p_nat, p_adv = torch.softmax(torch.tensor([z_nat]), 1), torch.softmax(torch.tensor([z_adv]), 1)
    official = nn.KLDivLoss(reduction="sum")(torch.log(p_adv + 1e-12), p_nat) / 1
    assert abs(float(out.parts["kl"]) - float(official)) < 1e-6


def test_attack_is_plain_ce_on_the_raw_cosine_logits():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, 1, head="cosplus")
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 3, (16,))
    obj = robal(random_start="none", attack_steps=3)
    assert obj.attack.loss == "ce"
    out = obj.step(copy.deepcopy(model), x, y, epoch=1)
    want = pgd(copy.deepcopy(model), x, y, eps=0.1, step=0.025, steps=3, random_start="none")
    margin = lambda z, t: nn.functional.cross_entropy(obj.s * z + obj.bias, t, reduction="none")  # noqa: E731
    other = pgd(copy.deepcopy(model), x, y, eps=0.1, step=0.025, steps=3, random_start="none", loss=margin)
    assert not torch.equal(want, other)   # the check below can tell the two attacks apart
    assert torch.allclose(out.adv_logits, copy.deepcopy(model).train()(want), atol=1e-6)


def test_variants_and_their_official_taus():
    assert taus(RunConfig(method="robal")) == (0.3, 1.5)
    assert taus(RunConfig(method="robal", robal_variant="N")) == (0.0, 1.2)
    assert taus(RunConfig(method="robal", robal_variant="N", robal_tau_b=2.0)) == (0.0, 2.0)
    m, b = robal(robal_variant="N").margins, robal(robal_variant="N").bias
    assert torch.allclose(m, torch.full((3,), 0.1)) and torch.allclose(b, margins_and_bias(N3, 10, 0.1, 0, 1.2)[1])


@pytest.mark.parametrize("changes, field", [
    (dict(robal_variant="X"), "robal_variant"), (dict(robal_s=0.0), "robal_s"), (dict(robal_beta=-1.0), "robal_beta"),
    (dict(robal_tau_m=-0.1), "robal_tau_m"), (dict(head="fc"), "head"),
])
def test_bad_settings_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"^{field}="):
        RunConfig(method="robal", **changes)


def test_head_comes_with_the_method_and_robustlt_composes():
    assert model_head(RunConfig(method="robal")) == "cosplus" and model_head(RunConfig(method="pgd_at")) == "fc"
    obj = robal(robustlt=True)
    assert obj.name == "robustlt(robal)" and obj.attack.class_scale is not None and obj.attack.steps == 10


def test_robal_r_trains_and_evaluates_unchanged(tmp_path, smoke_fit):
    cfg, result, loaded, x = smoke_fit(tmp_path, method="robal", attack_steps=2, random_start="uniform_pos",
                                       robustlt=True)
    assert {"loss_margin", "loss_kl"} <= set(result.history[-1])
    assert classifier(loaded).tau_p == 0.0


def test_robal_n_is_evaluated_through_posthoc_logits(tmp_path, smoke_fit):
    cfg, result, loaded, x = smoke_fit(tmp_path, method="robal", robal_variant="N", attack_steps=2)
    head = classifier(result.model)
    counts = torch.tensor(load_lt(cfg).train_counts, dtype=torch.float32)
    assert torch.allclose(head.log_prior, (counts / counts.sum()).log())
    with torch.no_grad():
        want = 10 * result.model.eval()(x) - 0.1 * head.log_prior
        assert torch.allclose(loaded(x), want, atol=1e-5)
