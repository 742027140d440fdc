"""Sweeps through submitit (--launcher slurm): the sbatch script it renders, the torchrun commands of a
multi-GPU job, and real jobs through submitit's local executor: the same code path as on a cluster,
each job a subprocess running the papermill pipeline of one run."""
import argparse
import json
import os
import shlex
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import submitit

from taetlib import cli, launchers, plan, report, runs, sweep
from taetlib.errors import ConfigError

SMOKE = ["--dataset", "synthetic", "--seeds", "0", "--eval-per-class", "5", "--eval-param", "pgd20.steps=3",
         "--set", "n_max=60", "test_per_class=20", "epochs=2", "stabilization_epochs=1", "attack_steps=2",
         "eval_every=0", "batch_size=64", "device=cpu"]


def parse(*argv):
    p = argparse.ArgumentParser()
    sweep.add_cli(p.add_subparsers(dest="command"))
    return p.parse_args(["sweep", *argv])


# ------------------------------------------------------------------------------ fast: what is submitted
def test_sbatch_script_carries_the_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun on this machine
    args = parse("--launcher", "slurm", "--partition", "gpu", "--time-limit", "90", "--gpus-per-run", "2",
                 "--max-parallel", "7", "--sbatch", "account=my_lab", "qos=high")
    settings = launchers.slurm_from_args(args)
    ex = launchers.executor(settings, tmp_path)
    assert isinstance(ex._executor, submitit.SlurmExecutor)
    script = ex._executor._make_submission_file_text("python -m submitit.core._submit X", "uid")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=2", "--cpus-per-task=16", "--ntasks-per-node=1",
                 "--nodes=1", "--account=my_lab", "--qos=high", "--signal=USR2@", "--job-name=taet-sweep"):
        assert f"#SBATCH {line}" in script, (line, script)
    assert "--partition" not in launchers.executor(launchers.SlurmSettings(), tmp_path)._executor. \
        _make_submission_file_text("x", "uid")   # no partition given: the cluster's default
    assert ex._executor.parameters["array_parallelism"] == 7


@pytest.mark.parametrize("field, value, message", [("cluster", "pbs", "cluster='pbs'"),
                                                   ("gpus_per_run", -1, r"gpus_per_run=-1 \(--gpus-per-run\)"),
                                                   ("time_min", 0, r"time_min=0 \(--time-limit\)")])
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        launchers.SlurmSettings(**{field: value})


def test_torchrun_inside_a_job_with_several_gpus(tmp_path):
    assert launchers.train_commands(tmp_path, {"method": "taet", "stabilization_epochs": 2}, 1) == []
    taet = launchers.train_commands(tmp_path, {"method": "taet", "stabilization_epochs": 2}, 4)
    assert [c[:4] for c in taet] == [["torchrun", "--standalone", "--nproc_per_node=4", "-m"]] * 2
    assert taet[0][-4:] == ["--run", str(tmp_path / "stage1"), "--stage", "stabilization"]
    assert taet[1][-6:] == ["--run", str(tmp_path), "--stage", "adversarial", "--init",
                            str(tmp_path / "stage1" / "last.pt")]
    one = launchers.train_commands(tmp_path, {"method": "pgd_at"}, 2)
    assert len(one) == 1 and one[0][-2:] == ["--stage", "all"] and "--config" in one[0]


def test_train_refuses_config_and_preset_together(tmp_path, capsys):
    assert cli.main(["train", "--run", str(tmp_path), "--config", "c.json", "--preset", "fmnist_lt_demo"]) == 2
    assert "give one of them" in capsys.readouterr().err


# ------------------------------------------------------------------------------ real jobs (local executor)
def task_pid(job) -> int:
    """The job's task: the child of submitit's local controller that runs the pickled call."""
    controller = job._process.pid
    kids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and (p / "stat").exists()
            and _ppid(p) == controller]
    assert len(kids) == 1, kids
    return kids[0]


def _ppid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.slow
def test_a_2x2_grid_through_submitit_finishes_skips_and_aggregates(tmp_path, one_thread, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", *SMOKE, f"data_root={tmp_path / 'data'}", "--irs", "5", "10", "--methods", "pgd_at", "at_bsl",
            "--out", str(out), "--launcher", "slurm", "--submitit-cluster", "local"]
    assert cli.main(argv) == 0, capsys.readouterr().out
    status = pd.read_csv(out / "runs.csv")
    assert len(status) == 4 and (status.status == "done").all()
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert len({j["job"] for j in jobs}) == 4 and {j["run"] for j in jobs} == set(status.run)
    agg = pd.read_csv(out / "aggregate.csv")
    assert len(agg) == 2 * 2 * 2 * len(report.METRICS) and set(agg.arm) == {"pgd_at", "at_bsl"}
    assert (out / "report.html").exists()

    capsys.readouterr()
    assert cli.main(argv) == 0   # again: every run finished, so no job is submitted
    assert "submitted 0 job(s)" in capsys.readouterr().out
    again = pd.read_csv(out / "runs.csv")
    assert (again.status == "done").all() and again.resumed.all() and (again.seconds == status.seconds).all()

    gone = out / "synthetic-ir10" / "at_bsl" / "seed0" / runs.DONE
    gone.unlink()   # as if its job were still running: aggregate-only says so and reports the rest
    (out / "aggregate.csv").unlink()
    assert cli.main([*argv, "--aggregate-only"]) == 1
    status = pd.read_csv(out / "runs.csv").set_index("run")
    assert (status.status == "done").sum() == 3
    assert "no DONE.json or FAILED.json" in status.loc[str(gone.parent), "error"]
    assert set(pd.read_csv(out / "aggregate.csv").arm) == {"pgd_at", "at_bsl"}   # at_bsl from IR 5


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path, one_thread):
    s = plan.sweep_from_args(parse(*SMOKE, f"data_root={tmp_path / 'data'}", "epochs=12", "--methods", "pgd_at",
                                    "--out", str(tmp_path / "sw")))
    [run] = s.plan()
    assert sweep.prepare_data(run.dir.parents[1], run.config)["error"] == ""
    [job] = launchers.submit_runs(sweep.execute_run, [(run, s.evaluation, None)],
                                  launchers.SlurmSettings(cluster="local"), tmp_path / "sw" / "slurm")
    history, deadline = run.dir / "history.jsonl", time.time() + 300
    while not (history.exists() and len(history.read_text().splitlines()) >= 2):
        assert time.time() < deadline and not job.done(), job.stderr()
        time.sleep(0.2)
    os.kill(task_pid(job), signal.SIGUSR2)   # what Slurm sends the job before a time-out or preemption
    before = history.read_text().splitlines()
    row = job.result()
    assert row["status"] == "done", row
    after = history.read_text().splitlines()
    assert len(before) < 12 and [json.loads(r)["epoch"] for r in after] == list(range(1, 13))
    assert after[:len(before)] == before   # epochs trained before the signal were kept, not trained again
    log = job.stderr() + job.stdout()
    assert "requeu" in log.lower(), log[-2000:]


def test_the_cluster_page_commands_parse(tmp_path):
    page = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"
    section = page.read_text().split("## On a Slurm cluster", 1)[1]
    commands = [c for c in section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ").splitlines()
                if c.startswith("python -m taetlib sweep")]
    assert len(commands) == 3
    for c in commands:
        args = parse(*shlex.split(c)[4:])
        s = plan.sweep_from_args(args)
        assert s.plan() and (args.aggregate_only or args.launcher == "slurm")
        if args.launcher == "slurm":
            assert launchers.slurm_from_args(args).parameters()["timeout_min"] == args.time_limit
