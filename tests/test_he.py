"""HE: hand-computed values of docs/methods.md §5, the official HELoss, the attack's scaled CE."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taetlib.attacks import pgd
from taetlib.config import RunConfig
from taetlib.errors import ConfigError
from taetlib.methods import build_objective, model_head
from taetlib.models import classifier, create_model


def he(**kw):
    return build_objective(RunConfig(method="he", **kw), [100, 50, 10], 0.1)


def official_he_loss(logits, labels, s, cm):
    """AT_HE's HELoss, read literally: s (z_y - cm) against the other logits, one row at a time."""
    num = s * (logits[torch.arange(len(labels)), labels] - cm)
    others = torch.stack([torch.cat((logits[i, :t], logits[i, t + 1:])) for i, t in enumerate(labels.tolist())])
    return -torch.mean(num - torch.log(torch.exp(num) + torch.exp(s * others).sum(1)))


def one_point_model(z):
    lin = nn.Linear(1, len(z), bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(z)[:, None])
    return nn.Sequential(nn.Identity(), lin)


def test_he_loss_hand_values():
    obj = he(eps=0.0, attack_steps=1, random_start="none")
    z = torch.tensor([[0.5, 0.2, -0.1]])
    out = obj.step(one_point_model([0.5, 0.2, -0.1]), torch.ones(1, 1), torch.tensor([0]), epoch=1)
    assert abs(float(out.loss.detach()) - 0.326563) < 1e-6
    assert abs(float(obj.attack_loss(z, torch.tensor([0]))) - 0.050946) < 1e-6


def test_he_loss_is_the_official_heloss():
    g = torch.Generator().manual_seed(0)
    obj = he(eps=0.0, attack_steps=1, random_start="none", he_s=15.0, he_m=0.3)
    for trial in range(3):
        z = torch.rand(6, 3, generator=g, dtype=torch.float64) * 2 - 1
        y = torch.randint(0, 3, (6,), generator=g)
        want = official_he_loss(z, y, 15.0, 0.3)
        got = F.cross_entropy(obj.s * (z - obj.m * F.one_hot(y, 3)), y)
        assert torch.allclose(got, want, atol=1e-12), trial
        assert torch.allclose(obj.attack_loss(z, y).mean(), official_he_loss(z, y, 15.0, 0.0), atol=1e-12)


def test_attack_maximises_the_scaled_ce_and_training_keeps_w_on_the_sphere():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, 1, head="he_norm")
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 3, (16,))
    obj = he(random_start="none", attack_steps=3)
    out = obj.step(copy.deepcopy(model), x, y, epoch=1)
    kw = dict(eps=0.1, step=0.025, steps=3, random_start="none")
    want = pgd(copy.deepcopy(model), x, y, loss=lambda z, t: F.cross_entropy(10 * z, t, reduction="none"), **kw)
    assert not torch.equal(want, pgd(copy.deepcopy(model), x, y, loss="ce", **kw))   # the check can tell them apart
    assert torch.allclose(out.adv_logits, copy.deepcopy(model).train()(want), atol=1e-6)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        out = obj.step(model, x, y, epoch=1)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(model(x).abs().max()) <= 1 + 1e-6
    assert torch.allclose(classifier(model).weight.norm(dim=1), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("changes, field", [(dict(he_s=0.0), "he_s"), (dict(he_m=-0.1), "he_m"),
                                            (dict(head="cosplus"), "head")])
def test_bad_settings_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"^{field}="):
        RunConfig(method="he", **changes)


def test_head_and_robustlt():
    assert model_head(RunConfig(method="he")) == "he_norm" and model_head(RunConfig(method="he", head="he_norm"))
    obj = he(robustlt=True)
    assert obj.name == "robustlt(he)" and obj.attack.class_scale is not None


def test_he_trains_on_synthetic_data(tmp_path, smoke_fit):
    cfg, result, loaded, x = smoke_fit(tmp_path, method="he", robustlt=True)
    assert torch.allclose(classifier(loaded).weight.norm(dim=1), torch.ones(10), atol=1e-5)
    with torch.no_grad():
        assert float(loaded(x).abs().max()) <= 1 + 1e-6
