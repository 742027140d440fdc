"""One writer per run folder: a second training, evaluation or sweep run into a folder another live process
holds is refused with the holder's PID and writes nothing; the lock dies with its holder (kill -9
included); the holder's own children (a sweep's notebook kernel) may write there."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_hostile_inputs import BASE, snapshot

from taetlib import cli, sweep
from taetlib.plan import Run
from taetlib.runlock import LOCK_FILE, RunLocked, run_lock

HOLD = textwrap.dedent("""
    import subprocess, sys, time
    from taetlib.runlock import run_lock
    with run_lock(sys.argv[1]):
        print("held", flush=True)
        if len(sys.argv) > 2:   # a child of the holder takes the same lock
            child = "from taetlib.runlock import run_lock\\nwith run_lock(%r): print('child ok')" % sys.argv[1]
            print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout, flush=True)
        time.sleep(120)
""")


def holder(run: Path, *extra: str) -> subprocess.Popen:
    """A real process holding the run folder's lock (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run), *extra], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def held(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    proc = holder(run)
    yield run, proc
    proc.kill()
    proc.wait()


def train_argv(run: Path, data_root: Path, **kw) -> list[str]:
    return ["train", "--run", str(run), "--set", *(f"{k}={v}" for k, v in {**BASE, "data_root": data_root,
                                                                          **kw}.items())]


def test_a_second_training_is_refused_naming_the_holder(held, tmp_path, capsys):
    run, proc = held
    before = snapshot(run)
    assert cli.main(train_argv(run, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"process {proc.pid} is training or evaluating there" in err and f"kill {proc.pid}" in err, err
    assert snapshot(run) == before


def test_an_evaluation_is_refused_while_a_training_holds_the_folder(held, capsys):
    run, proc = held
    before = snapshot(run)
    assert cli.main(["evaluate", "--run", str(run), "--attacks", "clean"]) == 2
    assert f"process {proc.pid}" in capsys.readouterr().err
    assert snapshot(run) == before


@pytest.mark.slow
def test_kill_9_leaves_no_stale_lock(tmp_path):
    """A real training killed with SIGKILL mid-run: its lock file stays, its lock does not; the same
    command then resumes and finishes, and removes the lock file."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "taetlib", *train_argv(run, tmp_path, epochs=3)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()   # the first epoch's line: training, holding the lock
    assert line.startswith("epoch"), line + proc.stdout.read()
    assert (run / LOCK_FILE).read_text().strip() == str(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / LOCK_FILE).exists()   # the file stays; the lock died with the process
    assert cli.main(train_argv(run, tmp_path, epochs=3)) == 0
    assert (run / "model.pt").exists() and not (run / LOCK_FILE).exists()


def test_a_killed_holder_frees_the_folder_at_once(held):
    run, proc = held
    with pytest.raises(RunLocked):
        with run_lock(run):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with run_lock(run):
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (run / LOCK_FILE).exists()


def test_the_holders_children_and_the_holder_itself_may_take_it(tmp_path):
    run = tmp_path / "run"
    proc = holder(run, "child")
    try:
        assert proc.stdout.readline().strip() == "child ok"
    finally:
        proc.kill()
        proc.wait()
    new = tmp_path / "new" / "run"
    with run_lock(new), run_lock(new):   # nested in one process (a notebook run in process)
        assert (new / LOCK_FILE).exists()
    assert not (tmp_path / "new").exists(), "the folders the lock made for a run that wrote nothing are removed"


def test_a_sweep_run_held_by_another_process_is_recorded_failed_and_left_alone(held):
    run, proc = held
    before = snapshot(run)
    t0 = time.time()
    rec = sweep.execute_run(Run({"method": "pgd_at", "seed": 0}, run), {})
    assert rec["status"] == "failed" and f"process {proc.pid}" in rec["error"], rec
    assert snapshot(run) == before and time.time() - t0 < 30
