"""LAS-AT (docs/methods.md §7): the spec's hand values, the official batch attack and reward PGD read
literally, the REINFORCE update, the state in last.pt with a bit-identical resume, RobustLT refused, and a
smoke run."""
import copy
import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taetlib.checkpoints import CheckpointError, load_checkpoint
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.methods import build_objective, robustlt
from taetlib.methods.lasat import (
    StrategyNet,
    categorical,
    policy_loss,
    reward,
    reward_pgd,
    smoothed_ce,
    strategy_attack,
)
from taetlib.models import create_model
from taetlib.train import fit

COUNTS = [100, 60, 40, 30, 20, 15, 10, 10, 10, 10]


def cfg_for(**kw):
    return RunConfig(**{**dict(method="las_at", dataset="synthetic", eps=0.1, lasat_strategy_model="small_cnn"),
                        **kw})


# ---------------------------------------------------------------- hand values
def test_label_smoothed_loss_hand_values_and_the_official_formula():
    y = torch.tensor([0])
    assert abs(float(smoothed_ce(torch.zeros(1, 10), y, 0.7)) - 2.302585) < 1e-6
    assert abs(float(smoothed_ce(torch.tensor([[2.0] + [0.0] * 9]), y, 0.7)) - 1.396614) < 1e-6
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(6, 10, generator=g), torch.randint(0, 10, (6,), generator=g)
    one_hot = np.eye(10)[y.numpy()]   # official _label_smoothing + LabelSmoothLoss
    target = torch.tensor(one_hot * 0.7 + (one_hot - 1.) * ((0.7 - 1) / float(10 - 1))).float()
    assert torch.allclose(smoothed_ce(z, y, 0.7), (-target * F.log_softmax(z, -1)).sum(-1).mean(), atol=1e-6)
    assert torch.allclose(smoothed_ce(z, y, 1.0), F.cross_entropy(z, y), atol=1e-6)


def test_masked_attack_on_a_linear_model():
    """Logits (w.x, -w.x), y = 0: the input gradient's sign is -sign(w) at every iterate. Zero start,
    alpha = 1/255, K = [3, 14], eps = [15, 5]/255 -> |delta| = [3, 5]/255."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    lin = nn.Linear(16, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([w, -w]))
    model = nn.Sequential(nn.Flatten(), lin)
    x, y = torch.full((2, 1, 4, 4), 0.5), torch.zeros(2, dtype=torch.long)
    x_adv = strategy_attack(model, x, y, eps=torch.tensor([15, 5]) / 255, step=torch.full((2,), 1 / 255),
                            iters=torch.tensor([3, 14]), start=0.0, max_iters=14)
    delta = (x_adv - x).flatten(1)
    assert torch.allclose(delta.abs(), torch.tensor([[3 / 255], [5 / 255]]).expand(2, 16), atol=1e-6)
    assert torch.equal(delta.sign(), -w.sign().expand(2, 16))


def test_categorical_draws_as_torch_multinomial():
    probs = F.softmax(torch.randn(64, 13), 1)
    torch.manual_seed(0)
    want = torch.multinomial(probs, 1).squeeze(1)
    torch.manual_seed(0)
    assert torch.equal(categorical(probs), want)


def test_reward_and_policy_loss_hand_values():
    r = reward(torch.tensor(2.5), torch.tensor(0.25), torch.tensor(0.5))
    assert abs(float(r) - 4.5) < 1e-6
    assert abs(float(reward(torch.tensor(12.0), torch.tensor(1.0), torch.tensor(1.0))) - 16.0) < 1e-6   # CE clamp 10
    log_probs = [F.log_softmax(torch.randn(5, n), 1) for n in (1, 13, 12, 5)]
    actions = [torch.randint(0, lp.shape[1], (5,)) for lp in log_probs]
    want = -4.5 * sum(float(lp.gather(1, a[:, None]).mean()) for lp, a in zip(log_probs, actions))
    assert abs(float(policy_loss(log_probs, actions, r)) - want) < 1e-5


# ---------------------------------------------------------------- the official loops, read literally
def clamp(X, lower, upper):
    return torch.max(torch.min(X, upper), lower)


def official_attack_policy_batch(model, X, y, eps, alpha, iters, init_eps):
    delta = torch.zeros_like(X)
    delta[:, 0, :, :].uniform_(-init_eps, init_eps)
    delta.data = clamp(delta, 0 - X, 1 - X)
    delta.requires_grad = True
    e, a = eps.view(-1, 1, 1, 1), alpha.view(-1, 1, 1, 1)
    left = iters.view(-1, 1, 1, 1).clone()
    for _ in range(int(iters.max())):
        mask = left.ge(1).float()
        loss = F.cross_entropy(model(X + delta), y)
        loss.backward()
        grad = delta.grad.detach()
        delta.data = clamp(delta + mask * a * torch.sign(grad), -e, e)
        delta.data = clamp(delta, 0 - X, 1 - X)
        left = left - 1
        delta.grad.zero_()
    return (X + delta).detach()


def official_attack_pgd(model, X, y, epsilon, alpha, attack_iters, restarts):
    max_loss = torch.zeros(y.shape[0])
    max_delta = torch.zeros_like(X)
    for _ in range(restarts):
        delta = torch.zeros_like(X)
        delta[:, 0, :, :].uniform_(-epsilon, epsilon)
        delta.data = clamp(delta, 0 - X, 1 - X)
        delta.requires_grad = True
        for _ in range(attack_iters):
            output = model(X + delta)
            index = torch.where(output.max(1)[1] == y)
            if len(index[0]) == 0:
                break
            loss = F.cross_entropy(output, y)
            loss.backward()
            grad = delta.grad.detach()
            d = delta[index[0], :, :, :]
            g = grad[index[0], :, :, :]
            d = clamp(d + alpha * torch.sign(g), torch.tensor(-epsilon), torch.tensor(epsilon))
            d = clamp(d, 0 - X[index[0], :, :, :], 1 - X[index[0], :, :, :])
            delta.data[index[0], :, :, :] = d
            delta.grad.zero_()
        all_loss = F.cross_entropy(model(X + delta), y, reduction='none').detach()
        max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
        max_loss = torch.max(max_loss, all_loss)
    return max_delta


@pytest.fixture(scope="module")
def trained():
    """A small CNN that gets most of a batch right, so the reward PGD's per-sample mask matters."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1)
    y = torch.arange(32) % 10
    x = torch.rand(32, 1, 28, 28) * 0.3 + (y.view(-1, 1, 1, 1).float() / 10) * 0.7   # the class is the brightness
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y


