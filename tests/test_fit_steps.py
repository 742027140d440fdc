"""Training one step at a time: stop after N epochs, inspect, continue, extend; the epoch line; the
per-class table with Wilson intervals. Stepping must end bit for bit where one uninterrupted run of
the final length ends (CPU)."""
import shutil

import pytest
import torch

from taetlib.checkpoints import CheckpointError, load_checkpoint
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.epoch_line import progress_line
from taetlib.errors import ConfigError
from taetlib.resume import Refused, check_resume, epoch_plan
from taetlib.schedule import lr_at
from taetlib.stats import wilson
from taetlib.train import fit


def tiny(root, **kw):
    """TAET, 1 clean epoch inside `epochs` (released), 2 attack steps, test every epoch on 5 per class."""
    base = dict(dataset="synthetic", data_root=str(root), imbalance_ratio=10.0, n_max=40, method="taet",
                epochs=4, stabilization_epochs=1, attack_steps=2, batch_size=64, lr=0.05, eval_every=1,
                eval_per_class=5, eval_pgd_steps=2, device="cpu", budget_rule="released", lr_milestones=[0.75])
    return RunConfig(**{**base, **kw})


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def final(root, tmp_path_factory):
    """One uninterrupted run of the final length: 4 epochs, the lr drops after epoch 3."""
    cfg = tiny(root)
    return cfg, fit(cfg, load_lt(cfg), tmp_path_factory.mktemp("final"), resume=False)


@pytest.fixture(scope="module")
def stepped(root, final, tmp_path_factory):
    """The same run planned for 3 epochs (milestone at 3, so the lrs of epochs 1-3 are the final run's),
    stopped after 1, continued to 3, then extended to 4."""
    cfg_final, _ = final
    short = cfg_final.replace(epochs=3, lr_milestones=[1.0])
    data, run = load_lt(short), tmp_path_factory.mktemp("stepped")
    first = fit(short, data, run, stop_after=1)
    first_state = {k: v.clone() for k, v in first.model.state_dict().items()}
    table = first.per_class()
    done = fit(short, data, run)
    model_pt_short = (run / "model.pt").read_bytes()
    extended = fit(cfg_final, data, run)
    return dict(short=short, run=run, first=first, first_state=first_state, table=table, done=done,
                model_pt_short=model_pt_short, extended=extended)


def test_stop_after_returns_a_result_and_the_next_call_continues(stepped):
    first, done = stepped["first"], stepped["done"]
    assert not first.complete and [r["epoch"] for r in first.history] == [1]
    assert done.complete and [r["epoch"] for r in done.history] == [1, 2, 3]
    assert done.history[0] == first.history[0]          # epoch 1 was not trained again


def test_stepping_and_extending_equal_one_uninterrupted_run(final, stepped):
    cfg, full = final
    ext = stepped["extended"]
    assert ext.complete and [r["epoch"] for r in ext.history] == [1, 2, 3, 4]
    assert same_weights(ext.model, full.model)
    assert [r["loss"] for r in ext.history] == [r["loss"] for r in full.history]
    assert [r["test_pgd_acc"] for r in ext.history] == [r["test_pgd_acc"] for r in full.history]
    assert [r["lr"] for r in ext.history] == [lr_at(cfg, e) for e in (1, 2, 3, 4)]
    a = torch.load(stepped["run"] / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], v) for k, v in full.model.state_dict().items())
    assert (stepped["run"] / "model.pt").read_bytes() != stepped["model_pt_short"]


def test_the_extension_is_recorded_in_the_history(stepped):
    ext = stepped["extended"]
    assert all("extended" not in r for r in ext.history[:3])
    note = ext.history[3]["extended"]
    assert note["epochs"] == [3, 4] and note["after_epoch"] == 3 and note["plan"] == "unchanged"
    assert note["changed"] == {"epochs": [3, 4], "lr_milestones": [[1.0], [0.75]]}
    assert load_checkpoint(stepped["run"] / "last.pt")["cfg"]["epochs"] == 4


def test_a_stopped_run_can_be_inspected_per_class_with_wilson_intervals(stepped, root):
    table, first = stepped["table"], stepped["first"]
    assert list(table.columns.get_level_values(0).unique()) == [1]          # one column group per epoch
    assert list(table.columns.get_level_values(1)[:3]) == ["recall", "low", "high"]
    assert len(table) == 10 and table.index.names == ["class", "class_name"]
    rec = first.history[0]
    assert rec["test_n"] == [5] * 10                                        # eval_per_class images per class
    for c in range(10):
        r, lo, hi = table.loc[c].iloc[0][[(1, "recall"), (1, "low"), (1, "high")]]
        assert r == rec["test_pgd_acc"][c]
        assert (lo, hi) == pytest.approx(wilson(round(r * 5), 5))
        assert lo <= r <= hi and hi - lo > 0.2                               # 5 images: a wide interval
    train = first.per_class("train", "clean")
    assert (train.xs("low", axis=1, level=1) <= train.xs("recall", axis=1, level=1)).all().all()
    with pytest.raises(ValueError, match="val_pgd_acc"):
        first.per_class("val")


