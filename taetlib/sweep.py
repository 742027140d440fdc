"""Sweeps: the notebook pipeline run by papermill across imbalance ratio x method x seed.

Layout of a sweep `root` (default runs/<preset or sweep-dataset>):
    sweep.json                              what was asked
    sessions/                               when each local invocation ran (sessions.py): the wall time
    <dataset>-ir<IR>/[split_seed<S>/]01_dataset_creation.ipynb   splits built once per IR and split seed
                                            (split_seed follows seed unless the config fixes it)
    <dataset>-ir<IR>/<method>[+robustlt]/seed<S>/  one run: executed notebooks 02 (TAET only),
        03, 04, config, history, checkpoints, eval/ tables, figures/; DONE.json written last
        (a run holding it is skipped), FAILED.json with the error when it failed
    runs.csv, metrics.csv, aggregate.csv    status per run; metrics per run; mean/std over seeds
    health.csv                              each run's health gate (did it train, and why not)
    slurm/                                  with --launcher slurm: jobs.json (job id per run), one log folder per job
    report/                                 notebook 05 over all finished runs, its views as HTML
    report.html                             the comparison in one page
One run's folder and the notebook side of the contract are in runs.py, papermill and the kernel in
notebook_exec.py, the parallel map in parallel.py, the Slurm launcher (submitit) in launchers.py, the
headline metrics and the report page in report.py, the checks made before it starts in plan.py;
import each name from its own module.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import health, report
from .config import RunConfig
from .data import split_key
from .errors import bad
from .figure_files import write_plotlyjs
from .headline import collect
from .launchers import SlurmSettings, add_slurm_arguments, job_result, slurm_from_args, submit_runs
from .notebook_exec import check_kernel, error_text, execute, notebook_params
from .parallel import pmap
from .paths import resolve
from .plan import (
    SWEEP_FILE,
    Run,
    Sweep,
    budget_problems,
    check_plan,
    config_hash,
    recorded,
    start_time,
    sweep_from_args,
)
from .report import NOT_STARTED, aggregate, robust_attack_in
from .run_files import link_run, record_reuse, reuse_source
from .runlock import RunLocked, run_lock
from .runs import ARM_FILE, DONE, FAILED, NB_COMPARE, NB_DATA, NB_EVAL, NB_STAGE1, NB_TRAIN, joined_rows
from .schedule import has_clean_stage
from .sessions import machine_label, session

__all__ = ["Started", "add_cli", "cmd_sweep", "execute_run", "finish", "prepare_data", "reuse_runs", "run_order",
           "run_steps", "run_sweep", "stage_dirs", "summary", "sweep_aggregate", "sweep_local", "sweep_slurm",
           "unfinished"]


def run_steps(run: Run, evaluation: dict) -> list[tuple[str, dict]]:
    """The notebooks of one run, in order, with their parameters."""
    common = {"run_dir": str(run.dir), "interactive": False}
    steps = [NB_STAGE1] if has_clean_stage(RunConfig.from_dict(run.config)) else []
    steps += [NB_TRAIN, NB_EVAL]
    return [(nb, notebook_params(nb, {} if nb == NB_EVAL else run.config, **common, **evaluation)) for nb in steps]


def reuse_runs(sweep: Sweep, source: Path, log=print) -> list[tuple[Path, Path]]:
    """Link into the sweep's folder the runs another sweep folder finished with the same config (DONE.json's
    hash) and the same evaluation (its sweep.json): Study B's AT-BSL and TAET runs of seeds 0-3 from Study A.
    A run folder that exists here already is left as it is; a linked one gets this sweep's arm.json."""
    theirs = json.loads((source / SWEEP_FILE).read_text()).get("evaluation") if (source / SWEEP_FILE).exists() else None
    if theirs != sweep.evaluation:
        log(f"reuse: no study run linked; {source} evaluates with {theirs}, this sweep with {sweep.evaluation}")
        return []
    done: dict[str, Path] = {}
    for p in sorted(source.rglob(DONE)):
        done.setdefault(json.loads(p.read_text()).get("config_hash", ""), p.parent)
    pairs = []
    for run in sweep.plan():
        src = done.get(config_hash(run.config))
        if src is not None and not run.error and not run.dir.exists():
            link_run(src, run.dir)
            if run.arm_spec is not None:   # this sweep's arm (label, overrides); a new file, the source's stays
                (run.dir / ARM_FILE).unlink(missing_ok=True)
                (run.dir / ARM_FILE).write_text(json.dumps(run.arm_spec.to_dict(), indent=2) + "\n")
            pairs.append((src, run.dir))
    record_reuse(sweep.root, "runs", source, pairs)
    log(f"reuse: {len(pairs)} study run(s) linked from {source}")
    return pairs


