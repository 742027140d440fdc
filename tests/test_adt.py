"""ADT_EXP (docs/methods.md §6): the spec's hand values, the never-zeroed inner gradients, the
official loop read literally, the radius, RobustLT composition and a smoke run."""
import math

import pytest
import torch
import torch.nn.functional as F

from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.methods import build_objective
from taetlib.methods.adt import adt_exp, neg_log_density, optimise_distribution
from taetlib.models import create_model
from taetlib.train import fit


def test_hand_computed_density_terms():
    sigma = F.softplus(torch.zeros(2))
    assert torch.allclose(sigma, torch.full((2,), math.log(2)))
    n = torch.tensor([1.0, 0.0])
    a = torch.tanh(0 + n * sigma)
    assert abs(float(a[0]) - 0.6) < 1e-6
    assert torch.allclose(neg_log_density(n, sigma, a), torch.tensor([-0.312800, -0.366513]), atol=1e-6)


def test_inner_adam_steps_on_the_running_gradient_sum():
    """g1 = [1, -1] then g2 = [-3, 0.5]: mu = [-0.3, 0.3], then [0, 0.6] (zeroed gradients would give [0, 0])."""
    grads = iter([torch.tensor([1.0, -1.0]), torch.tensor([-3.0, 0.5])])

    def linear_loss(mu, rho):
        return (next(grads) * mu).sum() + 0 * rho.sum()
    mu, rho = optimise_distribution(linear_loss, (2,), steps=1, samples=1, lr=0.3)
    assert torch.allclose(mu, torch.tensor([-0.3, 0.3]))
    grads = iter([torch.tensor([1.0, -1.0]), torch.tensor([-3.0, 0.5])])
    mu, rho = optimise_distribution(linear_loss, (2,), steps=2, samples=1, lr=0.3)
    assert torch.allclose(mu, torch.tensor([0.0, 0.6]), atol=1e-6) and torch.equal(rho, torch.zeros(2))


def official_adt(model, x, y, eps, steps, samples, lr, lam):
    """adt_exp.py adt_loss's inner loop and final sample, read literally (no zero_grad on mean/var)."""
    model.eval()
    mean = torch.zeros_like(x, requires_grad=True)
    var = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.Adam([mean, var], lr=lr, betas=(0.0, 0.0))
    for _ in range(steps):
        for s in range(samples):
            adv_std = F.softplus(var)
            rand_noise = torch.randn_like(x)
            adv = torch.tanh(mean + rand_noise * adv_std)
            negative_logp = (rand_noise ** 2) / 2. + (adv_std + 1e-8).log() + (1 - adv ** 2 + 1e-8).log()
            x_adv = torch.clamp(x + eps * adv, 0.0, 1.0)
            loss = -F.cross_entropy(model(x_adv), y) - lam * negative_logp.mean()
            loss.backward(retain_graph=s != samples - 1)
        opt.step()
    return torch.clamp(x + eps * torch.tanh(mean + F.softplus(var) * torch.randn_like(x)), 0.0, 1.0).detach()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return create_model("small_cnn", 10, 1).train(), torch.rand(12, 1, 28, 28), torch.randint(0, 10, (12,))


def test_matches_the_official_loop_draw_for_draw(batch):
    model, x, y = batch
    torch.manual_seed(5)
    got = adt_exp(model, x, y, 0.1, steps=3, samples=2, lr=0.3, lam=0.5)
    assert model.training   # the inner loop's eval mode is undone
    torch.manual_seed(5)
    want = official_adt(model, x, y, 0.1, steps=3, samples=2, lr=0.3, lam=0.5)
    model.train()
    assert torch.allclose(got, want, atol=1e-6)
    assert (got - x).abs().max() <= 0.1 + 1e-6 and got.min() >= 0 and got.max() <= 1
    assert (got - x).abs().max() > 0.05   # and it did move


def test_per_sample_radius_and_robustlt(batch):
    model, x, y = batch
    eps = torch.tensor([0.0, 0.2] * 6)
    x_adv = adt_exp(model, x, y, eps, steps=1, samples=1)
    dist = (x_adv - x).abs().flatten(1).amax(1)
    assert torch.equal(x_adv[0::2], x[0::2]) and bool((dist[1::2] <= 0.2 + 1e-6).all())
    cfg = RunConfig(method="adt", robustlt=True, epochs=10, adt_steps=1, adt_samples=1)
    obj = build_objective(cfg, [100, 50, 20, 10, 5, 5, 5, 5, 5, 5], 0.1)
    assert obj.name == "robustlt(adt)" and obj.attack.class_scale is not None
    out = obj.step(model, x, y, epoch=1)   # AIW ramp at 0: eps = 0, so the sample is x itself
    assert torch.allclose(out.adv_logits, model(x), atol=1e-5) and out.clean_logits is None


def test_adt_settings_are_validated():
    with pytest.raises(ConfigError, match=r"adt_samples=0: must be > 0"):
        RunConfig(method="adt", adt_samples=0)
    with pytest.raises(ConfigError, match=r"adt_lambda=-1\.0: must be >= 0"):
        RunConfig(method="adt", adt_lambda=-1.0)


def test_smoke_training_run(tmp_path):
    cfg = RunConfig(method="adt", dataset="synthetic", data_root=str(tmp_path / "data"), imbalance_ratio=5.0,
                    n_max=40, epochs=2, adt_steps=2, adt_samples=2, batch_size=32, eval_every=2, eval_per_class=5,
                    eval_pgd_steps=2, device="cpu")
    h = fit(cfg, load_lt(cfg), tmp_path / "run").history
    assert [r["epoch"] for r in h] == [1, 2] and all(math.isfinite(r["loss"]) for r in h)
    assert h[-1]["train_clean_acc"] is None and h[-1]["test_pgd_acc"] is not None
