"""GAIRAT: hand-computed weights of docs/methods.md §4, the loss before and after begin_epoch, the lambda
schedules."""
import copy

import pytest
import torch
import torch.nn.functional as F

from taetlib.config import RunConfig
from taetlib.errors import ConfigError
from taetlib.methods import build_objective
from taetlib.methods.gairat import begin_epoch, gair_weights, lambda_at
from taetlib.models import create_model


def official_gair(num_steps, kappa, lam, func="Tanh"):
    """GAIR.py's three branches, read literally."""
    if func == "Tanh":
        reweight = ((lam + (int(num_steps / 2) - kappa) * 5 / (int(num_steps / 2))).tanh() + 1) / 2
    elif func == "Sigmoid":
        reweight = (lam + (int(num_steps / 2) - kappa) * 5 / (int(num_steps / 2))).sigmoid()
    elif func == "Discrete":
        reweight = ((num_steps + 1) - kappa) / (num_steps + 1)
    return reweight * len(reweight) / reweight.sum()


def test_gair_weights_hand_values():
    got = gair_weights(torch.tensor([0, 5, 10]), 10, -1.0)
    assert torch.allclose(got, torch.tensor([2.680369, 0.319615, 1.6e-5]), atol=1e-6)
    got = gair_weights(torch.tensor([0, 3, 7, 10]), 10, -1.0)
    assert torch.allclose(got, torch.tensor([2.123625, 1.871110, 0.005253, 1.3e-5]), atol=1e-6)
    for steps, lam in ((10, -1.0), (3, 0.5), (5, -2.0)):
        kappa = torch.arange(steps + 1)
        assert torch.allclose(gair_weights(kappa, steps, lam), official_gair(steps, kappa.float(), lam), atol=1e-6)


def test_sigmoid_and_discrete_weights_hand_values():
    # K = 10, lambda = -1: a = 4 - kappa -> sigmoid(4, -1, -6); discrete (11 - kappa) / 11 = 1, 6/11, 1/11
    kappa = torch.tensor([0, 5, 10])
    got = gair_weights(kappa, 10, -1.0, "sigmoid")
    assert torch.allclose(got, torch.tensor([2.350388, 0.643694, 0.005918]), atol=1e-6)
    assert torch.allclose(gair_weights(kappa, 10, -1.0, "discrete"), torch.tensor([11 / 6, 1.0, 1 / 6]), atol=1e-6)
    assert torch.equal(gair_weights(kappa, 10, 3.0, "discrete"), gair_weights(kappa, 10, -1.0, "discrete"))
    got = gair_weights(torch.tensor([0, 3, 7, 10]), 10, -1.0, "sigmoid")
    assert torch.allclose(got, torch.tensor([2.228089, 1.658697, 0.107604, 0.005610]), atol=1e-6)
    for fn, official in (("sigmoid", "Sigmoid"), ("discrete", "Discrete")):
        for steps, lam in ((10, -1.0), (3, 0.5), (5, -2.0)):
            kappa = torch.arange(steps + 1)
            want = official_gair(steps, kappa.float(), lam, official)
            assert torch.allclose(gair_weights(kappa, steps, lam, fn), want, atol=1e-6), (fn, steps, lam)


def test_weight_function_reaches_the_loss_and_bad_names_are_refused():
    with pytest.raises(ConfigError, match="gairat_weight='Tanh'"):
        RunConfig(method="gairat", gairat_weight="Tanh")
    assert gairat(gairat_weight="sigmoid").weight == "sigmoid"


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
    kappa = obj.attack(copy.deepcopy(model), x, y, 3).kappa
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
    assert begin_epoch(RunConfig(method="gairat", epochs=120).hparams, 120) == 60
    assert begin_epoch(RunConfig(method="gairat", epochs=100).hparams, 100) == 50
    assert begin_epoch(RunConfig(method="gairat", epochs=100, gairat_begin_epoch=60).hparams, 100) == 60
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


# ---------------------------------------------------------------- the lambda schedules (GAIRAT.py adjust_Lambda)
def official_adjust_lambda(epoch, epochs, schedule, lam, lam_max=float("inf")):
    """adjust_Lambda's branch for epochs >= 110 (the WRN run), read literally, elif order included."""
    out = lam_max
    if schedule == "linear":
        if epoch >= 60:
            out = lam_max - (epoch / epochs) * (lam_max - lam)
    elif schedule == "piecewise":
        if epoch >= 60:
            out = lam
        elif epoch >= 90:
            out = lam - 1.0
        elif epoch >= 110:
            out = lam - 1.5
    elif schedule == "fixed":
        if epoch >= 60:
            out = lam
    return out