def unfinished(run: Run, where: str | Path) -> dict:
    return {**run.row(), "status": "failed", "seconds": 0.0, "notebook": "",
            "error": f"no {DONE} or {FAILED}: its job is still queued or running, or was killed (see {where})"}


def execute_run(run: Run, evaluation: dict, timeout: float | None = None, start_by: float | None = None) -> dict:
    """One run, start to finish, holding its folder's lock (runlock.py); never raises: the outcome is the
    returned status row. A folder another live process holds is recorded failed and left alone. After
    `start_by` (a time.time()) an unfinished run is not started and its folder not touched: status NOT_STARTED."""
    if start_by is not None and time.time() > start_by and not (run.dir / DONE).exists():
        return {**run.row(), "status": NOT_STARTED, "seconds": 0.0, "error": "", "notebook": ""}
    try:
        with run_lock(run.dir):
            return _execute_locked(run, evaluation, timeout)
    except RunLocked as e:
        return {**run.row(), "status": "failed", "seconds": 0.0, "error": error_text(e), "notebook": ""}


def _execute_locked(run: Run, evaluation: dict, timeout: float | None) -> dict:
    row, t0 = run.row(), time.time()
    done, failed = run.dir / DONE, run.dir / FAILED
    if run.error:  # its dataset stage failed: recorded, never started
        rec = {**row, "status": "failed", "seconds": 0.0, "error": run.error, "notebook": ""}
        run.dir.mkdir(parents=True, exist_ok=True)
        failed.write_text(json.dumps(rec, indent=2))
        return rec
    if done.exists():   # finished by an earlier invocation: its record (status, seconds) is kept
        rec = recorded(run) or unfinished(run, run.dir)   # DONE.json exists, so recorded() reads it
        return {**rec, "resumed": True} if rec["status"] == "done" else rec
    run.dir.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)
    if run.arm_spec is not None:   # the report reads the arm's label from here
        (run.dir / ARM_FILE).write_text(json.dumps(run.arm_spec.to_dict(), indent=2) + "\n")
    notebook = ""
    try:
        for notebook, params in run_steps(run, evaluation):
            execute(notebook, run.dir / f"{notebook}.ipynb", params, timeout)
    except Exception as e:  # a failed run is recorded and the sweep goes on
        rec = {**row, "status": "failed", "seconds": round(time.time() - t0, 1), "error": error_text(e),
               "notebook": str(run.dir / f"{notebook}.ipynb")}
        failed.write_text(json.dumps({**rec, "traceback": traceback.format_exc()[-4000:]}, indent=2))
        return rec
    rec = {**row, "status": "done", "seconds": round(time.time() - t0, 1), "error": "", "notebook": ""}
    done.write_text(json.dumps({**rec, "config_hash": config_hash(run.config), "machine": machine_label()},
                               indent=2))   # last: it is complete; the machine says whose seconds these are
    return rec


def stage_dirs(runs: list[Run]) -> dict[Path, tuple[dict, list[Run]]]:
    """stage folder -> (the config that builds its split, the runs that read it): one per IR and split
    seed (seeds draw their own split by default): <dataset>-ir<IR>/ when the IR has one split, else
    <dataset>-ir<IR>/split_seed<S>/ per split."""
    by_ir: dict = {}
    for r in runs:
        if not r.error:
            by_ir.setdefault(r.dir.parents[1], {}).setdefault(r.config["split_seed"], []).append(r)
    out = {}
    for ir_dir, splits in by_ir.items():
        for seed, members in splits.items():
            out[ir_dir if len(splits) == 1 else ir_dir / f"split_seed{seed}"] = (members[0].config, members)
    return out


def prepare_data(group_dir: Path, config: dict, timeout: float | None = None) -> dict:
    """Notebook 01 for one (dataset, IR): builds the split before the runs that share it start."""
    out, marker = group_dir / f"{NB_DATA}.ipynb", group_dir / DONE
    key = config_hash(split_key(RunConfig.from_dict(config)))
    if marker.exists() and json.loads(marker.read_text()).get("split_hash") == key:
        return {"group": str(group_dir), "error": ""}
    try:
        split = {k: config[k] for k in ("dataset", "n_max", "test_per_class", "split_seed", "class_order",
                                        "data_root")}
        params = notebook_params(NB_DATA, split, irs=[config["imbalance_ratio"]], out_dir=str(group_dir),
                                 interactive=False)
        execute(NB_DATA, out, params, timeout)
    except Exception as e:
        return {"group": str(group_dir), "error": f"dataset stage failed ({out}): {error_text(e)}"}
    marker.write_text(json.dumps({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "split_hash": key}))
    return {"group": str(group_dir), "error": ""}


