import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taetlib.attacks import bn_eval, cw_margin, fgsm, pgd, pgd_any
from taetlib.models import create_model

STARTS = ("normal", "uniform", "none")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1)
    x = torch.rand(16, 1, 28, 28)
    x[:, :, :4] = 0.0   # pixels on the [0,1] border: the clamp must hold there too
    x[:, :, -4:] = 1.0
    y = torch.randint(0, 10, (16,))
    return model, x, y


def _ce(model, x, y):
    with torch.no_grad(), bn_eval(model):
        return F.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("loss", ("ce", "cw"))
@pytest.mark.parametrize("per_sample", (False, True))
def test_pgd_stays_in_ball_and_box(setup, start, loss, per_sample):
    model, x, y = setup
    eps = torch.linspace(0, 0.1, len(x)) if per_sample else 0.1
    x_adv = pgd(model, x, y, eps=eps, step=eps / 2 if per_sample else 0.05, steps=3, loss=loss,
                random_start=start)
    bound = eps.view(-1, 1, 1, 1) if per_sample else eps
    assert ((x_adv - x).abs() <= bound + 1e-7).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


def test_per_sample_eps_each_sample_uses_its_own_radius(setup):
    model, x, y = setup
    eps = torch.linspace(0, 0.1, len(x))
    x_adv = pgd(model, x, y, eps=eps, step=eps, steps=2, random_start="none")
    reach = (x_adv - x).abs().flatten(1).amax(1)
    assert reach[0] == 0
    # sign steps of size eps_i end on the ball's surface somewhere inside the interior pixels
    assert torch.allclose(reach[1:], eps[1:], atol=1e-6)


@pytest.mark.parametrize("start", STARTS)
def test_zero_eps_returns_x_exactly(setup, start):
    model, x, y = setup
    assert torch.equal(pgd(model, x, y, eps=0.0, step=0.0, steps=2, random_start=start), x)
    zeros = torch.zeros(len(x))
    assert torch.equal(pgd(model, x, y, eps=zeros, step=zeros, steps=2, random_start=start), x)


@pytest.mark.parametrize("start", STARTS)
def test_pgd_increases_the_loss(setup, start):
    model, x, y = setup
    x_adv = pgd(model, x, y, eps=0.1, step=0.025, steps=5, random_start=start)
    assert _ce(model, x_adv, y).mean() > _ce(model, x, y).mean()


def test_cw_lowers_the_margin_and_callable_loss_is_maximised(setup):
    model, x, y = setup
    with torch.no_grad(), bn_eval(model):
        def margin(z):   # z_y - max_other, clipped at 0
            return -cw_margin(model(z), y)

        x_cw = pgd(model, x, y, eps=0.1, step=0.025, steps=5, loss="cw")
        assert margin(x_cw).sum() < margin(x).sum()
    # a callable loss is maximised: minus CE drives the CE down
    x_min = pgd(model, x, y, eps=0.1, step=0.025, steps=5, loss=lambda z, t: -F.cross_entropy(z, t, reduction="none"))
    assert _ce(model, x_min, y).mean() < _ce(model, x, y).mean()


def test_cw_margin_formula():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    y = torch.tensor([0, 1])
    assert torch.equal(cw_margin(logits, y), torch.tensor([-2.0, 0.0]))  # second is already wrong


def test_bn_eval_during_attack_and_modes_restored(setup):
    _, x, y = setup
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 26 * 26, 10))
    model.train()
    model[2].eval()   # a mixed state must come back as it was
    stats = model[1].running_mean.clone(), model[1].num_batches_tracked.clone()
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(m.training))
    pgd(model, x, y, eps=0.1, step=0.05, steps=2)
    assert seen == [False, False]
    assert torch.equal(model[1].running_mean, stats[0]) and torch.equal(model[1].num_batches_tracked, stats[1])
    assert [m.training for m in model] == [True, True, False, True, True]
    assert all(p.grad is None for p in model.parameters())   # only the input gradient is taken


