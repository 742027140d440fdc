"""Each method's training attack starts as its released code does: the PGD iterates equal those of a
loop written the released way, on images with many pixels at exactly 0 and 1 (where a start drawn outside
[0,1] and one clamped back differ), and the other clamp choice gives a different iterate."""
import pytest
import torch
import torch.nn.functional as F

from taetlib.config import RunConfig
from taetlib.methods.base import attack_start, build_objective
from taetlib.models import create_model

EPS, STEP, STEPS = 0.1, 0.03, 2   # two iterates: GAIRAT needs K >= 2


def _released_loop(model, x, y, x0, steps=STEPS):
    """The loop every released repository writes: forward at x0 as given, then step, ball, [0,1]."""
    x_adv = x0
    model.eval()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * g.sign(), x - EPS), x + EPS).clamp(0.0, 1.0)
    return x_adv


# the start each released loop draws, and whether it clamps it before the first forward
def normal_unclamped(x):   # TAET HARL.py, AT-BSL at_bsl_loss.py, TRADES trades.py, MART mart.py, HE losses.py
    return x + 0.001 * torch.randn(x.shape)


def uniform_unclamped(x):   # REAT loss_functions.py: FloatTensor(...).uniform_(-eps, eps), no clamp
    return x + torch.empty(x.shape).uniform_(-EPS, EPS)


def uniform_pos_unclamped(x):   # RoBal train_modes.py: x + eps * rand, no clamp
    return x + EPS * torch.rand(x.shape)


def uniform_clamped(x):   # GAIRAT GA_PGD (numpy's uniform there), AWP attack_pgd, RobustLT utils.py: clamp to [0,1]
    return (x + torch.empty(x.shape).uniform_(-EPS, EPS)).clamp(0.0, 1.0)


RELEASED = {"pgd_at": normal_unclamped, "trades": normal_unclamped, "mart": normal_unclamped,
            "at_bsl": normal_unclamped, "taet": normal_unclamped, "he": normal_unclamped,
            "reat": uniform_unclamped, "robal": uniform_pos_unclamped,
            "gairat": uniform_clamped, "awp": uniform_clamped,
            "cfa": normal_unclamped, "dafa": normal_unclamped}   # CFA attack.py L80/L123, DAFA losses.py L39-40


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    x = torch.rand(12, 1, 28, 28)
    x[:, :, :10] = 0.0    # Fashion-MNIST's background: exactly 0
    x[:, :, -6:] = 1.0    # saturated pixels: exactly 1
    return create_model("small_cnn", 10, 1), x, torch.randint(0, 10, (12,))


def _iterates(method, model, x, y, **cfg):
    obj = build_objective(RunConfig(method=method, eps=EPS, step_size=STEP, attack_steps=STEPS, **cfg), [50] * 10, EPS)
    torch.manual_seed(1)
    return obj.attack(model, x, y, 1, loss="ce").x_adv   # CE for every method: only the start is under test


@pytest.mark.parametrize("method", sorted(RELEASED))
def test_default_start_is_the_released_codes(method, batch):
    model, x, y = batch
    got = _iterates(method, model, x, y)
    torch.manual_seed(1)
    want = _released_loop(model, x, y, RELEASED[method](x))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    start, clamp = attack_start(RunConfig(method=method))
    other = _iterates(method, model, x, y, clamp_start=not clamp)
    assert (other - want).abs().max() > 1e-4, "the other clamp choice must move the first iterate here"


def test_released_starts_leave_the_box_on_border_pixels(batch):
    """The reason for the option: about half the border pixels start outside [0,1] when not clamped."""
    _, x, _ = batch
    torch.manual_seed(1)
    x0 = normal_unclamped(x)
    border = (x == 0) | (x == 1)
    outside = ((x0 < 0) | (x0 > 1))[border].float().mean()
    assert 0.45 < float(outside) < 0.55


def test_config_overrides_the_methods_start():
    assert attack_start(RunConfig(method="taet")) == ("normal", False)
    assert attack_start(RunConfig(method="gairat")) == ("uniform", True)
    assert attack_start(RunConfig(method="taet", random_start="uniform", clamp_start=True)) == ("uniform", True)
    assert attack_start(RunConfig(method="robal", clamp_start=True)) == ("uniform_pos", True)
    assert attack_start(RunConfig(method="cfa", cfa_base="at")) == ("uniform", True)   # CFA attack.py L41-47
