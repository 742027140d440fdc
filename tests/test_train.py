import json
from contextlib import contextmanager
from functools import partial

import pytest
import torch
from torch import nn

from taetlib import numerics
from taetlib.checkpoints import CheckpointError, load_checkpoint, load_model
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.fit_state import TrainingDiverged
from taetlib.method_spec import METHODS
from taetlib.models import create_model
from taetlib.schedule import lr_at, stage_epochs
from taetlib.selection import balanced
from taetlib.train import fit


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def tiny(tiny_config):
    """TAET in RobustLT on the tiny config, 3 epochs; an epoch in well under a second."""
    return partial(tiny_config, method="taet", epochs=3, stabilization_epochs=1, eval_per_class=5, eval_pgd_steps=2,
                   robustlt=True, robustlt_b=1.0,
                   budget_rule="released")   # TAET's 1 clean epoch inside the 3 (the equal rule: test_fairness)


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def full_run(root, tmp_path_factory, tiny):
    cfg = tiny(root, eval_every=2)
    return cfg, fit(cfg, load_lt(cfg), tmp_path_factory.mktemp("full"), resume=False)


# ---------------------------------------------------------------- resume and stages
def test_resume_trains_only_the_remaining_epochs_bit_identically(full_run, root, tmp_path):
    """Every epoch is seeded from (seed, epoch), so training again from scratch would also end with the
    full run's weights: the resume itself is seen in which epochs train and in the history kept."""
    cfg, full = full_run
    data = load_lt(cfg)
    before = []

    def interrupt(record):
        before.append(record)
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, tmp_path, callback=interrupt)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    trained = []
    resumed = fit(cfg, data, tmp_path, callback=lambda r: trained.append(r["epoch"]))
    assert trained == [3]                        # epochs 1 and 2 are not trained again ...
    assert resumed.history[:2] == before         # ... and their records (timings included) are kept as written
    assert weights_equal(resumed.model, full.model)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()] == resumed.history


def test_stage_1_then_stage_2_equals_one_run(full_run, tmp_path):
    cfg, full = full_run
    data = load_lt(cfg)
    s1 = fit(cfg, data, tmp_path / "s1", stage="stabilization")
    assert [r["stage"] for r in s1.history] == ["stabilization"]
    s2 = fit(cfg, data, tmp_path / "s2", stage="adversarial", init_checkpoint=tmp_path / "s1" / "last.pt")
    assert [r["epoch"] for r in s2.history] == [1, 2, 3]   # stage 1's history carries over
    assert weights_equal(s2.model, full.model)
    # the same run_dir works too: stage 2 picks up stage 1's last.pt
    s2_same = fit(cfg, data, tmp_path / "s1", stage="adversarial")
    assert weights_equal(s2_same.model, full.model)


def test_stage_errors(root, tmp_path, tiny):
    cfg = tiny(root)
    with pytest.raises(ConfigError, match="init_checkpoint"):
        fit(cfg, load_lt(cfg), tmp_path, stage="adversarial")
    with pytest.raises(ConfigError, match="has no clean stage"):
        stage_epochs(tiny(root, method="pgd_at", robustlt=False), "stabilization")
    assert stage_epochs(tiny(root, epochs=10, stabilization_epochs=4), "adversarial") == range(5, 11)


def test_resume_refuses_other_settings(full_run):
    cfg, full = full_run
    with pytest.raises(CheckpointError, match="other settings"):
        fit(cfg.replace(lr=0.1), load_lt(cfg), full.run_dir)


# ---------------------------------------------------------------- run directory, history, checkpoints
def test_run_dir_history_and_checkpoint(full_run):
    cfg, full = full_run
    run = full.run_dir
    assert RunConfig.load(run / "config.json") == cfg
    lines = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert lines == full.history and [r["epoch"] for r in lines] == [1, 2, 3]
    ck = torch.load(run / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "cfg", "history"} <= set(ck) and ck["epoch"] == 3
    r1, r2, r3 = full.history
    assert (r1["stage"], r2["stage"]) == ("stabilization", "adversarial")
    assert r1["train_adv_acc"] is None and "loss_bcl" not in r1
    assert {"loss_bcl", "loss_hdl", "loss_rcel"} <= set(r2)
    assert len(r2["train_clean_acc"]) == len(r2["train_adv_acc"]) == 10
    assert r1["test_pgd_acc"] is None and len(r2["test_pgd_acc"]) == 10 and r3["test_pgd_acc"] is not None
    assert [r["lr"] for r in full.history] == [lr_at(cfg, e) for e in (1, 2, 3)]
    assert all(r["seconds"] > 0 and r["images_per_s"] > 0 and r["peak_mem_mb"] > 0 for r in full.history)
    # on hardware where memory_format=auto resolves to channels_last, training ran in that layout, whose
    # convolutions round differently from the contiguous one load_model returns: compare in one layout
    model = numerics.in_format(load_model(run), numerics.resolve(cfg, torch.device("cpu")).channels_last)
    assert weights_equal(model, full.model)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), full.model.eval()(x))


