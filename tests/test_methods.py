import copy
import math

import pytest
import torch
import torch.nn.functional as F

from taetlib.attacks import aiw_ramp, pgd
from taetlib.config import RunConfig
from taetlib.errors import ConfigError
from taetlib.methods import OBJECTIVES, build_objective, cpb_scale, harl, kl, robustlt
from taetlib.models import create_model

COUNTS = [500, 300, 180, 110, 65, 40, 24, 15, 9, 5]
EPS = 0.1


def cfg_for(method, **kw):
    base = dict(method=method, epochs=10, stabilization_epochs=4, attack_steps=2, random_start="none")
    return RunConfig(**{**base, **kw})   # the constructor does not validate: no data module needed


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1)
    return model, torch.rand(24, 1, 28, 28), torch.randint(0, 10, (24,))


# ---------------------------------------------------------------- HARL
def harl_loop(loss, y, C, absent):
    """The formulas read literally, one class at a time."""
    L, present = [], []
    for c in range(C):
        members = [float(loss[i]) for i in range(len(y)) if int(y[i]) == c]
        L.append(sum(members) / len(members) if members else 0.0)
        if members:
            present.append(c)
    classes = list(range(C)) if absent == "zero" else present
    bcl = sum(L[c] for c in classes) / len(classes)
    hdl = sum((L[c] - bcl) ** 2 for c in classes) / len(classes)
    rcel = sum((loss / sum(L)) ** 2 for loss in L)
    return {"bcl": bcl, "hdl": hdl, "rcel": rcel}


@pytest.mark.parametrize("absent", ("zero", "exclude"))
def test_harl_matches_the_loop_reading(absent):
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        n = int(torch.randint(3, 40, (1,), generator=g))
        classes = torch.randperm(10, generator=g)[: int(torch.randint(1, 11, (1,), generator=g))]
        y = classes[torch.randint(0, len(classes), (n,), generator=g)]   # often misses classes
        loss = torch.rand(n, generator=g, dtype=torch.float64) * 5
        got, want = harl(loss, y, 10, absent), harl_loop(loss, y, 10, absent)
        for k in want:
            assert abs(float(got[k]) - want[k]) < 1e-6, (trial, k)


def test_harl_modes_differ_only_when_classes_are_missing():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    full = torch.tensor([0, 1, 2, 2])
    assert all(torch.equal(harl(loss, full, 3, "zero")[k], harl(loss, full, 3, "exclude")[k]) for k in ("bcl", "hdl"))
    part = torch.tensor([0, 0, 2, 2])
    assert harl(loss, part, 3, "zero")["bcl"] < harl(loss, part, 3, "exclude")["bcl"]


# ---------------------------------------------------------------- RobustLT
@pytest.mark.parametrize("a", (0.0, 0.3, 1.0))
def test_cpb_weighted_mean_is_eps_and_head_gets_1_minus_a(a):
    scale = cpb_scale(COUNTS, a).double()
    n = torch.tensor(COUNTS, dtype=torch.float64)
    assert abs(float((n / n.sum() * scale * EPS).sum()) - EPS) < 1e-7
    assert abs(float(scale[0]) - (1 - a)) < 1e-7
    assert bool((scale[1:] >= scale[:-1]).all())   # rarer class, larger radius
    tau = a / float((n / n.sum() * torch.log(n.max() / n).sqrt()).sum())
    assert abs(float(scale[-1]) - ((1 - a) + tau * math.sqrt(math.log(500 / 5)))) < 1e-6


def test_cpb_on_balanced_counts_is_plain_eps():
    assert torch.equal(cpb_scale([100] * 5, 0.3), torch.ones(5))


@pytest.mark.parametrize("b", (0.8, 1.0))
def test_aiw_ramp_at_epochs_1_bT_and_T(b):
    T = 100
    assert aiw_ramp(1, b * T) == 0.0
    assert aiw_ramp(int(b * T), b * T) == pytest.approx((b * T - 1) / (b * T))
    assert aiw_ramp(int(b * T) + 1, b * T) == 1.0
    assert aiw_ramp(T, b * T) == min((T - 1) / (b * T), 1.0)


def test_robustlt_radius_and_step_scale_together():
    obj = build_objective(cfg_for("pgd_at", robustlt=True, robustlt_a=0.3, robustlt_b=0.5, epochs=10,
                                  step_size=0.03), COUNTS, EPS)
    y = torch.arange(10)
    scale = cpb_scale(COUNTS, 0.3)
    for epoch, ramp in ((1, 0.0), (3, 0.4), (6, 1.0), (10, 1.0)):
        eps, step = obj.attack.radius(y, epoch)
        assert torch.allclose(eps, EPS * scale * ramp) and torch.allclose(step, 0.03 * scale * ramp)
    assert obj.name == "robustlt(pgd_at)"
    assert build_objective(cfg_for("pgd_at"), COUNTS, EPS).attack.class_scale is None  # unwrapped left alone