# ------------------------------------------------------------------------------ the sweep's three modes
@dataclass
class Started:
    """What every mode begins with: the checked plan, its folder (sweep.json written), the dataset stages."""
    root: Path
    runs: list[Run]
    budget_notes: list[str]
    groups: dict   # stage folder -> (its config, its runs): one per IR and split (stage_dirs)
    t0: float


def _start(sweep: Sweep, slurm: SlurmSettings | None, log) -> Started:
    runs = check_plan(sweep, slurm)
    check_kernel()
    root = resolve(sweep.root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps(sweep.to_dict(), indent=2, default=str) + "\n")
    write_plotlyjs(root)  # one copy for every run's HTML figures (plots.save_html links the nearest)
    budget_notes = budget_problems(runs, tuned=bool(sweep.tuning))
    for note in budget_notes:
        log(f"budget: {note}")
    groups = stage_dirs(runs)   # one dataset stage per IR and split, on the first valid config of each
    return Started(root, runs, budget_notes, groups, time.time())


def _prepare(sweep: Sweep, st: Started, jobs: int) -> None:
    """Notebook 01 per IR and split; a failed stage fails the runs that read it."""
    stages = pmap(prepare_data, [(g, c, sweep.cell_timeout) for g, (c, _) in st.groups.items()], jobs)
    stage_error = {Path(s["group"]): s["error"] for s in stages if s["error"]}
    for g, (_, members) in st.groups.items():
        for r in members:
            if not r.error and g in stage_error:
                r.error = stage_error[g]


def _progress(root: Path, log):
    def progress(rec):
        rel = Path(rec["run"]).relative_to(root)
        log(f"[{rec['status']:7s}] {rel} {rec['seconds']:.0f}s {rec['error']}".rstrip())
    return progress


def run_order(sweep: Sweep, runs: list[Run]) -> list[int]:
    """The order runs start in. Seed-major: a sweep stopped part-way holds whole seeds, which a paired
    comparison reads. The arms of the declared primary comparisons come first, every seed of them, so
    the claims are read on all their seeds before the descriptive arms take the machine."""
    primary = {p[k] for p in sweep.primary for k in ("a", "b")}
    return sorted(range(len(runs)), key=lambda i: (bool(primary) and runs[i].arm not in primary,
                                                   runs[i].config["seed"], i))


def sweep_local(sweep: Sweep, jobs: int = 1, log=print, start_by: float | None = None) -> dict:
    """Every run in a process pool here (`jobs` at once; finished runs are kept; none starts after
    `start_by`), then the aggregate and the report. Returns the tables and `ok` (False when any run failed)."""
    st = _start(sweep, None, log)
    log(f"sweep {st.root}: {len(st.runs)} runs, {len(st.groups)} dataset stage(s), jobs={jobs}")
    left = [r for r in st.runs if (recorded(r) or {}).get("status") != "done"]
    # the study's wall time, over every session it needs; a call that finds every run finished is none of them
    with session(st.root, "sweep", jobs=jobs) if left else nullcontext():
        _prepare(sweep, st, jobs)
        order = run_order(sweep, st.runs)
        done = pmap(execute_run, [(st.runs[i], sweep.evaluation, sweep.cell_timeout, start_by) for i in order], jobs,
                    _progress(st.root, log))
    status = pd.DataFrame([row for _, row in sorted(zip(order, done), key=lambda t: t[0])])
    return finish(sweep, st.root, status, st.budget_notes, st.t0, log)


