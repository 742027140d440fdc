"""Launchers beyond the local pool: each run of a sweep as one Slurm job, through submitit.

`sweep --launcher slurm` hands every unfinished run to submit_runs(): one job per run (submitted as a
Slurm job array), each calling the same function the local pool calls (sweep.execute_run: the
papermill pipeline of that run, DONE.json / FAILED.json written by the job itself). The submit host
builds the dataset splits first and does not wait unless asked; `sweep --aggregate-only` reads the
runs' records once the jobs are done.

Preemption and time-outs: Slurm signals the job (USR2, signal_delay_s before the end); submitit then
calls RunJob.checkpoint, which resubmits the same call, and the rerun resumes from the run's last.pt
(train.fit resumes exactly; a finished notebook stage resumes at its last epoch and only redraws).

GPUs per run > 1: the job first trains each stage under `torchrun --standalone` (DDP on the job's
GPUs, `python -m taetlib train --config ...`), then runs the notebooks, whose fit() finds the
finished last.pt and only records, plots and evaluates.
`cluster="local"` runs the same jobs as subprocesses on this machine (submitit's LocalExecutor):
the tests, or a workstation without Slurm.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from .config import RunConfig, parse_sets
from .errors import ConfigError

__all__ = ["CLUSTERS", "RUN_CONFIG", "RunJob", "SlurmSettings", "add_slurm_arguments", "executor", "job_result",
           "slurm_from_args", "submit_runs", "train_commands"]

CLUSTERS = ("slurm", "local")
RUN_CONFIG = "launcher-config.json"   # the run's RunConfig, read by `taetlib train --config` under torchrun


@dataclass
class SlurmSettings:
    partition: str | None = None
    time_min: int = 24 * 60             # wall-clock limit of one run's job
    gpus_per_run: int = 1               # > 1: torchrun inside the job (DDP on that node)
    cpus_per_run: int | None = None     # default: 8 per GPU (data loading, the attack's Python)
    extra: dict = field(default_factory=dict)   # more sbatch settings, e.g. {"account": "x", "qos": "high"}
    max_parallel: int = 256             # array jobs running at once
    cluster: str = "slurm"              # "local": submitit's LocalExecutor
    wait: bool = False                  # wait for the jobs, then aggregate (the local cluster always waits)

    def __post_init__(self):
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"cluster={self.cluster!r}: expected one of {list(CLUSTERS)}.")
        for name in ("time_min", "gpus_per_run", "max_parallel"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "gpus_per_run" else 1):
                flag = {"time_min": "--time-limit"}.get(name, "--" + name.replace("_", "-"))
                raise ConfigError(f"{name}={v!r} ({flag}): expected a whole number >= "
                                  f"{0 if name == 'gpus_per_run' else 1}.")

    def parameters(self) -> dict:
        """submitit's AutoExecutor parameters (slurm_* ones are ignored by the local executor)."""
        gpus = self.gpus_per_run
        params = {"timeout_min": self.time_min, "gpus_per_node": gpus, "tasks_per_node": 1, "nodes": 1,
                  "cpus_per_task": self.cpus_per_run or 8 * max(gpus, 1), "name": "taet-sweep",
                  "slurm_array_parallelism": self.max_parallel,
                  "slurm_additional_parameters": dict(self.extra)}
        if self.partition:
            params["slurm_partition"] = self.partition
        return params


def executor(settings: SlurmSettings, folder: Path) -> submitit.AutoExecutor:
    """The executor for one sweep; its logs and pickles go to `folder` (one subfolder per job)."""
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=settings.cluster)
    ex.update_parameters(**settings.parameters())
    return ex


# ------------------------------------------------------------------------------ inside the job
def train_commands(run_dir: Path, config: dict, gpus: int) -> list[list[str]]:
    """The torchrun commands that train a run's stages on `gpus` GPUs (none for one GPU: the
    notebooks train in their kernel). TAET with a stabilisation stage trains it into run_dir/stage1
    first, as notebook 02 does, and stage 2 from there, as notebook 03 does."""
    if gpus <= 1:
        return []
    base = ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", "taetlib", "--", "train",
            "--config", str(run_dir / RUN_CONFIG)]
    if RunConfig.from_dict(config).clean_stage_epochs() > 0:   # plugins load first: the job's own import
        return [[*base, "--run", str(run_dir / "stage1"), "--stage", "stabilization"],
                [*base, "--run", str(run_dir), "--stage", "adversarial",
                 "--init", str(run_dir / "stage1" / "last.pt")]]
    return [[*base, "--run", str(run_dir), "--stage", "all"]]


