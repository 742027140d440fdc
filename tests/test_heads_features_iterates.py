"""What several comparison methods share (docs/methods.md §0): heads (H1), penultimate features (H2),
per-iterate correctness from PGD (H4) and the one-sided uniform start (H6)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taetlib.attacks import _start, pgd
from taetlib.config import RunConfig
from taetlib.errors import ConfigError
from taetlib.models import MODELS, CosPlus, HENorm, classifier, create_model, features_and_logits, set_class_prior


# ---------------------------------------------------------------- H1: heads
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("head, cls", [("cosplus", CosPlus), ("he_norm", HENorm)])
def test_head_replaces_the_last_linear(name, head, cls):
    torch.manual_seed(0)
    m = create_model(name, 7, 3, head=head)
    net = m.net
    replaced = net[-1] if name == "small_cnn" else net.fc
    assert isinstance(replaced, cls) and classifier(m) is replaced
    assert replaced.weight.shape == (7, 256 if name == "small_cnn" else replaced.weight.shape[1])
    if name in ("small_cnn", "resnet18"):   # the big WRNs: shape checks only, their forward is slow on a CPU
        with torch.no_grad():
            out = m.eval()(torch.rand(2, 3, 32, 32))
        assert out.shape == (2, 7) and float(out.abs().max()) <= 1 + 1e-6   # cosine logits


def test_unknown_head_is_refused():
    with pytest.raises(ConfigError, match="head='cos'"):
        create_model("small_cnn", 10, 1, head="cos")
    with pytest.raises(ConfigError, match="head='cos'"):
        RunConfig(head="cos")


def test_cosplus_hand_values_and_posthoc():
    head = CosPlus(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    h = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(head(h), torch.tensor([[0.581818, 0.787692]]), atol=1e-6)
    set_class_prior(nn.Sequential(head), [30, 10])
    assert torch.allclose(head.log_prior, torch.tensor([0.75, 0.25]).log())
    assert torch.allclose(head(h), torch.tensor([[0.581818, 0.787692]]), atol=1e-6)   # the prior is off in training
    head.posthoc(10, 0.1)
    want = 10 * torch.tensor([0.581818, 0.787692]) - 0.1 * torch.tensor([0.75, 0.25]).log()
    assert torch.allclose(head(h), want[None], atol=1e-5)


def test_he_norm_rows_stay_unit_and_gradient_is_a_linear_layers_at_unit_w():
    torch.manual_seed(0)
    head = HENorm(5, 3)
    with torch.no_grad():
        head.weight.mul_(7)
    h = torch.randn(4, 5)
    z = head(h)
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(3), atol=1e-6)
    assert float(z.abs().max()) <= 1 + 1e-6
    ref = nn.Linear(5, 3, bias=False)
    with torch.no_grad():
        ref.weight.copy_(head.weight)
    y = torch.tensor([0, 2, 1, 1])
    F.cross_entropy(z, y).backward()
    F.cross_entropy(ref(F.normalize(h, dim=1)), y).backward()
    assert torch.allclose(head.weight.grad, ref.weight.grad, atol=1e-7)
    opt = torch.optim.SGD(head.parameters(), lr=1.0, momentum=0.9, weight_decay=5e-4)
    opt.step()   # W leaves the sphere; the next forward puts it back
    assert not torch.allclose(head.weight.norm(dim=1), torch.ones(3), atol=1e-3)
    head(h)
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(3), atol=1e-6)
    state = {k: v * 3 for k, v in head.state_dict().items()}
    head.load_state_dict(state)   # a loaded W is renormalised too
    head(h)
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(3), atol=1e-6)


def test_he_norm_allows_two_forwards_in_one_step():
    """TRADES-style steps run the model on x and x_adv before one backward: W must not move in between."""
    torch.manual_seed(0)
    m = create_model("small_cnn", 10, 1, head="he_norm")
    x = torch.rand(4, 1, 28, 28)
    (m(x).sum() + m(x + 0.01).sum()).backward()
    assert classifier(m).weight.grad is not None


# ---------------------------------------------------------------- H2: penultimate features
@pytest.mark.parametrize("head", ("fc", "cosplus"))
def test_features_and_logits_are_the_classifiers_input_and_output(head):
    torch.manual_seed(0)
    m = create_model("resnet18", 10, 3, head=head).eval()
    x = torch.rand(2, 3, 32, 32)
    f, z = features_and_logits(m, x)
    assert f.shape == (2, 512) and torch.allclose(classifier(m)(f), z)
    assert torch.allclose(z, m(x)) and not classifier(m)._forward_pre_hooks   # the hook is removed


# ---------------------------------------------------------------- H4: kappa
def reference_kappa(model, x, y, eps, step, steps):
    """The official GA-PGD count, read literally: one sample at a time, before each update."""
    model.eval()
    x_adv, kappa = x.clone(), [0] * len(x)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        for i in range(len(x)):
            kappa[i] += int(logits[i].argmax() == y[i])
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    return torch.tensor(kappa)


def test_kappa_counts_correct_iterates_before_each_update():
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1)
    x, y = torch.rand(24, 1, 28, 28), torch.randint(0, 10, (24,))
    x_adv, logits, kappa = pgd(model, x, y, eps=0.1, step=0.03, steps=4, random_start="none",
                               return_logits=True, return_kappa=True)
    assert kappa.dtype == torch.long and torch.equal(kappa, reference_kappa(copy.deepcopy(model), x, y, 0.1, 0.03, 4))
    assert torch.equal(x_adv, pgd(model, x, y, eps=0.1, step=0.03, steps=4, random_start="none"))
    assert int(kappa.max()) > 0   # the comparison above is not between two all-zero counts
    correct = (model.eval()(x).argmax(1) == y).long()
    _, k0 = pgd(model, x, y, eps=0.0, step=0.0, steps=5, random_start="none", return_kappa=True)
    assert torch.equal(k0, 5 * correct)   # eps 0: every iterate is x


# ---------------------------------------------------------------- H6: the one-sided start
def test_uniform_pos_start_is_one_sided():
    torch.manual_seed(0)
    x = torch.full((2000,), 0.5)
    d = _start(x, 0.1, "uniform_pos") - x
    assert float(d.min()) >= 0 and float(d.max()) < 0.1 + 1e-7
    assert abs(float(d.mean()) - 0.05) < 0.005
    d = _start(x, 0.1, "uniform") - x
    assert float(d.min()) < 0 < float(d.max())
    x_adv = pgd(create_model("small_cnn", 10, 1), torch.ones(2, 1, 28, 28), torch.tensor([0, 1]), eps=0.1, step=0.0,
                steps=1, random_start="uniform_pos")
    assert torch.equal(x_adv, torch.ones(2, 1, 28, 28))   # clamped to [0, 1]
    assert RunConfig(random_start="uniform_pos").random_start == "uniform_pos"
