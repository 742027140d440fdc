"""Hostile inputs, round two (issue 24): a device the machine lacks, an evaluation of a folder that holds
no run, a diverging training, a sweep whose plan holds bad cells, and a constant predictor. Each is
driven through the path a user takes (the CLI in process, a sweep's run, evaluate()), and a refused one
leaves its folder exactly as it was. The run-folder lock has its own file (test_runlock.py)."""
import re
import shutil

import pandas as pd
import pytest
import torch
from conftest import run_notebook
from test_hostile_inputs import BASE, snapshot
from torch import nn

from taetlib import cli, plan, runs, sweep
from taetlib import evaluate as ev
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError


def train_argv(run, data_root, **kw) -> list[str]:
    return ["train", "--run", str(run), "--set", *(f"{k}={v}" for k, v in {**BASE, "data_root": data_root,
                                                                          **kw}.items())]


def refused(argv, capsys, status=2) -> str:
    """Runs the CLI in process; asserts one `error:` line and the exit status; returns the message."""
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == status, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("error: ")


# ---------------------------------------------------------------- 1. a device this machine lacks
def test_a_cuda_device_on_a_machine_without_one_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    msg = refused(train_argv(run, tmp_path, device="cuda:7"), capsys)
    assert msg.startswith("device='cuda:7': this machine has no CUDA device") and "device='cpu'" in msg, msg
    assert "device='auto'" in refused(train_argv(run, tmp_path, device="cuda"), capsys)
    assert snapshot(run) is None


def test_a_cuda_index_beyond_the_gpus_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    msg = refused(train_argv(tmp_path / "run", tmp_path, device="cuda:7"), capsys)
    assert msg.startswith("device='cuda:7': this machine has 2 CUDA device(s), cuda:0 .. cuda:1"), msg
    assert snapshot(tmp_path / "run") is None


def test_a_device_spelt_wrong_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"device='cuda:x': use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        RunConfig(device="cuda:x")


# ---------------------------------------------------------------- 2. evaluate on a folder that holds no run
@pytest.mark.parametrize("folder", ["absent", "empty", "bad_json"])
def test_evaluate_on_a_folder_without_a_run_is_refused(folder, tmp_path, capsys):
    run = tmp_path / "run"
    if folder != "absent":
        run.mkdir()
    if folder == "bad_json":
        (run / "config.json").write_text('{"epochs": 3,')   # cut off mid-write
    before = snapshot(run)
    msg = refused(["evaluate", "--run", str(run)], capsys)
    want = r"config=.*config\.json.: is not a JSON file" if folder == "bad_json" else \
        rf"run='{run}': (holds no config\.json|is no folder), so how its model was built is unknown\. Fix: a folder " \
        r"`train --run` wrote; for weights trained elsewhere: evaluate --weights"
    assert re.match(want, msg), msg
    assert snapshot(run) == before


# ---------------------------------------------------------------- 3. divergence
def test_divergence_is_one_error_line_with_its_own_exit_status(tmp_path, capsys):
    run = tmp_path / "run"
    msg = refused(train_argv(run, tmp_path, lr=1e8), capsys, status=cli.EXIT_DIVERGED)
    assert cli.EXIT_DIVERGED not in (0, 1, cli.EXIT_REFUSED)
    assert re.match(r"training diverged: epoch 1: mean training loss is (nan|inf|-inf) ", msg), msg
    assert "no checkpoint was written" in msg and "Fix: lower lr" in msg, msg
    assert not (run / "last.pt").exists() and not (run / "model.pt").exists()


def test_a_sweep_marks_a_diverged_run_failed_with_the_reason(tmp_path, monkeypatch):
    """The run's notebooks run in this process (as a kernel would run their cells); the divergence is
    the notebook's exception, and the sweep records it as the run's error."""
    monkeypatch.setattr(sweep, "execute", lambda nb, out, params, timeout=None: run_notebook(nb, params))
    s = plan.Sweep(tmp_path / "sw", "synthetic", [5], [("pgd_at", False)], [0],
                    config={k: v for k, v in BASE.items() if k not in ("dataset", "imbalance_ratio", "method")}
                    | {"lr": 1e8, "data_root": str(tmp_path)})
    (run,) = s.plan()
    rec = sweep.execute_run(run, {"attacks": ["clean"]})
    assert rec["status"] == "failed" and rec["error"].startswith("TrainingDiverged: epoch 1: mean training loss")
    assert "no checkpoint was written" in rec["error"] and (run.dir / runs.FAILED).exists()