def sweep_slurm(sweep: Sweep, slurm: SlurmSettings, jobs: int = 1, log=print) -> dict:
    """One submitit job per unfinished run. Unless slurm.wait (or the local cluster), returns once they are
    submitted (`submitted`: the jobs); sweep_aggregate later reads what they recorded."""
    st = _start(sweep, slurm, log)
    log(f"sweep {st.root}: {len(st.runs)} runs, {len(st.groups)} dataset stage(s), slurm ({slurm.cluster})")
    _prepare(sweep, st, jobs)   # dataset stages here, `jobs` at once
    rows = {}   # finished runs are kept (no job), those whose dataset stage failed recorded, the rest submitted
    for r in st.runs:
        if r.error:
            rows[r.dir] = execute_run(r, sweep.evaluation)   # records FAILED.json, starts nothing
        elif (r.dir / DONE).exists():   # finished: kept, or with other settings: failed (as execute_run says)
            rec = recorded(r) or unfinished(r, r.dir)   # DONE.json exists, so recorded() reads it
            rows[r.dir] = {**rec, "resumed": True} if rec["status"] == "done" else rec
    todo = [st.runs[i] for i in run_order(sweep, st.runs) if st.runs[i].dir not in rows]
    jobs_ = submit_runs(execute_run, [(r, sweep.evaluation, sweep.cell_timeout) for r in todo], slurm,
                        st.root / "slurm")
    log(f"submitted {len(jobs_)} job(s) ({', '.join(j.job_id for j in jobs_[:3])}{' ...' if len(jobs_) > 3 else ''}), "
        f"{len(rows)} run(s) skipped or invalid; logs in {st.root / 'slurm'}")
    if not (slurm.wait or slurm.cluster == "local"):   # local jobs have no queue to come back to: it waits
        log("when the jobs are done: the same sweep command with --aggregate-only writes the aggregate and report")
        return {"status": pd.DataFrame(list(rows.values())), "submitted": jobs_, "ok": True}
    progress = _progress(st.root, log)
    for r, job in zip(todo, jobs_):
        rows[r.dir] = job_result(job, r) or recorded(r) or unfinished(r, job.paths.stdout)
        progress(rows[r.dir])
    status = pd.DataFrame([rows[r.dir] for r in st.runs])
    return finish(sweep, st.root, status, st.budget_notes, st.t0, log)


def sweep_aggregate(sweep: Sweep, log=print) -> dict:
    """Run nothing: read what the runs recorded (a run with no record failed), write the aggregate and report."""
    st = _start(sweep, None, log)
    status = pd.DataFrame([recorded(r) or unfinished(r, st.root / "slurm") for r in st.runs])
    return finish(sweep, st.root, status, st.budget_notes, st.t0, log)


def run_sweep(sweep: Sweep, jobs: int = 1, log=print, slurm: SlurmSettings | None = None,
              aggregate_only: bool = False) -> dict:
    """The mode asked for: sweep_aggregate, sweep_slurm (with `slurm`) or sweep_local."""
    if aggregate_only:
        return sweep_aggregate(sweep, log)
    return sweep_local(sweep, jobs, log) if slurm is None else sweep_slurm(sweep, slurm, jobs, log)


def finish(sweep: Sweep, root: Path, status: pd.DataFrame, budget_notes: list[str], t0: float, log=print) -> dict:
    """runs.csv, metrics.csv, aggregate.csv, notebook 05 over the finished runs, and report.html; weights
    evaluated elsewhere and joined to the sweep (evaluate --join) count as runs of their arm. runs.csv keeps a
    resumed run's record (done, its seconds); `resumed` says it finished earlier."""
    joined = joined_rows(root)
    if joined:
        status = pd.concat([status, pd.DataFrame(joined)], ignore_index=True)
    status = status.assign(resumed=status.get("resumed", pd.Series(False, index=status.index))
                           .astype("boolean").fillna(False).astype(bool))
    status.to_csv(root / "runs.csv", index=False)
    gate = health.sweep_health(status, health.Rules.of(sweep.health))   # who trained: the rest is marked, left out
    gate.to_csv(root / "health.csv", index=False)
    metrics = collect(status, sweep.robust_attack, gate)
    metrics.to_csv(root / "metrics.csv", index=False)
    agg = aggregate(metrics) if len(metrics) else pd.DataFrame()
    agg.to_csv(root / "aggregate.csv", index=False)

    notes = []
    finished = status[status["status"].isin(["done", "skipped"])]["run"].tolist()
    if finished:  # notebook 05 over every finished run: the comparison views, as HTML too
        attack = robust_attack_in(metrics)
        try:
            execute(NB_COMPARE, root / "report" / f"{NB_COMPARE}.ipynb",
                    notebook_params(NB_COMPARE, {}, runs=finished, out_dir=str(root / "report"), attack=attack,
                                    interactive=False), sweep.cell_timeout)
        except Exception as e:
            notes.append(f"report notebook failed ({root / 'report' / NB_COMPARE}.ipynb): {error_text(e)}")
    report_path = report.write_sweep_report(root, sweep, status, agg, [*notes, *(f"budget: {n}" for n in budget_notes)],
                                            metrics=metrics, health=gate)
    failed = status[status["status"] == "failed"]
    log(summary(status, time.time() - t0, report_path, notes))
    return {"status": status, "metrics": metrics, "aggregate": agg, "report": report_path,
            "ok": failed.empty and not notes}


