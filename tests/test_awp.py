"""AWP (docs/methods.md §3): the spec's hand values, BatchNorm untouched by the proxy pass, the step
taken at w + v and undone, RobustLT's optimiser-step ascent, warm-up, DDP and a smoke run."""
import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from taetlib import distributed
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.methods import Attack, build_objective
from taetlib.methods.awp import AWP, awp_perturbation, perturbed_weights
from taetlib.models import create_model
from taetlib.train import fit

NO_ATTACK = Attack(eps=0.0, step=0.0, steps=0, start="none")   # x_adv = x: the weight step alone


def eye_linear():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
        lin.bias.zero_()
    return lin


def test_hand_computed_perturbation_and_step():
    lin, x, y = eye_linear(), torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    (w, v), = awp_perturbation(lin, x, y, gamma=0.01)   # the bias is not perturbed
    assert w is lin.weight
    assert torch.allclose(v, torch.tensor([[0.01, 0.0], [-0.01, 0.0]]), atol=1e-7)
    obj = AWP(NO_ATTACK, 2, gamma=0.01, warmup=0, ascent="official")
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    out = obj.step(lin, x, y, epoch=1)
    assert torch.allclose(F.softmax(out.adv_logits, 1), torch.tensor([[0.734973, 0.265027]]), atol=1e-6)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    obj.after_step(lin)
    assert torch.allclose(lin.weight, torch.tensor([[0.926503, 0.0], [0.073497, 1.0]]), atol=1e-6)
    assert torch.allclose(lin.bias, torch.tensor([-0.073497, 0.073497]), atol=1e-6)


@pytest.fixture
def cnn_batch():
    torch.manual_seed(0)
    return create_model("small_cnn", 10, 1).train(), torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))


def test_only_conv_and_linear_weights_are_perturbed(cnn_batch):
    model, x, y = cnn_batch
    names = [n for n, p in model.named_parameters() if any(p is w for w in perturbed_weights(model))]
    assert names == ["net.0.weight", "net.4.weight", "net.8.weight", "net.13.weight", "net.15.weight"]
    for w, v in awp_perturbation(model, x, y, gamma=0.01):   # ||v_l|| = gamma ||w_l||, layer by layer
        assert torch.allclose(v.norm(), 0.01 * w.norm(), rtol=1e-5)


def test_step_is_taken_at_w_plus_v_and_undone(cnn_batch):
    """After after_step the weights equal a plain SGD step from w with the gradient taken at w + v, and
    BatchNorm's running statistics saw only that training forward (not the proxy pass)."""
    model, x, y = cnn_batch
    ref = copy.deepcopy(model)
    v = [v for _, v in awp_perturbation(copy.deepcopy(model), x, y, gamma=0.02)]
    at_wv = copy.deepcopy(model)
    with torch.no_grad():
        for w, dv in zip(perturbed_weights(at_wv), v):
            w += dv
    F.cross_entropy(at_wv(x), y).backward()   # one train-mode forward: BatchNorm stats as AWP should leave them

    obj = AWP(NO_ATTACK, 10, gamma=0.02, warmup=0, ascent="official")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    out = obj.step(model, x, y, epoch=1)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    obj.after_step(model)
    for (name, p), p_ref, p_wv in zip(model.named_parameters(), ref.parameters(), at_wv.parameters()):
        assert torch.allclose(p, p_ref - 0.05 * p_wv.grad, atol=1e-6), name
    for (name, b), b_wv in zip(model.named_buffers(), at_wv.buffers()):
        assert torch.equal(b, b_wv), name


def robustlt_reference(model, opt, x, y, gamma):
    """RobustLT core/methods/awp.py read literally: a step of the real optimiser on -CE, the per-layer
    normalised difference, then weights and optimiser restored."""
    origin, origin_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    loss = -F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    diff = {}
    for name, p in model.named_parameters():
        if "weight" in name and p.dim() > 1:
            d = p.detach() - origin[name]
            diff[name] = origin[name].norm() / (d.norm() + 1e-20) * d * gamma
    model.load_state_dict(origin)
    opt.load_state_dict(origin_opt)
    return diff


def copy_with_optimizer(model, opt):
    """A copy of the model and an optimiser over its parameters holding opt's state (momentum buffers)."""
    m = copy.deepcopy(model)
    o = torch.optim.SGD(m.parameters(), lr=1.0)
    o.load_state_dict(copy.deepcopy(opt.state_dict()))   # load_state_dict alone would share the buffers
    return m, o


