"""select='fawa', CFA's fairness-aware weight average: the update against values computed by hand
(PKU-ML/CFA utils.weight_average, train.py L248-257), the threshold decision on the worst class as the
official logger counts it, and in fit(): model.pt is the average, resume is bit-identical, and a run
whose worst class never reaches the threshold keeps its last weights and says so."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.epoch_line import progress_line
from taetlib.errors import ConfigError
from taetlib.fawa import FAWA, worst_class
from taetlib.train import average_epoch, fit


def tiny_net() -> nn.Module:
    """Linear(1, 1) and BatchNorm1d(1) with set values: weight 1, bias 0, running mean 2, var 4, 10 batches."""
    net = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(1.0), net[0].bias.fill_(0.0)
        net[1].running_mean.fill_(2.0), net[1].running_var.fill_(4.0)
        net[1].num_batches_tracked.fill_(10)
    return net


def moved(net: nn.Module) -> dict:
    """Another epoch's state: weight 2, bias 1, running mean 3, var 5, 20 batches."""
    s = {k: v.clone() for k, v in net.state_dict().items()}
    s["0.weight"].fill_(2.0), s["0.bias"].fill_(1.0)
    s["1.running_mean"].fill_(3.0), s["1.running_var"].fill_(5.0), s["1.num_batches_tracked"].fill_(20)
    return s


# ---------------------------------------------------------------- the update, by hand
def test_first_update_copies_later_ones_average_every_entry_buffers_included():
    net = tiny_net()
    f = FAWA(decay=0.88, threshold=0.24)
    assert f.step(net.state_dict(), 0.24)            # R_min == threshold updates (>=): init, a copy
    assert f.updates == 1 and torch.equal(f.weights["0.weight"], torch.tensor([[1.0]]))
    with torch.no_grad():
        net[0].weight.fill_(7.0)                     # the average holds a copy, not the live tensor
    assert float(f.weights["0.weight"]) == 1.0
    assert f.step(moved(net), 0.5)
    w = f.weights   # 0.88 old + 0.12 new
    assert float(w["0.weight"]) == pytest.approx(0.88 * 1 + 0.12 * 2)       # 1.12
    assert float(w["0.bias"]) == pytest.approx(0.12)
    assert float(w["1.running_mean"]) == pytest.approx(0.88 * 2 + 0.12 * 3)  # 2.12: BN statistics averaged too
    assert float(w["1.running_var"]) == pytest.approx(0.88 * 4 + 0.12 * 5)   # 4.12
    # the counter: 10 * 0.88 + 20 * 0.12 = 11.2, truncated back to an integer as load_state_dict's copy does
    assert w["1.num_batches_tracked"].dtype == torch.long and int(w["1.num_batches_tracked"]) == 11
    assert f.updates == 2


def test_below_the_threshold_the_average_keeps_its_weights():
    net = tiny_net()
    f = FAWA(decay=0.88, threshold=0.24)
    assert not f.step(net.state_dict(), 0.2399) and f.weights is None and f.updates == 0   # not initialised
    f.step(net.state_dict(), 0.3)
    before = {k: v.clone() for k, v in f.weights.items()}
    assert not f.step(moved(net), 0.1)
    assert f.updates == 1 and all(torch.equal(before[k], f.weights[k]) for k in before)


def test_decay_zero_keeps_the_last_epoch_that_reached_the_threshold():
    net = tiny_net()
    f = FAWA(decay=0.0, threshold=0.0)
    f.step(net.state_dict(), 0.0), f.step(moved(net), 0.0)
    assert float(f.weights["0.weight"]) == 2.0 and float(f.weights["1.running_var"]) == 5.0


# ---------------------------------------------------------------- the decision: the worst class
def test_worst_class_as_the_official_logger_counts_it_and_as_recall():
    correct, counts = [30, 6, 9], [100, 20, 30]   # recall 0.3 each; N = 150
    # official C * correct_c / N: 3 * [30, 6, 9] / 150 = [0.6, 0.12, 0.18]
    assert worst_class(correct, counts) == pytest.approx(0.12)
    assert worst_class(correct, counts, "recall") == pytest.approx(0.3)
    # a class the split lacks: the logger counts 0 for it; recall leaves it out
    assert worst_class([5, 0], [10, 0]) == 0.0 and worst_class([5, 0], [10, 0], "recall") == 0.5


@pytest.mark.parametrize("rule, updates", [("official", False), ("recall", True)])
def test_an_epoch_updates_when_its_worst_class_reaches_the_threshold(rule, updates):
    """average_epoch reads the epoch's validation record: recall [0.3, 0.3, 0.3] of [100, 20, 30] images."""
    net = tiny_net()
    run = SimpleNamespace(fawa=FAWA(0.88, 0.24), model=net, cfg=SimpleNamespace(fawa_class_acc=rule))
    record = {"val_pgd_acc": [0.3, 0.3, 0.3], "val_n": [100, 20, 30]}
    average_epoch(run, record)
    assert record["fawa_worst"] == pytest.approx(0.12 if rule == "official" else 0.3)
    assert record["fawa_updated"] is updates and record["fawa_updates"] == int(updates)
    clean_stage = {"val_pgd_acc": None}   # TAET's stage 1: no validation, no decision
    average_epoch(run, clean_stage)
    assert clean_stage["fawa_worst"] is None and clean_stage["fawa_updated"] is False


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("bad, message", [
    ({"fawa_decay": 1.0}, "fawa_decay=1.0: must lie in [0, 1)"),
    ({"fawa_threshold": -0.1}, "fawa_threshold=-0.1: must be >= 0"),
    ({"fawa_class_acc": "mean"}, "fawa_class_acc='mean'"),
])
def test_fawa_settings_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        RunConfig(method="pgd_at", select="fawa", **bad)