@pytest.fixture
def batch(trained):
    model, x, y = trained
    return copy.deepcopy(model), x, y


def test_batch_attack_matches_the_official_draw_for_draw(batch):
    model, x, y = batch
    g = torch.Generator().manual_seed(1)
    eps = torch.randint(3, 16, (32,), generator=g) * 0.1 / 8
    step = torch.randint(1, 6, (32,), generator=g) * 0.1 / 8
    iters = torch.randint(3, 15, (32,), generator=g)
    torch.manual_seed(7)
    got = strategy_attack(model, x, y, eps, step, iters, start=0.1, max_iters=14)
    torch.manual_seed(7)
    model.eval()
    want = official_attack_policy_batch(model, x, y, eps, step, iters, 0.1)
    model.train()
    assert torch.allclose(got, want, atol=1e-6)
    assert bool(((got - x).abs().flatten(1).amax(1) <= eps + 1e-6).all())


def test_reward_pgd_matches_the_official_in_train_mode(batch):
    model, x, y = batch
    a, b = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    torch.manual_seed(3)
    got = reward_pgd(a, x, y, 0.1, 0.025, steps=10, restarts=2)
    torch.manual_seed(3)
    want = official_attack_pgd(b, x, y, 0.1, 0.025, 10, 2)
    assert torch.allclose(got, want, atol=1e-6)
    b.eval()
    correct = (b(x).argmax(1) == y).sum()
    assert 0 < correct and (b(x + want).argmax(1) == y).sum() < correct   # a real attack on a real model