# ---------------------------------------------------------------- 4. a sweep plan with bad cells
def test_a_sweep_with_bad_cells_is_refused_whole_before_it_writes(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", "--dataset", "synthetic", "--irs", "0", "10", "--methods", "nosuch", "pgd_at", "--seeds", "0",
            "--attacks", "clean", "pgd21", "--set", f"data_root={tmp_path}", "--out", str(out)]
    msg = refused(argv, capsys)
    assert msg.startswith("the sweep plan has 4 bad cell(s); nothing was written or started: "), msg
    cells = msg.split("started: ", 1)[1].split(" | ")
    assert any(c.startswith("synthetic-ir0/nosuch/seed0, synthetic-ir10/nosuch/seed0: method='nosuch': unknown")
               for c in cells), cells
    assert any(c.startswith("synthetic-ir0/pgd_at/seed0: imbalance_ratio=0.0: must be >= 1") for c in cells), cells
    assert any(c.startswith("evaluation: attacks='pgd21': unknown") for c in cells), cells
    assert not out.exists()
    # the launcher's settings are part of the plan: nothing is submitted either
    slurm = refused([*argv[:-2], "--out", str(out), "--launcher", "slurm", "--cpus-per-run", "0"], capsys)
    assert "launcher: cpus_per_run (--cpus-per-run)=0: expected a whole number >= 1" in slurm, slurm
    assert not out.exists()
    with pytest.raises(ConfigError, match="bad cell"):   # the library entry points refuse the same way
        sweep.run_sweep(plan.Sweep(out, "synthetic", [0], [("pgd_at", False)], [0]), aggregate_only=True)
    assert not out.exists()


def test_slurm_without_sbatch_is_refused_before_anything_is_submitted(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "sw"
    msg = refused(["sweep", "--dataset", "synthetic", "--methods", "pgd_at", "--out", str(out), "--launcher", "slurm"],
                  capsys)
    assert "launcher: --launcher='slurm': no `sbatch` on this machine's PATH" in msg, msg
    assert not out.exists()


def test_a_robust_attack_that_is_not_run_is_a_bad_cell(tmp_path):
    s = plan.Sweep(tmp_path / "sw", "synthetic", [10], [("pgd_at", False)], [0], robust_attack="autoattack")
    want = r"evaluation: robust_attack='autoattack': unknown; choose one of \['pgd20'\]"
    with pytest.raises(ConfigError, match=want):
        plan.check_plan(s)


# ---------------------------------------------------------------- 6. a constant predictor
class OneClass(nn.Module):
    """Answers class 9 whatever the image: a large bias, tiny weights (its input gradient is not zero)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(28 * 28, 10)
        with torch.no_grad():
            self.lin.weight.mul_(1e-4)
            self.lin.bias.copy_(torch.tensor([0.0] * 9 + [10.0]))

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_a_constant_predictor_raises_a_sanity_flag(tmp_path):
    torch.manual_seed(0)
    data = load_lt(RunConfig(dataset="synthetic", imbalance_ratio=10, data_root=str(tmp_path)), save=False)
    with pytest.warns(UserWarning, match="fewer than 30 test images"):
        r = ev.evaluate(OneClass(), data, ["pgd20"], per_class=6, eps=0.1)
    flags = r.flags.set_index("flag")
    assert not flags.drop("one_class_only").raised.any()   # what every other check says: nothing
    flag = flags.loc["one_class_only"]
    assert flag.raised and flag.classes == "9" and "answers one class whatever the image" in flag.detail
    assert r.summary.raised_flags.str.contains("one_class_only").all()
    assert isinstance(r.raised, pd.DataFrame) and "one_class_only" in set(r.raised.flag)


class IgnoresInput(nn.Module):
    """Logits from a bias alone: the output does not depend on the image at all (no input gradient exists)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0] * 9 + [10.0]))

    def forward(self, x):
        return self.bias.expand(len(x), -1)


def test_a_model_that_ignores_its_input_is_evaluated_and_named_not_a_crash(tmp_path):
    """Every attack (ours and pyautoattack's) meets a model without an input gradient: each reads robust =
    clean, and the zero-gradient and one-class flags say why that measures nothing."""
    data = load_lt(RunConfig(dataset="synthetic", imbalance_ratio=10, data_root=str(tmp_path)), save=False)
    with pytest.warns(UserWarning, match="fewer than 30 test images"):
        r = ev.evaluate(IgnoresInput(), data, ["clean", "fgsm", "pgd20", "apgd_ce"], per_class=4, eps=0.1)
    correct = r.table.groupby("attack").correct.sum()
    assert (correct == correct["clean"]).all() and correct["clean"] > 0
    flags = r.flags.set_index("flag")
    zero = flags.loc["zero_gradients"]
    assert zero.raised and zero.detail.startswith(f"{int(r.table[r.table.attack == 'clean'].n.sum())} of ")
    assert flags.loc["one_class_only"].raised