class RunJob(submitit.helpers.Checkpointable):
    """One run as a job: `fn(run, *args)` (sweep.execute_run), after its torchrun training when the
    job has several GPUs. Checkpointable: on preemption or time-out submitit resubmits the same call,
    which resumes from the run's checkpoints."""

    def __init__(self, fn, gpus: int = 1):
        self.fn, self.gpus = fn, gpus

    def __call__(self, run, *args):
        commands = train_commands(run.dir, run.config, self.gpus) if not run.error else []
        if commands:
            run.dir.mkdir(parents=True, exist_ok=True)
            (run.dir / RUN_CONFIG).write_text(json.dumps(run.config, indent=2) + "\n")
            for cmd in commands:
                done = subprocess.run(cmd, env=os.environ.copy())
                if done.returncode:   # the notebooks would train it again on one GPU: record the failure instead
                    run.error = f"torchrun training failed (exit {done.returncode}): {' '.join(cmd)}"
                    break
        return self.fn(run, *args)


# ------------------------------------------------------------------------------ the submit host
def submit_runs(fn, items: list[tuple], settings: SlurmSettings, folder: Path) -> list:
    """One job per item (run, *args) of fn; returns the submitit jobs in item order."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    if items:
        ex, job_fn = executor(settings, folder), RunJob(fn, settings.gpus_per_run)
        with ex.batch():   # one sbatch call: a job array
            jobs = [ex.submit(job_fn, *item) for item in items]
    record = [{"job": j.job_id, "run": str(item[0].dir)} for j, item in zip(jobs, items)]
    (folder / "jobs.json").write_text(json.dumps(record, indent=2) + "\n")
    return jobs


def job_result(job, run) -> dict | None:
    """The status row a finished job returned; None when it died without one (killed, out of memory:
    the job's log says why)."""
    try:
        return job.result()
    except Exception as e:   # submitit's FailedJobError / UncompletedJobError: the run is recorded by the caller
        print(f"job {job.job_id} for {run.dir} ended without a result: {str(e)[-400:]}", file=sys.stderr)
        return None


def add_slurm_arguments(p) -> None:
    """The sweep subcommand's cluster flags (--launcher slurm), read back by slurm_from_args."""
    g = p.add_argument_group("cluster", "--launcher slurm: one Slurm job per run, through submitit")
    g.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: a process pool on this machine (--jobs); slurm: one job per unfinished run")
    g.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    g.add_argument("--time-limit", type=int, default=24 * 60, metavar="MINUTES",
                   help="wall-clock limit of one run's job")
    g.add_argument("--gpus-per-run", type=int, default=1, help="GPUs of one run's job (> 1: torchrun inside the job)")
    g.add_argument("--cpus-per-run", type=int, help="CPUs of one run's job (default: 8 per GPU)")
    g.add_argument("--max-parallel", type=int, default=256, help="jobs of the array running at once")
    g.add_argument("--sbatch", nargs="*", default=[], metavar="KEY=VALUE",
                   help="more sbatch settings, e.g. account=my_lab qos=high constraint=a100")
    g.add_argument("--wait", action="store_true", help="wait for the jobs, then aggregate (default: submit and return)")
    g.add_argument("--submitit-cluster", choices=CLUSTERS, default="slurm",
                   help="local: the same jobs as subprocesses here, through submitit's local executor (no Slurm)")
    g.add_argument("--aggregate-only", action="store_true",
                   help="run nothing: read what the runs recorded, write the aggregate and the report")


def slurm_from_args(args) -> SlurmSettings:
    return SlurmSettings(partition=args.partition, time_min=args.time_limit, gpus_per_run=args.gpus_per_run,
                         cpus_per_run=args.cpus_per_run, extra=parse_sets(args.sbatch),
                         max_parallel=args.max_parallel, cluster=args.submitit_cluster, wait=args.wait)