def test_a_plan_that_moves_is_refused_unless_named(stepped, tmp_path):
    """Default milestones [0.75, 0.9]: at 3 epochs the lr drops after epoch 2, at 5 after epoch 3; the
    extension would then not be a 5-epoch run, so it needs new_plan=True, and the history says so."""
    short = stepped["short"]
    run = tmp_path / "run"
    shutil.copytree(stepped["run"], run)
    data = load_lt(short)
    # the stepped run's last.pt: 4 epochs, milestone [0.75] (epoch 3); at 8 epochs [0.75, 0.9] puts it at 6
    moved = short.replace(epochs=8, lr_milestones=[0.75, 0.9])
    with pytest.raises(CheckpointError, match=r"changes the plan of epochs it already trained.*"
                                              r"lr_milestones=\[0.375\].*new_plan=True"):
        fit(moved, data, run)
    assert (run / "model.pt").exists()                                     # a refusal changes nothing
    kept = moved.replace(lr_milestones=[0.375, 0.75])                        # the suggested fix keeps epoch 3's drop
    assert [epoch_plan(kept, e)["lr"] for e in range(1, 5)] == [r["lr"] for r in stepped["extended"].history]
    result = fit(moved, data, run, new_plan=True, stop_after=1)
    note = result.history[4]["extended"]
    assert note["plan"] == "new" and note["epochs"] == [4, 8] and "4" in note["plan_was"]
    assert not result.complete and not (run / "model.pt").exists()         # no stale final weights


def test_other_settings_and_shortening_are_refused(final, root):
    cfg, _ = final
    ck = {"cfg": cfg.to_dict(), "epoch": 3}
    with pytest.raises(Refused, match="other settings"):
        check_resume(ck, cfg.replace(lr=0.2), "last.pt")
    with pytest.raises(Refused, match="cannot be shortened"):
        check_resume(ck, cfg.replace(epochs=2), "last.pt")
    assert check_resume(ck, cfg.replace(device="auto"), "last.pt") is None


def test_robustlt_ramp_and_gair_weights_are_part_of_the_plan(root):
    """The lr stays, but RobustLT's radius ramp spans b * epochs: longer epochs change the radius the
    trained epochs had, so the run extended would be no run of that length."""
    old = tiny(root, robustlt=True, robustlt_b=1.0, lr_milestones=[1.0])
    new = old.replace(epochs=8, lr_milestones=[0.5])
    assert [lr_at(old, e) for e in (1, 2, 3)] == [lr_at(new, e) for e in (1, 2, 3)]
    with pytest.raises(Refused, match="aiw"):
        check_resume({"cfg": old.to_dict(), "epoch": 3}, new, "last.pt")
    g_old = tiny(root, method="gairat", robustlt=False, lr_milestones=[1.0], stabilization_epochs=0)
    g_new = g_old.replace(epochs=8, lr_milestones=[0.5])   # GAIR weights from round(epochs / 2): 2 -> 4
    with pytest.raises(Refused, match="gair_weights"):
        check_resume({"cfg": g_old.to_dict(), "epoch": 3}, g_new, "last.pt")
    assert check_resume({"cfg": g_old.to_dict(), "epoch": 1}, g_new, "last.pt")["plan"] == "unchanged"


def test_stop_after_must_be_a_positive_integer(final, tmp_path):
    cfg, _ = final
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="stop_after"):
            fit(cfg, load_lt(cfg), tmp_path, stop_after=bad)
    assert not (tmp_path / "config.json").exists()


def test_the_epoch_line_counts_the_epochs_asked_for(root, tmp_path, capsys):
    """Equal budget: TAET's 1 clean epoch comes before the 2 adversarial epochs asked for; the line counts
    each on its own (before, the first adversarial epoch read 'epoch 2/3')."""
    cfg = tiny(root, epochs=2, budget_rule="equal_adversarial", eval_every=0)
    fit(cfg, load_lt(cfg), tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split(" [")[0] for line in lines] == ["epoch 1/1", "epoch 1/2", "epoch 2/2"]
    assert "[stabilization]" in lines[0] and "[adversarial]" in lines[1]
    record = {"stage": "adversarial", "loss": 1.0, "train_clean_acc": None, "train_adv_acc": None,
              "test_clean_acc": None, "seconds": 1.0, "images_per_s": 1.0}
    assert progress_line(record, (3, 4), 0).startswith("epoch 3/4 [adversarial]")


def test_train_command_stops_continues_and_extends(tmp_path, capsys):
    from taetlib.cli import main
    args = ["train", "--run", str(tmp_path / "run"), "--set", "dataset=synthetic", f"data_root={tmp_path}",
            "method=pgd_at", "n_max=20", "attack_steps=1", "eval_every=0", "device=cpu", "lr_milestones=[1.0]"]
    assert main([*args, "epochs=2", "--stop-after", "1"]) == 0
    assert "epoch 1/2" in capsys.readouterr().out and not (tmp_path / "run" / "model.pt").exists()
    assert main([*args, "epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "epoch 1/2" not in out and (tmp_path / "run" / "model.pt").exists()
    assert main([*args, "epochs=4", "lr_milestones=[0.25]"]) == 2              # epoch 2's lr would move
    assert "--new-plan" in capsys.readouterr().err
    assert main([*args, "epochs=4", "lr_milestones=[0.25]", "--new-plan"]) == 0
    assert [line.split(" [")[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith("epoch ")] == ["epoch 3/4", "epoch 4/4"]