def summary(status: pd.DataFrame, seconds: float, report_path: Path | None, notes=()) -> str:
    counts = report.status_counts(status)
    lines = [f"sweep finished in {seconds:.0f}s: "
             + ", ".join(f"{counts[s]} {s}" for s in ("done", "skipped", "failed", NOT_STARTED) if counts[s] or
                         s != NOT_STARTED)]
    if counts[NOT_STARTED]:
        lines.append(f"  {counts[NOT_STARTED]} run(s) not started (--no-start-after had passed): the same command "
                     "starts them")
    for row in status[status["status"] == "failed"].to_dict("records"):
        see = f" (see {row['notebook']})" if row["notebook"] else ""
        lines.append(f"  FAILED {row['run']}: {row['error']}{see}")
    lines += [f"  {n}" for n in notes]
    if report_path:
        lines.append(f"report: {report_path}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ CLI
def add_cli(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run the notebooks over IR x method x seed with papermill",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", help="start from a preset (its config and its irs / methods / seeds)")
    p.add_argument("--dataset", help="dataset (default: the preset's, else fashion_mnist)")
    p.add_argument("--irs", nargs="+", type=float, help="imbalance ratios (default: preset's, else 10)")
    p.add_argument("--methods", nargs="+", help="methods (default: preset's arms, else taet at_bsl pgd_at)")
    p.add_argument("--arms", nargs="+", metavar="[LABEL=]METHOD[+robustlt][:KEY=VALUE,...]",
                   help="arms with their own overrides, e.g. taet_unit=taet:harl_alpha=1,harl_beta=1,harl_gamma=1 "
                        "(instead of --methods; default: the preset's arms)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: preset's, else 0)")
    p.add_argument("--robustlt", action="store_true", help="also run every method wrapped in RobustLT")
    p.add_argument("--robustlt-only", action="store_true", help="run every method wrapped in RobustLT only")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="RunConfig overrides for every run")
    p.add_argument("--attacks", nargs="+", help="evaluation attacks (default: preset's, else clean pgd20)")
    p.add_argument("--eval-per-class", type=int, help="evaluate on at most this many test images per class")
    p.add_argument("--eval-param", nargs="*", default=[], metavar="ATTACK.NAME=VALUE",
                   help="evaluation attack parameters, e.g. pgd20.steps=50 autoattack.version=rand")
    p.add_argument("--robust-attack", help="attack behind the robust metrics (default: pgd20, else the first)")
    p.add_argument("--cell-timeout", type=float, help="seconds one notebook cell may take (default: no limit)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (one per GPU where there are several)")
    p.add_argument("--out", help="sweep folder (default: runs/<preset> or runs/sweep-<dataset>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--no-start-after", metavar="TIME", help="start no run after TIME (HH:MM local, or ISO): the "
                   "runs under way finish, the rest wait for the same command (e.g. an hour before a machine goes)")
    p.add_argument("--reuse-from", metavar="FOLDER", help="first link the runs this other sweep folder finished "
                   "with the same config and evaluation (Study B from Study A); recorded in reused.json")
    add_slurm_arguments(p)
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    start_by = start_time(args.no_start_after)   # before anything is written, as every check
    if start_by is not None and (args.launcher == "slurm" or args.aggregate_only):
        raise bad("--no-start-after", args.no_start_after, "applies to runs started here (--launcher local); a "
                  "Slurm queue starts its jobs itself, and --aggregate-only starts none.")
    sweep = sweep_from_args(args)
    slurm = slurm_from_args(args) if args.launcher == "slurm" else None
    if args.dry_run:   # the plan, then the same check a real start makes: exit 2 when it would refuse
        for r in sweep.plan():
            print(f"{r.dir}  {'INVALID: ' + r.error if r.error else ''}")
        check_plan(sweep, None if args.aggregate_only else slurm)
        return 0
    if args.reuse_from:   # after the plan's checks: a refused sweep links nothing
        source = reuse_source(args.reuse_from, sweep.root)
        check_plan(sweep, None if args.aggregate_only else slurm)
        reuse_runs(sweep, source)
    if args.aggregate_only:
        result = sweep_aggregate(sweep)
    elif slurm is not None:
        result = sweep_slurm(sweep, slurm, args.jobs)
    else:
        result = sweep_local(sweep, args.jobs, start_by=start_by)
    return 0 if result["ok"] else 1


if __name__ == "__main__":  # python -m taetlib.sweep ... works without cli.py too
    import argparse
    parser = argparse.ArgumentParser(prog="python -m taetlib.sweep")
    add_cli(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["sweep", *sys.argv[1:]])
    sys.exit(ns.func(ns))
