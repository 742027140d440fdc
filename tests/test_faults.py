"""Interruption and faults: a training process killed with SIGKILL and run again ends with the same
weights, bit for bit; half-written files are never read; a full or unwritable disk is refused before
training starts; a sweep killed mid-way and started again redoes only its unfinished runs."""
import csv
import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import taetlib.run_files as run_files
from taetlib.checkpoints import load_checkpoint
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.train import fit

ROOT = Path(__file__).resolve().parents[1]
# 4 epochs of ~200 synthetic images: ~0.3 s an epoch
COMMON = ["dataset=synthetic", "imbalance_ratio=5", "n_max=60", "epochs=4", "attack_steps=2", "batch_size=32",
          "lr=0.05", "eval_every=2", "eval_per_class=5", "eval_pgd_steps=2", "device=cpu"]
SETTINGS = {   # TAET (1 clean + 3 HARL epochs) in RobustLT; LAS-AT, whose strategy network is state in last.pt
    "taet": COMMON + ["stabilization_epochs=1", "robustlt=true", "robustlt_b=1.0", "budget_rule=released"],
    "las_at": COMMON + ["method=las_at", "lasat_strategy_model=small_cnn", "lasat_interval=3",
                        "lasat_iter_choices=[1,2]", "lasat_reward_steps=2"],
}