@pytest.mark.parametrize("nesterov", (False, True))
def test_robustlt_ascent_is_a_step_of_the_training_optimiser(cnn_batch, nesterov):
    model, x, y = cnn_batch
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    for _ in range(2):   # a momentum buffer that points somewhere
        opt.zero_grad()
        F.cross_entropy(model(torch.rand_like(x)), y).backward()
        opt.step()
    want = robustlt_reference(*copy_with_optimizer(model, opt), x, y, gamma=0.005)
    m, o = copy_with_optimizer(model, opt)
    got = awp_perturbation(m, x, y, 0.005, "robustlt", o)
    names = [n for n, p in model.named_parameters() if "weight" in n and p.dim() > 1]
    for name, (_, v) in zip(names, got):
        assert torch.allclose(v, want[name], atol=1e-7, rtol=1e-4), name
    official = awp_perturbation(copy.deepcopy(model), x, y, 0.005, "official")
    assert not torch.allclose(official[-1][1], got[-1][1], rtol=0.1)   # the two ascents differ


def test_robustlt_ascent_keeps_the_ascent_pass_in_batchnorm(cnn_batch):
    model, x, y = cnn_batch
    for ascent, tracked in (("official", 0), ("robustlt", 1)):
        m = copy.deepcopy(model)
        awp_perturbation(m, x, y, 0.01, ascent, torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9))
        assert int(m.net[1].num_batches_tracked) == tracked, ascent


def test_warmup_epochs_train_plain_pgd_at(cnn_batch):
    model, x, y = cnn_batch
    cfg = RunConfig(method="awp", awp_warmup=2, attack_steps=1, random_start="none")
    obj = build_objective(cfg, [10] * 10, 0.1)
    w0 = [p.clone() for p in model.parameters()]
    obj.step(copy.deepcopy(model), x, y, epoch=2)
    assert obj._v is None
    out = obj.step(model, x, y, epoch=3)
    assert obj._v is not None and not all(torch.equal(a, b) for a, b in zip(w0, model.parameters()))
    obj.after_step(model)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(w0, model.parameters()))
    assert out.adv_logits.shape == (16, 10)


def test_awp_settings_are_validated():
    with pytest.raises(ConfigError, match=r"awp_gamma=-0\.1: must be >= 0"):
        RunConfig(method="awp", awp_gamma=-0.1)
    with pytest.raises(ConfigError, match=r"awp_ascent='robust_lt': unknown; choose one of .*'robustlt'"):
        RunConfig(method="awp", awp_ascent="robust_lt")


# ---------------------------------------------------------------- DDP: one v on every rank
def mlp():
    torch.manual_seed(0)   # no BatchNorm: the global-batch gradient is exactly the mean of the ranks'
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


def _rank(rank, world, path, out):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(8, 16, generator=g), torch.randint(0, 3, (8,), generator=g)
        part = slice(rank * 4, rank * 4 + 4)   # each rank its own half of the batch
        v = awp_perturbation(mlp(), x[part], y[part], gamma=0.01)
        torch.save([t for _, t in v], f"{out}.{rank}")
    finally:
        distributed.teardown()


@pytest.mark.slow
def test_ddp_ranks_add_the_same_perturbation_the_global_batch_gives(tmp_path):
    mp.spawn(_rank, args=(2, tmp_path / "store", tmp_path / "v"), nprocs=2, join=True)
    v0, v1 = (torch.load(f"{tmp_path / 'v'}.{r}", weights_only=True) for r in (0, 1))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 16, generator=g), torch.randint(0, 3, (8,), generator=g)
    full = [t for _, t in awp_perturbation(mlp(), x, y, gamma=0.01)]
    half = [t for _, t in awp_perturbation(mlp(), x[:4], y[:4], gamma=0.01)]
    assert all(torch.equal(a, b) for a, b in zip(v0, v1))
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(v0, full))
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(half, full))   # the all-reduce mattered


# ---------------------------------------------------------------- smoke run
def test_smoke_training_run(tmp_path):
    base = dict(dataset="synthetic", data_root=str(tmp_path / "data"), imbalance_ratio=5.0, n_max=40, epochs=2,
                attack_steps=1, batch_size=32, eval_every=0, device="cpu", awp_gamma=0.05)
    runs = {}
    for method in ("pgd_at", "awp"):
        cfg = RunConfig(method=method, **base)
        runs[method] = fit(cfg, load_lt(cfg), tmp_path / method)
    h = runs["awp"].history
    assert [r["epoch"] for r in h] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in h)
    assert [r["loss"] for r in h] != [r["loss"] for r in runs["pgd_at"].history]   # the perturbation acted


def test_fit_takes_the_perturbation_off_after_every_step(tmp_path):
    """With a vanishing lr the trained weights stay the initial ones: fit() calls after_step each step
    (without it every step would leave its v, 1% of each layer's norm, in the weights)."""
    cfg = RunConfig(method="awp", dataset="synthetic", data_root=str(tmp_path / "data"), imbalance_ratio=5.0,
                    n_max=40, epochs=1, attack_steps=1, batch_size=32, eval_every=0, device="cpu", lr=1e-12)
    torch.manual_seed(cfg.seed)
    initial = create_model(cfg.model, 10, 1)
    trained = fit(cfg, load_lt(cfg), tmp_path / "run").model
    for (name, p), p0 in zip(trained.named_parameters(), initial.parameters()):
        assert torch.allclose(p, p0, atol=1e-7, rtol=0), name

