"""GAIRAT: hand-computed weights of docs/methods.md §4, the loss before and after begin_epoch."""
import copy

import pytest
import torch
import torch.nn.functional as F

from taetlib.config import RunConfig
from taetlib.errors import ConfigError
from taetlib.methods import build_objective
from taetlib.methods.gairat import begin_epoch, gair_weights
from taetlib.models import create_model


def official_gair(num_steps, kappa, lam):
    """GAIR.py's Tanh branch, read literally."""
    reweight = ((lam + (int(num_steps / 2) - kappa) * 5 / (int(num_steps / 2))).tanh() + 1) / 2
    return reweight * len(reweight) / reweight.sum()


def test_gair_weights_hand_values():
    got = gair_weights(torch.tensor([0, 5, 10]), 10, -1.0)
    assert torch.allclose(got, torch.tensor([2.680369, 0.319615, 1.6e-5]), atol=1e-6)
    got = gair_weights(torch.tensor([0, 3, 7, 10]), 10, -1.0)
    assert torch.allclose(got, torch.tensor([2.123625, 1.871110, 0.005253, 1.3e-5]), atol=1e-6)
    for steps, lam in ((10, -1.0), (3, 0.5), (5, -2.0)):
        kappa = torch.arange(steps + 1)
        assert torch.allclose(gair_weights(kappa, steps, lam), official_gair(steps, kappa.float(), lam), atol=1e-6)


def gairat(**kw):
    return build_objective(RunConfig(method="gairat", epochs=10, **kw), [100, 50, 20, 10, 5, 5, 5, 5, 5, 5], 0.1)


def test_loss_is_plain_pgd_at_before_begin_epoch_and_weighted_from_it():
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    obj = gairat(random_start="none", attack_steps=4, gairat_begin_epoch=3)
    pgd_at = build_objective(RunConfig(method="pgd_at", random_start="none", attack_steps=4), [1] * 10, 0.1)
    before, plain = obj.step(copy.deepcopy(model), x, y, 2), pgd_at.step(copy.deepcopy(model), x, y, 2)
    assert torch.allclose(before.loss, plain.loss, atol=1e-7)
    after = obj.step(copy.deepcopy(model), x, y, 3)
    z = after.adv_logits
    ce = F.cross_entropy(z, y, reduction="none")
    _, _, kappa = obj.attack(copy.deepcopy(model), x, y, 3, kappa=True)
    assert 0 < float(kappa.float().std())   # the samples differ in kappa: the weights are not all 1
    assert torch.allclose(after.loss, (gair_weights(kappa, 4, -1.0) * ce).mean(), atol=1e-6)
    assert not torch.allclose(after.loss, plain.loss, atol=1e-3)
    assert float(after.parts["kappa"]) == float(kappa.float().mean())


def test_eps_zero_gives_kappa_k_for_correct_samples():
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    out = gairat(eps=0.0, random_start="none", attack_steps=6).step(copy.deepcopy(model), x, y, 10)
    correct = (copy.deepcopy(model).eval()(x).argmax(1) == y).float()
    assert abs(float(out.parts["kappa"]) - 6 * float(correct.mean())) < 1e-6


def test_begin_epoch_default_and_robustlt():
    assert begin_epoch(RunConfig(method="gairat", epochs=120)) == 60
    assert begin_epoch(RunConfig(method="gairat", epochs=100)) == 50
    assert begin_epoch(RunConfig(method="gairat", epochs=100, gairat_begin_epoch=60)) == 60
    obj = gairat(robustlt=True)
    assert obj.name == "robustlt(gairat)" and obj.attack.class_scale is not None


@pytest.mark.parametrize("changes, field", [
    (dict(gairat_begin_epoch=0), "gairat_begin_epoch"), (dict(gairat_begin_epoch=11), "gairat_begin_epoch"),
    (dict(attack_steps=1), "attack_steps"), (dict(gairat_lambda=float("nan")), "gairat_lambda"),
])
def test_bad_settings_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"^{field}="):
        RunConfig(method="gairat", epochs=10, **changes)


def test_gairat_trains_on_synthetic_data(tmp_path, smoke_fit):
    _, result, _, _ = smoke_fit(tmp_path, method="gairat", random_start="uniform", gairat_begin_epoch=2, robustlt=True)
    assert {"loss_ce", "loss_kappa"} <= set(result.history[-1])
    assert 0 <= result.history[-1]["loss_kappa"] <= 2