def train_cmd(run: Path, data_root: Path, method: str) -> list[str]:
    return [sys.executable, "-m", "taetlib", "train", "--run", str(run), "--set", *SETTINGS[method],
            f"data_root={data_root}"]


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}   # OMP_NUM_THREADS=1 comes with os.environ (conftest)


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def uninterrupted(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    run = tmp / "uninterrupted"
    done = subprocess.run(train_cmd(run, tmp / "data", request.param), cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return run, tmp / "data", request.param


def same_tensors(a, b) -> bool:
    """Nested dicts / lists of tensors and plain values, equal bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


@pytest.mark.slow
def test_kill_9_then_same_command_resumes_bit_identically(uninterrupted, tmp_path):
    """SIGKILL at a random moment of epoch 2 (its steps, its evaluation or its checkpoint write), plus a
    half-written last.pt.tmp as a kill inside torch.save leaves; the same command then finishes the run.
    For LAS-AT the strategy network and its optimiser in last.pt end the same too."""
    ref, data_root, method = uninterrupted
    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(run, data_root, method), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:   # fit prints an epoch's line after its checkpoint is on disk
        if line.startswith("epoch 1/"):
            break
    clean_epoch = float(re.search(r"([\d.]+) s/epoch", line).group(1))   # epoch 2 (adversarial) takes longer
    time.sleep(random.uniform(0, clean_epoch))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (run / "model.pt").exists()
    # the history never lists an epoch that last.pt does not hold
    kept = history(run)
    assert [r["epoch"] for r in kept] == [r["epoch"] for r in load_checkpoint(run / "last.pt")["history"]]
    assert kept and kept[-1]["epoch"] < 4
    (run / "last.pt.tmp").write_bytes((run / "last.pt").read_bytes()[:5000])

    again = subprocess.run(train_cmd(run, data_root, method), cwd=ROOT, env=env(), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    # a resume, not a rerun from scratch (which seeding per epoch would make end with the same weights):
    # the second process trains only the epochs after last.pt's, and keeps the records of those before
    trained = [int(m) for m in re.findall(r"^epoch (\d+)/4 ", again.stdout, re.M)]
    assert trained == list(range(kept[-1]["epoch"] + 1, 5)), again.stdout
    assert history(run)[:len(kept)] == kept
    a, b = torch.load(ref / "model.pt", weights_only=True), torch.load(run / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = load_checkpoint(ref / "last.pt")["objective"]
    assert same_tensors(state, load_checkpoint(run / "last.pt")["objective"])
    assert bool(state) == (method == "las_at")
    assert [r["loss"] for r in history(run)] == [r["loss"] for r in history(ref)]
    assert [r["test_pgd_acc"] for r in history(run)] == [r["test_pgd_acc"] for r in history(ref)]
    assert not list(run.glob("*.tmp"))


# ---------------------------------------------------------------- disk
@pytest.fixture(scope="module")
def small(tmp_path_factory, tiny_config):
    cfg = tiny_config(tmp_path_factory.mktemp("data"), imbalance_ratio=5.0, n_max=30, method="pgd_at", attack_steps=1,
                      lr=0.1)
    return cfg, load_lt(cfg)


def nothing_written(run: Path) -> bool:
    return not run.exists() or not any((run / f).exists() for f in run_files.RUN_FILES)


def test_disk_full_is_refused_before_training(small, tmp_path, monkeypatch):
    cfg, data = small
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(run_files.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(ConfigError, match=r"run_dir=.*only 0\.0 MiB free .* writes about .* MiB.*Fix: free space"):
        fit(cfg, data, tmp_path / "run")
    assert nothing_written(tmp_path / "run")


@pytest.mark.parametrize("where", ["under_a_file", "proc", "read_only_dir"])
def test_unwritable_run_dir_is_refused_before_training(small, tmp_path, where):
    cfg, data = small
    if where == "under_a_file":
        (tmp_path / "a_file").write_text("")
        run, expect = tmp_path / "a_file" / "run", r"a_file is a file, not a directory\. Fix"
    elif where == "proc":   # not writable even for root
        run, expect = Path("/proc/taet-run"), r"/proc is not writable .*Fix: choose a writable run directory"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories; the /proc case covers it")
        (tmp_path / "ro").mkdir(mode=0o500)
        run, expect = tmp_path / "ro" / "run", r"ro is not writable \(Permission denied\).*chmod u\+w"
    with pytest.raises(ConfigError, match="run_dir=.*" + expect):
        fit(cfg, data, run)
    assert nothing_written(run)


def test_disk_filling_up_mid_run_keeps_the_last_checkpoint(small, tmp_path, monkeypatch):
    cfg, data = small
    real_save, calls = torch.save, []

    def save_then_fill_up(obj, path):
        calls.append(path)
        if len(calls) > 1:   # epoch 2's checkpoint: half written, then the disk is full
            Path(path).write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, path)

    monkeypatch.setattr(run_files.torch, "save", save_then_fill_up)
    with pytest.raises(OSError, match=r"could not write .*last\.pt \(No space left on device\); the previous last\.pt "
                                      r"is intact\. Fix: free space there, then run the same command again"):
        fit(cfg, data, tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1 and not list(tmp_path.glob("*.tmp"))
    assert [r["epoch"] for r in history(tmp_path)] == [1]
    trained = []
    resumed = fit(cfg, data, tmp_path, callback=lambda r: trained.append(r["epoch"]))   # and the run then resumes
    assert trained == [2] and [r["epoch"] for r in resumed.history] == [1, 2]


# ---------------------------------------------------------------- sweeps
DRIVER = """
import json, os, sys, time
from taetlib import cli, sweep

def execute(notebook, out, params, *_, **__):   # stands in for papermill: logs, waits, writes
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps({"notebook": notebook, "run": params.get("run_dir", "")}) + "\\n")
    with open(sys.argv[1]) as f:
        started = sum('"03_harl_stage"' in line for line in f)
    time.sleep(60 if started == int(os.environ.get("HANG_IN_RUN", 0)) else 0.05)   # wait there for the kill
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("{}")

sweep.execute = execute
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_killed_sweep_redoes_only_unfinished_runs(tmp_path):
    """A real sweep process killed with SIGKILL in its third run of four; the same command then runs
    the third and the fourth, and neither of the two that had finished."""
    driver, log, out = tmp_path / "driver.py", tmp_path / "log.jsonl", tmp_path / "sweep"
    driver.write_text(DRIVER)
    argv = [sys.executable, str(driver), str(log), "sweep", "--dataset", "synthetic", "--irs", "10", "--methods",
            "pgd_at", "ce", "--seeds", "0", "1", "--set", "epochs=2", f"data_root={tmp_path / 'data'}",
            "--out", str(out)]

    def runs_logged():
        lines = log.read_text().splitlines(keepends=True) if log.exists() else []
        return [x["run"] for x in map(json.loads, (ln for ln in lines if ln.endswith("\n")))
                if x["notebook"] == "03_harl_stage"]

    proc = subprocess.Popen(argv, cwd=ROOT, env={**env(), "HANG_IN_RUN": "3"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(runs_logged()) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)   # inside run 3's first notebook
    proc.wait(timeout=30)
    first = runs_logged()
    assert len(first) == 3, first
    finished = [r for r in first if (Path(r) / "DONE.json").exists()]
    assert finished == first[:2]

    log.unlink()
    again = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    redone = runs_logged()
    assert redone[0] == first[2] and len(redone) == 2 and not set(redone) & set(finished), (redone, again.stdout)
    with open(out / "runs.csv") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    status = {r: (row["status"], row["resumed"]) for r, row in rows.items()}
    assert status == {**{r: ("done", "True") for r in finished}, **{r: ("done", "False") for r in redone}}
    for r in finished:   # the record of the earlier invocation: its time, not 0
        assert float(rows[r]["seconds"]) == json.loads((Path(r) / "DONE.json").read_text())["seconds"] > 0


POOL = """
import os, signal, sys, time
from taetlib.parallel import pmap

def work(i):   # a run that takes long: says where it runs, then waits for the kill
    if i >= 0:
        open(os.path.join(sys.argv[1], f"worker{os.getpid()}"), "w").close()
        time.sleep(120)
    return i

if __name__ == "__main__":
    pmap(work, [(-1,), (-2,)], 2)   # a pool that ends normally gives SIGTERM its own handler back
    print("restored" if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else "not restored", flush=True)
    pmap(work, [(i,) for i in range(4)], 2)
"""


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_sigterm_to_a_parallel_sweep_ends_its_workers_too(tmp_path):
    """`kill PID` reaches the sweep's process alone; its pool workers (each running a notebook) used to run on
    after it died. Now they end with it, and the process exits with 128 + SIGTERM."""
    script = tmp_path / "pool.py"
    script.write_text(POOL)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 90
    while len(list(tmp_path.glob("worker*"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = [int(p.name.removeprefix("worker")) for p in tmp_path.glob("worker*")]
    try:
        assert len(workers) == 2 and proc.poll() is None, proc.communicate(timeout=5)[0] if proc.poll() else workers
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode == 128 + signal.SIGTERM and "restored" in out.split() and "not restored" not in out, out
        deadline = time.time() + 10
        while any(map(alive, workers)) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(map(alive, workers)), [w for w in workers if alive(w)]
    finally:
        for pid in filter(alive, workers):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