# ---------------------------------------------------------------- the strategy update and its state
def objective_and_optimizer(model, **kw):
    obj = build_objective(cfg_for(**{"lasat_iter_choices": [1, 2, 3], "lasat_reward_steps": 2, **kw}), COUNTS, 0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    obj.bind(opt)
    return obj, opt


def policy_vector(obj):
    return torch.cat([p.detach().reshape(-1).clone() for p in obj.policy.parameters()])


def test_strategy_updates_every_interval_steps_and_leave_the_target_alone(batch):
    model, x, y = batch
    obj, _ = objective_and_optimizer(model, lasat_interval=2, lasat_clip=0.5, lasat_policy_lr=0.1)
    seen = [policy_vector(obj)]
    for _ in range(4):
        obj.step(model, x, y, epoch=1)
        seen.append(policy_vector(obj))
    changed = [not torch.equal(a, b) for a, b in zip(seen, seen[1:])]
    assert changed == [False, True, False, True]
    step = (seen[2] - seen[1]).norm()
    assert 0 < step <= 0.1 * 0.5 * (1 + 1e-4)   # SGD lr x the clipped gradient norm
    target = copy.deepcopy(model.state_dict())
    obj.update_policy(model, x, y)   # the look-ahead copy's step and BatchNorm never reach the target
    assert all(torch.equal(target[k], v) for k, v in model.state_dict().items())


def official_get_reward(target, x, y, eps, alpha, iters, init_eps, lr, reward_steps):
    """Official Get_reward with fixed strategies: batch attack on the eval-mode target, R1; a deep copy, one
    train_target_model step (fresh SGD lr/0.9/5e-4, label smoothing 0.7); attack_pgd on the copy left in
    train mode; R2, R3 in eval mode."""
    target.eval()
    adv = official_attack_policy_batch(target, x, y, eps, alpha, iters, init_eps)
    with torch.no_grad():
        r1 = torch.clamp(F.cross_entropy(target(adv), y), 0, 10)
    ahead = copy.deepcopy(target)
    ahead.train()
    opt = torch.optim.SGD(ahead.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    opt.zero_grad()
    one_hot = np.eye(10)[y.numpy()]
    smooth = torch.tensor(one_hot * 0.7 + (one_hot - 1.) * ((0.7 - 1) / float(10 - 1))).float()
    (-smooth * F.log_softmax(ahead(adv), -1)).sum(-1).mean().backward()
    opt.step()
    pgd_delta = official_attack_pgd(ahead, x, y, init_eps, init_eps / 4, reward_steps, 2)
    ahead.eval()
    with torch.no_grad():
        r2 = (ahead(x + pgd_delta).max(1)[1] == y).sum().item() / len(y) * 4
        r3 = (ahead(x).max(1)[1] == y).sum().item() / len(y) * 2
    return float(r1) + r2 + r3


def test_reward_matches_the_official_get_reward(batch):
    """The strategies the update samples, replayed through the official reward code, give the same R."""
    model, x, y = batch
    obj, opt = objective_and_optimizer(model, lasat_reward_steps=3)
    obj._to(x.device)
    policy0 = copy.deepcopy(obj.policy)
    torch.manual_seed(11)
    got = float(obj.update_policy(copy.deepcopy(model), x, y)["reward"])
    torch.manual_seed(11)
    obj.policy = policy0
    _, _, (eps, iters, step) = obj.sample(x, train=True)   # the same draws: the same strategies
    want = official_get_reward(copy.deepcopy(model), x, y, eps, step, iters, 0.1, lr=0.05, reward_steps=3)
    assert abs(got - want) < 1e-5


def test_reward_ignores_gradients_left_on_the_target(batch):
    """The look-ahead is one step of a fresh optimiser on this batch alone: whatever .grad the target
    still holds from its previous step (fit() zeroes it only after the objective's step) plays no part."""
    model, x, y = batch
    rewards = []
    for stale in (None, 10.0):
        m = copy.deepcopy(model)
        for p in m.parameters():
            p.grad = None if stale is None else torch.full_like(p, stale)
        obj, _ = objective_and_optimizer(m)
        torch.manual_seed(4)
        rewards.append(obj.update_policy(m, x, y)["reward"])
    assert 0 <= float(rewards[0]) <= 10 + 4 + 2 and torch.equal(rewards[0], rewards[1])


def test_state_round_trips_through_a_weights_only_file(batch, tmp_path):
    model, x, y = batch
    obj, _ = objective_and_optimizer(model, lasat_interval=1)
    obj.step(model, x, y, epoch=1)
    torch.save(obj.state_dict(), tmp_path / "s.pt")
    other, _ = objective_and_optimizer(model, lasat_interval=1, seed=5)   # another initial strategy network
    assert not torch.equal(policy_vector(other), policy_vector(obj))
    other.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert torch.equal(policy_vector(other), policy_vector(obj)) and other.steps == 1
    torch.manual_seed(9)
    a = obj.step(copy.deepcopy(model), x, y, epoch=1).adv_logits
    torch.manual_seed(9)
    b = other.step(copy.deepcopy(model), x, y, epoch=1).adv_logits
    assert torch.equal(a, b)


def test_strategy_network_is_the_official_shape():
    net = StrategyNet("resnet18", 3, (1, 13, 12, 5))
    assert [h.out_features for h in net.heads] == [1, 13, 12, 5] and net.heads[1].in_features == 512
    assert [z.shape for z in net(torch.rand(2, 3, 32, 32))] == [(2, 1), (2, 13), (2, 12), (2, 5)]
    obj = build_objective(RunConfig(method="las_at", dataset="cifar10"), COUNTS, 8 / 255)
    assert torch.allclose(obj.values[1] * 255, torch.arange(3, 16).float(), atol=1e-4)   # eps {3..15}/255
    assert torch.allclose(obj.values[3] * 255, torch.arange(1, 6).float(), atol=1e-4)    # step {1..5}/255
    assert obj.values[2].tolist() == list(range(3, 15)) and obj.interval == 20


def test_robustlt_and_bad_settings_are_refused():
    with pytest.raises(ConfigError, match=r"robustlt=True: LAS-AT's strategy network picks every sample's eps"):
        cfg_for(robustlt=True)
    with pytest.raises(ConfigError, match=r"robustlt=True: method='las_at' picks every sample's eps"):
        robustlt(build_objective(cfg_for(), COUNTS, 0.1), COUNTS, 0.3, 0.8, 100)
    with pytest.raises(ConfigError, match=r"lasat_iter_choices=\[\]: must be a non-empty list"):
        cfg_for(lasat_iter_choices=[])
    with pytest.raises(ConfigError, match=r"lasat_strategy_model='resnet19': unknown.*Did you mean 'resnet18'"):
        cfg_for(lasat_strategy_model="resnet19")
    with pytest.raises(ConfigError, match=r"lasat_smoothing=0\.0: must lie in \(0, 1\]"):
        cfg_for(lasat_smoothing=0.0)


# ---------------------------------------------------------------- training: smoke run and exact resume
@pytest.fixture
def tiny(tiny_config):
    return partial(tiny_config, method="las_at", eps=0.1, lasat_strategy_model="small_cnn", imbalance_ratio=5.0,
                   epochs=3, batch_size=32, eval_every=3, eval_per_class=5, eval_pgd_steps=2, lasat_interval=2,
                   lasat_iter_choices=[1, 2, 3], lasat_reward_steps=2, attack_steps=10, lr=0.1)   # their defaults


@pytest.mark.slow
def test_smoke_run_and_resume_is_bit_identical(tmp_path, tiny):
    """The strategy network changes during the run and is in last.pt; a run stopped after epoch 1 and
    resumed ends with the same target and strategy networks, bit for bit."""
    cfg = tiny(tmp_path / "data")
    data = load_lt(cfg)
    full = fit(cfg, data, tmp_path / "full")
    assert all(math.isfinite(r["loss"]) for r in full.history) and full.history[-1]["test_pgd_acc"] is not None
    assert full.history[-1]["train_clean_acc"] is None   # LAS-AT never evaluates the clean batch
    ck = load_checkpoint(tmp_path / "full" / "last.pt")
    initial = build_objective(cfg, data.train_counts, 0.1).state_dict()["policy"]
    policy = ck["objective"]["policy"]
    assert ck["objective"]["steps"] == 3 * -(-len(data.train) // 32)
    assert any(not torch.equal(policy[k], initial[k]) for k in policy)   # it learned

    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, tmp_path / "resumed", callback=stop)
    resumed = fit(cfg, data, tmp_path / "resumed")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    again = load_checkpoint(tmp_path / "resumed" / "last.pt")["objective"]["policy"]
    assert all(torch.equal(policy[k], again[k]) for k in policy)

    # a strategy network that does not fit is refused with the reason, before anything is written
    ck["epoch"], ck["history"] = 1, ck["history"][:1]
    ck["objective"]["policy"].pop(next(iter(ck["objective"]["policy"])))
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save(ck, bad / "last.pt")
    with pytest.raises(CheckpointError, match=r"objective state in the checkpoint does not fit method 'las_at' "
                                              r"\(.*Missing key.*\)\. Fix: resume=False"):
        fit(cfg, data, bad)
    assert sorted(p.name for p in bad.iterdir()) == ["last.pt"]