def test_checkpoint_mismatch_is_explained(full_run):
    _, full = full_run
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(full.run_dir / "last.pt", create_model("small_cnn", num_classes=7, in_channels=1))
    msg = str(err.value)
    assert "last.pt" in msg and "'small_cnn' with 10 classes" in msg and "expects 7 classes" in msg
    assert "load_model" in msg


def test_lr_schedule_is_multistep_in_absolute_epochs(root, tiny):
    cfg = tiny(root, epochs=100, stabilization_epochs=40, lr=0.1)
    assert [lr_at(cfg, e) for e in (1, 75, 76, 90, 91, 100)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_nan_stops_and_keeps_last_good_checkpoint(root, tmp_path, tiny):
    class Poisonable(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.poison = net, False

        def forward(self, x):
            z = self.net(x)
            return z * float("nan") if self.poison else z

    cfg = tiny(root, method="pgd_at", robustlt=False, stabilization_epochs=0)
    torch.manual_seed(0)
    model = Poisonable(create_model("small_cnn", 10, 1))
    seen = []

    def poison_after_epoch_1(record):
        seen.append(record["epoch"])
        model.poison = True

    with pytest.raises(TrainingDiverged, match="epoch 2.*last good epoch \\(1\\)"):
        fit(cfg, load_lt(cfg), tmp_path, model=model, callback=poison_after_epoch_1)
    assert seen == [1]
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 1
    assert not (tmp_path / "model.pt").exists()


NO_CUDA = ("needs a CUDA GPU: checks that train_epoch reads nothing back to the host there "
           "(torch.cuda.set_sync_debug_mode('error')); this machine has no CUDA device")


@contextmanager
def host_sync_is_an_error():
    """Inside: any CUDA call that synchronises with the host raises RuntimeError."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("method, robustlt", [(m, False) for m in sorted(METHODS)] + [("taet", True)])
def test_cuda_train_epoch_has_no_host_sync(root, method, robustlt, tiny):
    """A whole epoch of train_epoch (batches, augmentation, attack, step, tallies) under bf16 and
    channels_last, with every host sync made an error."""
    from taetlib.batches import Batches
    from taetlib.methods import build_objective, model_head
    from taetlib.train import train_epoch
    # lasat_interval=2: LAS-AT's strategy update runs inside the checked epoch too, without the official reward
    # PGD's early stop, which reads a flag back every iteration by design
    cfg = tiny(root, method=method, robustlt=robustlt, device="cuda", precision="bf16", memory_format="channels_last",
               lasat_interval=2,
               lasat_reward_early_stop=False)
    data, device = load_lt(cfg), torch.device("cuda")
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1, head=model_head(cfg)).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    objective = build_objective(cfg, data.train_counts, data.spec.default_eps)
    objective.bind(opt)   # AWP's and LAS-AT's optimiser-side state
    batches = Batches(data.train, cfg.batch_size, device, shuffle=True, augment="crop_flip", seed=cfg.seed)
    n = len(data.train)
    assert len(batches) >= 2   # several steps, so the epoch's own bookkeeping runs between them
    train_epoch(model, objective, opt, batches, 2, cfg, 10, device)   # once: per-class constants move to the GPU

    with host_sync_is_an_error(), pytest.raises(RuntimeError, match="synchroniz"):   # the control: it does catch
        torch.ones(1, device=device).item()
    with host_sync_is_an_error():
        try:
            loss_sum, parts, tally, weights = train_epoch(model, objective, opt, batches, 3, cfg, 10, device)
        except RuntimeError as e:
            pytest.fail(f"{objective.name}: train_epoch synchronised with the host: {e}")
    # and that epoch did its work: every image counted, clean (0.001-noise start) and adversarial
    seen = tally[:, 1].sum(1).tolist()
    assert seen[1] == (0 if method == "ce" else n) and seen[0] in (0, n), seen   # a uniform start reports no clean
    assert torch.isfinite(loss_sum).item() and loss_sum.item() > 0
    expected = {"taet": {"bcl", "hdl", "rcel"}, "trades": {"natural", "robust"}, "mart": {"bce", "kl"},
                "ce": set(), "pgd_at": set(), "at_bsl": set()}
    if method in expected:
        assert set(parts) == expected[method]
    assert (weights is not None) == (method == "taet")   # HARL's class weights, and only HARL's


# ---------------------------------------------------------------- evidence
@pytest.mark.slow
def test_pgd_at_is_more_robust_than_ce(root, tmp_path, tiny):
    """Same data, same seed, same schedule: adversarial training buys PGD accuracy."""
    common = dict(n_max=100, augment="none", epochs=4, stabilization_epochs=0, robustlt=False, attack_steps=2,
                  step_size=0.0625, batch_size=32, eval_every=4, eval_per_class=20, eval_pgd_steps=5)
    pgd_acc = {}
    for method in ("ce", "pgd_at"):
        cfg = tiny(root, method=method, **common)
        last = fit(cfg, load_lt(cfg), tmp_path / method).history[-1]
        pgd_acc[method] = balanced(last["test_pgd_acc"])
    assert pgd_acc["pgd_at"] > pgd_acc["ce"]