@pytest.mark.parametrize("cfg_eps", (None, 0.0))
def test_robustlt_taet_at_epoch_1_has_zero_eps_and_no_nan(batch, cfg_eps):
    model, x, y = batch
    obj = build_objective(cfg_for("taet", robustlt=True, robustlt_b=1.0, stabilization_epochs=0, eps=cfg_eps,
                                  random_start="normal"), COUNTS, EPS)
    model.zero_grad()
    out = obj.step(model, x, y, epoch=1 if cfg_eps is None else 5)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_robustlt_refuses_clean_training():
    with pytest.raises(ConfigError, match="robustlt"):
        build_objective(cfg_for("ce", robustlt=True), COUNTS, EPS)


# ---------------------------------------------------------------- objectives: attacks and losses
def test_registry_names():
    assert set(OBJECTIVES) == {"ce", "pgd_at", "trades", "mart", "at_bsl", "taet", "reat", "robal", "he", "gairat",
                               "awp", "adt", "las_at"}


def test_each_objective_states_its_attack_from_the_config():
    cfg = cfg_for("trades", eps=0.05, attack_steps=7, random_start="uniform")
    a = build_objective(cfg, COUNTS, EPS).attack
    assert (a.eps, a.step, a.steps, a.start, a.loss) == (0.05, 0.0125, 7, "uniform", "kl")
    a = build_objective(cfg_for("at_bsl", step_size=0.01), COUNTS, EPS).attack
    assert (a.eps, a.step, a.loss) == (EPS, 0.01, "ce")
    assert build_objective(cfg_for("ce"), COUNTS, EPS).attack is None


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_every_objective_steps(batch, method):
    model, x, y = batch
    obj = build_objective(cfg_for(method), COUNTS, EPS)
    model.zero_grad()
    out = obj.step(model, x, y, epoch=5)
    out.loss.backward()
    obj.after_step(model)   # AWP takes its weight perturbation off: the shared model stays as it was
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    for logits in (out.clean_logits, out.adv_logits):
        assert logits is None or logits.shape == (len(x), 10)
    # start 'none': the attack's first pass is clean; ADT and LAS-AT never evaluate the clean batch
    assert (out.clean_logits is None) == (method in ("adt", "las_at"))
    assert (out.adv_logits is None) == (method == "ce")
    assert all(not v.requires_grad for v in out.parts.values())


def _attack(model, x, y):
    return pgd(model, x, y, eps=EPS, step=EPS / 4, steps=2, random_start="none")


def test_pgd_at_and_at_bsl_losses(batch):
    model, x, y = batch
    # train-mode forwards move BatchNorm's running stats, which the attack reads: fresh copies each
    z = copy.deepcopy(model)(_attack(model, x, y))
    out = build_objective(cfg_for("pgd_at"), COUNTS, EPS).step(copy.deepcopy(model), x, y, 1)
    assert torch.allclose(out.loss, F.cross_entropy(z, y), atol=1e-6)
    out = build_objective(cfg_for("at_bsl", bsl_tau=0.5), COUNTS, EPS).step(copy.deepcopy(model), x, y, 1)
    shifted = z + 0.5 * torch.log(torch.tensor(COUNTS, dtype=torch.float32))
    assert torch.allclose(out.loss, F.cross_entropy(shifted, y), atol=1e-6)
    assert torch.allclose(out.adv_logits, z, atol=1e-6)   # predictions use raw logits


def test_trades_loss_and_its_attack_maximises_kl(batch):
    model, x, y = batch
    obj = build_objective(cfg_for("trades", random_start="normal"), COUNTS, EPS)
    torch.manual_seed(3)
    out = obj.step(model, x, y, 1)
    z, z_adv = out.clean_logits, out.adv_logits
    p = F.softmax(z, 1)
    want_kl = (p * (p.log() - F.log_softmax(z_adv, 1))).sum(1).mean()
    assert torch.allclose(out.parts["robust"], want_kl, atol=1e-5)
    assert torch.allclose(out.loss, F.cross_entropy(z, y) + 6.0 * want_kl, atol=1e-5)
    assert out.parts["robust"] > 0
    assert torch.allclose(kl(z, z), torch.zeros(len(x)), atol=1e-6)


def test_mart_loss_matches_the_paper_formula(batch):
    model, x, y = batch
    out = build_objective(cfg_for("mart", mart_beta=2.0), COUNTS, EPS).step(model, x, y, 1)
    p, p_adv = F.softmax(out.clean_logits.detach(), 1), F.softmax(out.adv_logits.detach(), 1)
    total = 0.0
    for i in range(len(y)):
        wrong = max(float(p_adv[i, k]) for k in range(10) if k != int(y[i]))
        bce = -math.log(p_adv[i, y[i]]) - math.log(1 - wrong)
        kl_i = float((p[i] * (p[i].log() - p_adv[i].log())).sum())
        total += bce + 2.0 * kl_i * (1 - float(p[i, y[i]]))
    assert abs(float(out.loss.detach()) - total / len(y)) < 1e-4