def test_lambda_schedules_hand_values():
    # linear from lambda_max 0 to lambda -1 over T = 120: 0 - (t / 120) (0 + 1)
    assert [lambda_at("linear", t, 120, -1.0, 0.0) for t in (60, 90, 120)] == [-0.5, -0.75, -1.0]
    assert [lambda_at("fixed", t, 120, -1.0) for t in (60, 120)] == [-1.0, -1.0]
    assert [lambda_at("piecewise", t, 120, -1.0) for t in (60, 95, 115)] == [-1.0, -1.0, -1.0]
    # the drops as written: -1 from 90 of 120 (3/4), -1.5 from 110 (11/12)
    stepped = [lambda_at("piecewise_stepped", t, 120, -1.0) for t in (60, 89, 90, 109, 110, 120)]
    assert stepped == [-1.0, -1.0, -2.0, -2.0, -2.5, -2.5]
    assert lambda_at("piecewise_stepped", 75, 100, 0.5) == -0.5   # 3/4 of 100


@pytest.mark.parametrize("schedule, lam_max", [("fixed", float("inf")), ("piecewise", float("inf")),
                                               ("linear", 0.0), ("linear", 2.0)])
def test_lambda_schedules_match_the_official_function_from_its_start(schedule, lam_max):
    """From epoch 60 of 120, the official start and begin_epoch's default, every epoch's lambda is the code's."""
    args = RunConfig(method="gairat", epochs=120, gairat_lambda_schedule=schedule,
                     gairat_lambda_max=None if lam_max == float("inf") else lam_max).hparams
    assert begin_epoch(args, 120) == 60
    for t in range(60, 121):
        want = official_adjust_lambda(t, 120, schedule, -1.0, lam_max)
        assert lambda_at(args.lambda_schedule, t, 120, args.lam, args.lambda_max) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "piecewise_stepped"])
def test_the_scheduled_lambda_reaches_the_loss(schedule):
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    obj = gairat(random_start="none", attack_steps=4, gairat_begin_epoch=2, gairat_lambda_schedule=schedule,
                 gairat_lambda_max=1.0, gairat_lambda=-1.0, gairat_weight="sigmoid")   # tanh saturates here
    # epoch 8 of 10: linear 1 - (8 / 10) (1 + 1); stepped: -1 - 1 from round(7.5) = 8, -1.5 only from round(9.17) = 9
    lam = {"linear": 1.0 - 0.8 * 2.0, "piecewise_stepped": -2.0}[schedule]
    out = obj.step(copy.deepcopy(model), x, y, 8)
    kappa = obj.attack(copy.deepcopy(model), x, y, 8).kappa
    ce = F.cross_entropy(out.adv_logits, y, reduction="none")
    assert float(out.parts["lambda"]) == pytest.approx(lam)
    assert torch.allclose(out.loss, (gair_weights(kappa, 4, lam, "sigmoid") * ce).mean(), atol=1e-6)
    fixed = (gair_weights(kappa, 4, -1.0, "sigmoid") * ce).mean()
    assert abs(float((out.loss - fixed).detach())) > 1e-4   # the fixed lambda gives another loss


def test_lambda_schedule_settings_are_checked_and_part_of_the_plan():
    from taetlib.resume import Refused, check_resume
    with pytest.raises(ConfigError, match="^gairat_lambda_schedule='linear': needs a finite lambda_max"):
        RunConfig(method="gairat", gairat_lambda_schedule="linear")
    with pytest.raises(ConfigError, match="^gairat_lambda_schedule='cosine'"):
        RunConfig(method="gairat", gairat_lambda_schedule="cosine")
    assert RunConfig(method="gairat").hparams.lambda_schedule == "fixed"   # the official default
    # linear's lambda_t depends on t / T: extending 4 -> 8 epochs moves the trained epochs' lambda (begin 2)
    old = RunConfig(method="gairat", epochs=4, lr_milestones=[1.0], gairat_begin_epoch=2,
                    gairat_lambda_schedule="linear", gairat_lambda_max=0.0)
    new = old.replace(epochs=8, lr_milestones=[0.5])
    with pytest.raises(Refused, match="gair_lambda"):
        check_resume({"cfg": old.to_dict(), "epoch": 3}, new, "last.pt")
    fixed = old.replace(gairat_lambda_schedule="fixed")
    assert check_resume({"cfg": fixed.to_dict(), "epoch": 3}, fixed.replace(epochs=8, lr_milestones=[0.5]),
                        "last.pt")["plan"] == "unchanged"