def test_fgsm_is_one_signed_step(setup):
    model, x, y = setup
    xr = x.clone().requires_grad_(True)
    with bn_eval(model):
        (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    assert torch.equal(fgsm(model, x, y, eps=0.03), (x + 0.03 * g.sign()).clamp(0, 1))


def test_return_logits_are_the_start_point_logits(setup):
    model, x, y = setup
    _, logits = pgd(model, x, y, eps=0.1, step=0.05, steps=2, random_start="none", return_logits=True)
    with torch.no_grad(), bn_eval(model):
        assert torch.allclose(logits, model(x), atol=1e-6)
    assert pgd(model, x, y, eps=0.1, step=0.05, steps=0, return_logits=True)[1] is None


def test_bad_arguments_are_named(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="loss='hinge'"):
        pgd(model, x, y, eps=0.1, step=0.05, steps=1, loss="hinge")
    with pytest.raises(ValueError, match="random_start='gauss'"):
        pgd(model, x, y, eps=0.1, step=0.05, steps=1, random_start="gauss")


# ---------------------------------------------------------------- strength against a known answer
def linear_problem(n=64, eps=None):
    """A 2-class linear model on 8x8 images: the loss depends on x only through the margin
    m(x) = d . x + c (d = w_y - w_other), so the L-inf worst case in B(x, eps) & [0,1] is analytic:
    x* = clamp(x - eps * sign(d), 0, 1), coordinate by coordinate."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(2, 64, generator=g) * 0.3)
        model[1].bias.zero_()
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    xf = x.float() / 255
    with torch.no_grad():
        y = model(xf).argmax(1)   # clean accuracy 1: what the attack takes away is all it does
        d = (model[1].weight[y] - model[1].weight[1 - y]).view(n, 1, 8, 8)
        if eps is None:   # half the points flip at this radius, half survive (ignoring the [0,1] clamp)
            z = model(xf)
            margin = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, (1 - y)[:, None]).squeeze(1)
            eps = float((margin / d.flatten(1).abs().sum(1)).median())
    x_star = (xf - eps * d.sign()).clamp(0, 1)
    return model, x, xf, y, eps, x_star


def test_fgsm_and_pgd20_reach_the_analytic_optimum_of_a_linear_model():
    from taetlib import attack_suite
    model, x, xf, y, eps, x_star = linear_problem()
    params = attack_suite.resolve_attacks(["fgsm", "pgd20"], None, eps, 2)   # the evaluation suite's own settings
    assert params["pgd20"]["step"] == eps / 8 and params["pgd20"]["random_start"] == "uniform"
    with torch.no_grad():
        best_loss = F.cross_entropy(model(x_star), y, reduction="none")
        best_pred = model(x_star).argmax(1).numpy()
    assert 0.2 < (best_pred == y.numpy()).mean() < 0.8   # the radius matters: some points flip, some do not
    torch.manual_seed(0)
    x_pgd = pgd(model, xf, y, **{k: params["pgd20"][k] for k in ("eps", "step", "steps", "loss", "random_start")})
    for x_adv in (fgsm(model, xf, y, eps=eps), x_pgd):
        assert torch.allclose(x_adv, x_star, atol=1e-6)
        with torch.no_grad():
            assert torch.allclose(F.cross_entropy(model(x_adv), y, reduction="none"), best_loss, atol=1e-5)
    for name in ("fgsm", "pgd20"):   # and the predictions evaluate() counts are the optimum's
        assert (attack_suite.run_attack(name, model, x, y, params[name]) == best_pred).all(), name


@pytest.mark.parametrize("per_sample", (False, True))
def test_any_iterate_follows_the_pgd_iterates_and_drops_broken_images(setup, per_sample):
    model, x, _ = setup
    with torch.no_grad(), bn_eval(model):
        y = model(x).argmax(1)   # every image starts right, so what breaks is the attack's doing
    eps = torch.linspace(0.0, 0.12, len(x)) if per_sample else 0.07
    step = eps / 4
    torch.manual_seed(1)
    x_last = pgd(model, x, y, eps=eps, step=step, steps=6)
    torch.manual_seed(1)
    x_any, pred, counts = pgd_any(model, x, y, eps=eps, step=step, steps=6, return_counts=True)
    with torch.no_grad(), bn_eval(model):
        pred_last, pred_any = model(x_last).argmax(1), model(x_any).argmax(1)
    assert torch.equal(pred, pred_any)   # the prediction returned is the returned image's
    broken = pred != y
    assert broken.any() and (~broken).any()
    # unbroken images went the whole way on pgd()'s own iterates; broken ones stopped inside the ball
    assert torch.allclose(x_any[~broken], x_last[~broken], atol=1e-6)
    e = eps if per_sample is False else eps.view(-1, 1, 1, 1)
    assert ((x_any - x).abs() <= e + 1e-6).all() and x_any.min() >= 0 and x_any.max() <= 1
    assert not ((pred_last != y) & ~broken).any()   # broken at x_K => broken under any-iterate
    # the passes shrink: all images enter the first; the last (x_K's forward) holds those unbroken so far
    assert counts[0] == len(x) and (counts[1:] <= counts[:-1]).all() and counts[-1] < len(x)
    assert counts[-1] == (~broken).sum() + (broken & (pred_last != y) & (x_any == x_last).flatten(1).all(1)).sum()


def test_any_iterate_with_nothing_broken_is_last_iterate_exactly(setup):
    model, x, _ = setup
    with torch.no_grad(), bn_eval(model):
        y = model(x).argmax(1)
    torch.manual_seed(2)
    x_last = pgd(model, x, y, eps=0.0, step=0.0, steps=3)
    torch.manual_seed(2)
    x_any, pred, counts = pgd_any(model, x, y, eps=0.0, step=0.0, steps=3, return_counts=True)
    assert torch.equal(x_any, x_last) and torch.equal(pred, y) and counts.tolist() == [16] * 4