def test_taet_stages_and_harl_parts(batch):
    model, x, y = batch
    obj = build_objective(cfg_for("taet", stabilization_epochs=4), COUNTS, EPS)
    assert [obj.stage(e) for e in (1, 4, 5, 10)] == ["stabilization"] * 2 + ["adversarial"] * 2
    s1 = obj.step(copy.deepcopy(model), x, y, 4)
    assert s1.adv_logits is None and s1.parts == {}
    assert torch.allclose(s1.loss, F.cross_entropy(copy.deepcopy(model)(x), y), atol=1e-6)
    s2 = obj.step(copy.deepcopy(model), x, y, 5)
    assert set(s2.parts) == {"bcl", "hdl", "rcel"}
    assert torch.allclose(s2.loss, 0.1 * (s2.parts["bcl"] + s2.parts["hdl"] + s2.parts["rcel"]), atol=1e-6)
    z = copy.deepcopy(model)(_attack(model, x, y))
    want = harl(F.cross_entropy(z, y, reduction="none"), y, 10, "zero")
    assert all(torch.allclose(s2.parts[k], want[k], atol=1e-5) for k in want)


def test_harl_weights_each_scale_their_own_term(batch):
    """alpha, beta and gamma reach the loss, each on its own term: changing one changes the loss by
    (change) x (its term), on the same adversarial batch."""
    model, x, y = batch
    weights = {"harl_alpha": 0.3, "harl_beta": 0.5, "harl_gamma": 0.7}

    def step(**w):
        cfg = cfg_for("taet", stabilization_epochs=0, **{**weights, **w})
        return build_objective(cfg, COUNTS, EPS).step(copy.deepcopy(model), x, y, 1)

    ref = step()
    parts = ref.parts
    assert all(parts[k] > 0 for k in ("bcl", "hdl", "rcel"))
    assert torch.allclose(ref.loss, 0.3 * parts["bcl"] + 0.5 * parts["hdl"] + 0.7 * parts["rcel"], atol=1e-6)
    for name, term in (("harl_alpha", "bcl"), ("harl_beta", "hdl"), ("harl_gamma", "rcel")):
        out = step(**{name: weights[name] + 1.0})
        assert torch.equal(out.parts[term], parts[term])
        assert torch.allclose(out.loss - ref.loss, parts[term], rtol=1e-4, atol=1e-6), name


def test_bsl_tau_changes_the_loss_by_its_logit_shift(batch):
    model, x, y = batch
    log_n = torch.log(torch.tensor(COUNTS, dtype=torch.float32))
    losses = {}
    for tau in (0.0, 1.0, 2.0):
        out = build_objective(cfg_for("at_bsl", bsl_tau=tau), COUNTS, EPS).step(copy.deepcopy(model), x, y, 1)
        assert torch.allclose(out.loss, F.cross_entropy(out.adv_logits + tau * log_n, y), atol=1e-6)
        losses[tau] = float(out.loss.detach())
    assert len(set(losses.values())) == 3
    pgd_at = build_objective(cfg_for("pgd_at"), COUNTS, EPS).step(copy.deepcopy(model), x, y, 1)
    assert losses[0.0] == pytest.approx(float(pgd_at.loss.detach()), abs=1e-6)   # tau = 0 is PGD-AT


def test_uniform_start_reports_no_clean_logits(batch):
    model, x, y = batch
    out = build_objective(cfg_for("pgd_at", random_start="uniform"), COUNTS, EPS).step(model, x, y, 1)
    assert out.clean_logits is None and out.adv_logits is not None


@pytest.mark.parametrize("method", ("at_bsl", "trades"))
def test_attack_object_is_not_shared_by_robustlt(method):
    """RobustLT changes only the radius of a copy of the attack: the objective it wraps trains as before,
    and the copy keeps everything else (TRADES' attack still maximises the KL)."""
    base = build_objective(cfg_for(method, random_start="normal", attack_steps=3), COUNTS, EPS)
    before = copy.deepcopy(vars(base.attack))
    wrapped = robustlt(base, COUNTS, 0.3, 1.0, 10)
    assert wrapped.attack is not base.attack and vars(base.attack).keys() == before.keys()
    assert all(getattr(base.attack, k) is None if v is None else getattr(base.attack, k) == v
               for k, v in before.items())
    keep = ("eps", "step", "steps", "start", "loss")
    assert [getattr(wrapped.attack, k) for k in keep] == [before[k] for k in keep]
    assert wrapped.attack.loss == ("kl" if method == "trades" else "ce")
    assert torch.equal(wrapped.attack.class_scale, cpb_scale(COUNTS, 0.3)) and wrapped.attack.ramp_epochs == 10.0
    y = torch.arange(10)
    assert base.attack.radius(y, 5) == (EPS, EPS / 4)
    eps, step = wrapped.attack.radius(y, 5)
    assert torch.allclose(eps, EPS * cpb_scale(COUNTS, 0.3) * 0.4) and torch.allclose(step, eps / 4)
    assert (base.name, wrapped.name, type(wrapped)) == (method, f"robustlt({method})", type(base))