def test_fawa_validates_every_epoch_so_it_needs_no_eval_every():
    assert RunConfig(method="pgd_at", select="fawa", eval_every=0).select == "fawa"


# ---------------------------------------------------------------- in fit()
def tiny_fawa(root, **kw):
    """TAET with 1 clean epoch then 3 adversarial ones, FAWA on 20 % of each class, test every 2nd epoch."""
    base = dict(dataset="synthetic", data_root=str(root), imbalance_ratio=10.0, n_max=40, method="taet",
                epochs=4, stabilization_epochs=1, attack_steps=2, batch_size=32, lr=0.05, eval_every=2,
                eval_per_class=5, eval_pgd_steps=2, device="cpu", budget_rule="released", lr_milestones=[0.75],
                select="fawa", val_fraction=0.2, fawa_threshold=0.0)
    return RunConfig(**{**base, **kw})


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def stepped(tmp_path_factory):
    """One run of 4 epochs, and the same run trained one epoch per call, each epoch's weights kept."""
    root = tmp_path_factory.mktemp("data")
    cfg = tiny_fawa(root)
    data = load_lt(cfg)
    whole = fit(cfg, data, tmp_path_factory.mktemp("whole"), resume=False)
    run_dir, epochs = tmp_path_factory.mktemp("stepped"), []
    for _ in range(4):
        part = fit(cfg, data, run_dir, stop_after=1)
        epochs.append(torch.load(run_dir / "last.pt", weights_only=True))
    return cfg, data, whole, part, run_dir, epochs


@pytest.mark.slow
def test_model_pt_is_the_average_of_the_epochs_weights(stepped):
    cfg, _, whole, _, run_dir, epochs = stepped
    hist = whole.history
    assert hist[0]["stage"] == "stabilization" and hist[0]["fawa_worst"] is None and not hist[0]["fawa_updated"]
    assert [r["fawa_updated"] for r in hist[1:]] == [True] * 3 and hist[-1]["fawa_updates"] == 3
    assert all(r["val_pgd_acc"] is not None for r in hist[1:])   # every adversarial epoch, eval_every 2
    assert hist[2]["test_pgd_acc"] is None                      # the test split keeps eval_every's pace
    weights = [ck["model"] for ck in epochs[1:]]                 # epochs 2, 3, 4 (epoch 1 is the clean stage)
    expect = {k: v.clone() for k, v in weights[0].items()}
    for w in weights[1:]:
        expect = {k: (expect[k] * 0.88 + w[k] * 0.12).to(w[k].dtype) for k in expect}
    model_pt = torch.load(run_dir / "model.pt", weights_only=True)
    assert states_equal(model_pt, expect)
    assert states_equal(epochs[-1]["fawa"]["weights"], expect)
    assert not states_equal(model_pt, epochs[-1]["model"])   # the average is not the last epoch's weights


@pytest.mark.slow
def test_a_fawa_run_trained_in_steps_equals_one_run(stepped):
    _, _, whole, part, run_dir, _ = stepped
    assert [r["epoch"] for r in part.history] == [1, 2, 3, 4] and part.complete
    keys = ("loss", "val_pgd_acc", "fawa_worst", "fawa_updated", "fawa_updates", "test_pgd_acc")
    assert [[r.get(k) for k in keys] for r in part.history] == [[r.get(k) for k in keys] for r in whole.history]
    assert states_equal(part.model.state_dict(), whole.model.state_dict())
    assert states_equal(torch.load(whole.run_dir / "model.pt", weights_only=True),
                        torch.load(run_dir / "model.pt", weights_only=True))


@pytest.mark.slow
def test_a_run_that_never_reaches_the_threshold_keeps_its_last_weights_and_says_so(stepped, tmp_path, capsys):
    cfg, data, *_ = stepped
    never = cfg.replace(fawa_threshold=1.5, fawa_class_acc="recall", epochs=2)   # recall never exceeds 1
    result = fit(never, data, tmp_path, resume=False)
    out = capsys.readouterr().out
    assert [r["fawa_updates"] for r in result.history] == [0, 0] and not result.history[-1]["fawa_updated"]
    assert "FAWA never started" in out and "fawa_threshold=1.5" in out and "kept, 0 update(s)" in out
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["fawa"] == {"weights": None, "updates": 0}
    assert states_equal(torch.load(tmp_path / "model.pt", weights_only=True), last["model"])


def test_the_epoch_line_names_the_decision():
    r = {"stage": "adversarial", "loss": 1.0, "train_clean_acc": [0.5], "train_adv_acc": [0.25],
         "test_clean_acc": None, "seconds": 1.0, "images_per_s": 10.0, "fawa_worst": 0.125, "fawa_updated": False,
         "fawa_updates": 2}
    assert "fawa worst class 0.125: kept, 2 update(s)" in progress_line(r, (3, 4), 1.0)
