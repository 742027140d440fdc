"""Sweeps: the notebook pipeline run by papermill across imbalance ratio x method x seed.

Layout of a sweep `root` (default runs/<preset or sweep-dataset>):
    sweep.json                              what was asked
    <dataset>-ir<IR>/01_dataset_creation.ipynb   splits built once per IR, before any run
    <dataset>-ir<IR>/<method>[+robustlt]/seed<S>/  one run: executed notebooks 02 (TAET only),
        03, 04, config, history, checkpoints, eval/ tables, figures/; DONE.json written last
        (a run holding it is skipped), FAILED.json with the error when it failed
    runs.csv, metrics.csv, aggregate.csv    status per run; metrics per run; mean/std over seeds
    report/                                 notebook 05 over all finished runs, its views as HTML
    report.html                             the comparison in one page
The notebook side of the contract is at the bottom: `notebook_config`, `check_params`, `run_path`.
"""
from __future__ import annotations

import concurrent.futures as cf
import copy
import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import ConfigError, RunConfig, coerce
from .data import PROJECT_ROOT, resolve

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NB_DATA, NB_STAGE1, NB_TRAIN, NB_EVAL, NB_COMPARE = (
    "01_dataset_creation", "02_stabilization_stage", "03_harl_stage", "04_evaluation", "05_per_class_plots")
DONE, FAILED = "DONE.json", "FAILED.json"
KERNEL = "python3"  # installed into the venv by `make setup` (ipykernel install --sys-prefix)
SWEEP_AXES = ("method", "imbalance_ratio", "seed", "robustlt")  # set per run, never by --set
METRICS = ["clean_accuracy", "balanced_accuracy", "robust_accuracy", "balanced_robustness", "tail_robustness"]
DEFAULT_EVALUATION = {"attacks": ["clean", "pgd20"], "protocols": ["balanced", "long_tailed"]}


# ------------------------------------------------------------------------------ plan
def arm_name(method: str, robustlt: bool) -> str:
    return method + ("+robustlt" if robustlt else "")


def run_path(root: str | Path, dataset: str, imbalance_ratio: float, method: str, robustlt: bool,
             seed: int) -> Path:
    """<root>/<dataset>-ir<IR>/<method>[+robustlt]/seed<S>: the one layout of a run directory."""
    return resolve(root) / f"{dataset}-ir{imbalance_ratio:g}" / arm_name(method, robustlt) / f"seed{seed}"


@dataclass
class Run:
    config: dict                       # full RunConfig as a dict (or the raw overrides when invalid)
    dir: Path
    error: str | None = None           # set when the config does not validate: recorded, never run

    @property
    def arm(self) -> str:
        return arm_name(self.config["method"], self.config.get("robustlt", False))

    def row(self) -> dict:
        c = self.config
        return {"run": str(self.dir), "dataset": c.get("dataset"), "imbalance_ratio": c.get("imbalance_ratio"),
                "method": c.get("method"), "robustlt": bool(c.get("robustlt", False)), "arm": self.arm,
                "seed": c.get("seed")}


@dataclass
class Sweep:
    root: Path
    dataset: str
    irs: list[float]
    arms: list[tuple[str, bool]]
    seeds: list[int]
    config: dict = field(default_factory=dict)            # RunConfig overrides shared by every run
    method_overrides: dict = field(default_factory=dict)  # method -> overrides (from a preset)
    evaluation: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_EVALUATION))
    robust_attack: str | None = None  # the attack behind the robust metrics (default: pgd20 or the first)
    preset: str | None = None
    cell_timeout: float | None = None  # seconds one notebook cell may take; None: no limit

    def plan(self) -> list[Run]:
        bad_axes = sorted(set(self.config) & set(SWEEP_AXES))
        if bad_axes:
            raise ConfigError(f"--set {bad_axes}: these are sweep axes; use --irs/--methods/--seeds/--robustlt.")
        runs = []
        for ir in self.irs:
            for method, robustlt in self.arms:
                for seed in self.seeds:
                    d = {**self.config, "dataset": self.dataset, **self.method_overrides.get(method, {}),
                         "method": method, "imbalance_ratio": float(ir), "seed": int(seed), "robustlt": robustlt}
                    run = Run(d, run_path(self.root, self.dataset, ir, method, robustlt, seed))
                    try:
                        run.config = RunConfig.from_dict(d).to_dict()
                    except ConfigError as e:
                        run.error = f"ConfigError: {e}"
                    runs.append(run)
        return runs

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "irs": self.irs, "arms": [list(a) for a in self.arms], "seeds": self.seeds,
                "config": self.config, "method_overrides": self.method_overrides, "evaluation": self.evaluation,
                "robust_attack": self.robust_attack, "preset": self.preset, "cell_timeout": self.cell_timeout}


# ------------------------------------------------------------------------------ papermill
def declared_parameters(notebook: str) -> set[str]:
    import papermill as pm
    return set(pm.inspect_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb")))


def notebook_params(notebook: str, config: dict, **other) -> dict:
    """Parameters for `notebook`: RunConfig fields it declares go in by name, the others in its
    `extra` dict; `other` (run_dir, attacks, ...) only where the notebook declares them."""
    declared = declared_parameters(notebook)
    params = {k: v for k, v in config.items() if k in declared}
    rest = {k: v for k, v in config.items() if k not in declared}
    if "extra" in declared:
        params["extra"] = rest
    elif rest:
        raise ConfigError(f"notebook {notebook} takes no parameters {sorted(rest)} (and has no `extra`).")
    params.update({k: v for k, v in other.items() if k in declared})
    return params


def execute(notebook: str, out: Path, params: dict, timeout: float | None = None) -> Path:
    """Runs notebooks/<notebook>.ipynb headless into `out` (kept: the run's inspectable record);
    `timeout`: seconds one cell may take (None: no limit)."""
    import papermill as pm
    os.environ["TAET_HEADLESS"] = "1"  # the kernel inherits it: static figures, no widgets
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb"), str(out), parameters=params,
                        kernel_name=KERNEL, cwd=str(NOTEBOOK_DIR), progress_bar=False,
                        execution_timeout=timeout, stdout_file=sys.stdout)  # per-epoch lines stay visible
    return out


def check_kernel(name: str = KERNEL) -> None:
    """papermill runs the Jupyter kernel `name`: it must be this environment's Python, or the
    notebooks would import another taetlib (or none)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    fix = f"{sys.executable} -m ipykernel install --sys-prefix --name {name}"
    try:
        argv = KernelSpecManager().get_kernel_spec(name).argv
    except NoSuchKernel:
        raise ConfigError(f"kernel={name!r}: no such Jupyter kernel. Fix: {fix}") from None
    out = subprocess.run([argv[0], "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                         timeout=120)
    if out.stdout.strip() != sys.prefix:
        raise ConfigError(f"kernel={name!r} runs {argv[0]} (prefix {out.stdout.strip() or '?'}), not this "
                          f"environment ({sys.prefix}). Fix: {fix}")


def error_text(e: BaseException) -> str:
    if hasattr(e, "ename"):  # PapermillExecutionError: the notebook's own exception
        return f"{e.ename}: {e.evalue}"
    return f"{type(e).__name__}: {e}"


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_steps(run: Run, evaluation: dict) -> list[tuple[str, dict]]:
    """The notebooks of one run, in order, with their parameters."""
    common = {"run_dir": str(run.dir), "interactive": False}
    steps = [NB_STAGE1] if run.config["method"] == "taet" else []
    steps += [NB_TRAIN, NB_EVAL]
    return [(nb, notebook_params(nb, {} if nb == NB_EVAL else run.config, **common, **evaluation)) for nb in steps]


def execute_run(run: Run, evaluation: dict, timeout: float | None = None) -> dict:
    """One run, start to finish; never raises: the outcome is the returned status row."""
    row, t0 = run.row(), time.time()
    done, failed = run.dir / DONE, run.dir / FAILED
    if run.error:  # invalid settings, or its dataset stage failed: recorded, never started
        rec = {**row, "status": "failed", "seconds": 0.0, "error": run.error, "notebook": ""}
        run.dir.mkdir(parents=True, exist_ok=True)
        failed.write_text(json.dumps(rec, indent=2))
        return rec
    digest = config_hash(run.config)
    if done.exists():
        before = json.loads(done.read_text()).get("config_hash")
        if before == digest:
            return {**row, "status": "skipped", "seconds": 0.0, "error": "", "notebook": ""}
        return {**row, "status": "failed", "seconds": 0.0, "notebook": "",
                "error": f"{run.dir} finished earlier with other settings; delete it or sweep into another --out"}
    run.dir.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)
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
    done.write_text(json.dumps({**rec, "config_hash": digest}, indent=2))  # written last: the run is complete
    return rec


def prepare_data(group_dir: Path, config: dict, timeout: float | None = None) -> dict:
    """Notebook 01 for one (dataset, IR): builds the split before the runs that share it start."""
    from .data import split_key
    out, marker = group_dir / f"{NB_DATA}.ipynb", group_dir / DONE
    key = config_hash(split_key(RunConfig.from_dict(config)))
    if marker.exists() and json.loads(marker.read_text()).get("split_hash") == key:
        return {"group": str(group_dir), "error": ""}
    try:
        split = {k: config[k] for k in ("dataset", "n_max", "test_per_class", "split_seed", "data_root")}
        params = notebook_params(NB_DATA, split, irs=[config["imbalance_ratio"]], out_dir=str(group_dir),
                                 interactive=False)
        execute(NB_DATA, out, params, timeout)
    except Exception as e:
        return {"group": str(group_dir), "error": f"dataset stage failed ({out}): {error_text(e)}"}
    marker.write_text(json.dumps({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "split_hash": key}))
    return {"group": str(group_dir), "error": ""}


# ------------------------------------------------------------------------------ parallel map
def _claim_slot(slots, threads: int, gpus: int) -> None:
    """Worker start: one slot per worker; with several GPUs each worker gets its own."""
    slot = slots.get()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # N kernels share the cores, not each all of them
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)


def _gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:
        return 0


def pmap(fn, items: list, jobs: int, on_result=None) -> list:
    """fn over items, `jobs` at a time (in this process when jobs == 1); results in item order."""
    results = [None] * len(items)
    if jobs <= 1 or len(items) <= 1:
        for i, it in enumerate(items):
            results[i] = fn(*it)
            if on_result:
                on_result(results[i])
        return results
    ctx = mp.get_context("spawn")  # papermill / zmq / torch state does not survive fork well
    slots = ctx.Manager().Queue()
    for s in range(jobs):
        slots.put(s)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_claim_slot,
                                initargs=(slots, threads, _gpu_count())) as pool:
        futures = {pool.submit(fn, *it): i for i, it in enumerate(items)}
        for f in cf.as_completed(futures):
            results[futures[f]] = f.result()
            if on_result:
                on_result(results[futures[f]])
    return results


# ------------------------------------------------------------------------------ aggregation
def robust_attack_of(summary: pd.DataFrame, wanted: str | None) -> str | None:
    attacks = [a for a in dict.fromkeys(summary["attack"]) if a != "clean"]
    if wanted:
        return wanted if wanted in attacks else None
    return "pgd20" if "pgd20" in attacks else (attacks[0] if attacks else None)


def run_metrics(summary: pd.DataFrame, robust_attack: str | None = None) -> pd.DataFrame:
    """Headline metrics of one run from evaluate's summary table, per protocol (tidy: protocol,
    metric, value). Tail = metrics.class_groups' rarest third, as in the summary."""
    attack = robust_attack_of(summary, robust_attack)
    rows = []
    for protocol, s in summary.groupby("protocol", sort=False):
        clean, robust = s[s["attack"] == "clean"], s[s["attack"] == attack]

        def get(row, col):
            return float(row[col].iloc[0]) if len(row) else np.nan

        vals = {"clean_accuracy": get(clean, "overall"), "balanced_accuracy": get(clean, "balanced"),
                "robust_accuracy": get(robust, "overall"), "balanced_robustness": get(robust, "balanced"),
                "tail_robustness": get(robust, "tail")}
        rows += [{"protocol": protocol, "metric": m, "value": v, "robust_attack": attack} for m, v in vals.items()]
    return pd.DataFrame(rows)


def aggregate(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds (ddof=1: NaN for one seed) per dataset, IR, arm, protocol and metric."""
    keys = ["dataset", "imbalance_ratio", "arm", "method", "robustlt", "protocol", "metric", "robust_attack"]
    agg = metrics.groupby(keys, as_index=False, sort=False, dropna=False)["value"].agg(
        mean="mean", std="std", n="count")
    rank = {m: i for i, m in enumerate(METRICS)}
    agg["_m"] = agg["metric"].map(rank)
    return agg.sort_values(["protocol", "imbalance_ratio", "arm", "_m"]).drop(columns="_m").reset_index(drop=True)


def collect(status: pd.DataFrame, robust_attack: str | None) -> pd.DataFrame:
    """Per-run headline metrics of every finished run (tidy, run columns first)."""
    cols = ["run", "dataset", "imbalance_ratio", "method", "robustlt", "arm", "seed"]
    frames = []
    for row in status[status["status"].isin(["done", "skipped"])].to_dict("records"):
        f = Path(row["run"]) / "eval" / "summary.csv"
        if f.exists():
            m = run_metrics(pd.read_csv(f, keep_default_na=False, na_values=[""]), robust_attack)
            frames.append(m.assign(**{k: row[k] for k in cols}))
    out_cols = [*cols, "protocol", "metric", "value", "robust_attack"]
    return pd.concat(frames, ignore_index=True)[out_cols] if frames else pd.DataFrame(columns=out_cols)


# ------------------------------------------------------------------------------ the sweep
def run_sweep(sweep: Sweep, jobs: int = 1, log=print) -> dict:
    """Runs (or skips) every run, then aggregates and writes the report. Returns the tables and
    `ok` (False when any run failed)."""
    check_kernel()
    unknown = sorted(set(sweep.evaluation) - declared_parameters(NB_EVAL))
    if unknown:
        raise ConfigError(f"evaluation {unknown}: not parameters of notebook {NB_EVAL} "
                          f"(it takes {sorted(declared_parameters(NB_EVAL))}).")
    root = resolve(sweep.root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps(sweep.to_dict(), indent=2, default=str) + "\n")
    from .plots import write_plotlyjs
    write_plotlyjs(root)  # one copy for every run's HTML figures (plots.save_html links the nearest)
    runs = sweep.plan()
    for r in runs:
        if r.error:
            log(f"invalid run {r.dir.relative_to(root)}: {r.error}")

    groups = {}  # one dataset stage per IR, on the first valid config of that IR
    for r in runs:
        if not r.error:
            groups.setdefault(r.dir.parents[1], r.config)
    t0 = time.time()
    log(f"sweep {root}: {len(runs)} runs, {len(groups)} dataset stage(s), jobs={jobs}")
    stages = pmap(prepare_data, [(g, c, sweep.cell_timeout) for g, c in groups.items()], jobs)
    stage_error = {Path(s["group"]): s["error"] for s in stages if s["error"]}
    for r in runs:
        if not r.error and r.dir.parents[1] in stage_error:
            r.error = stage_error[r.dir.parents[1]]

    def progress(rec):
        rel = Path(rec["run"]).relative_to(root)
        log(f"[{rec['status']:7s}] {rel} {rec['seconds']:.0f}s {rec['error']}".rstrip())

    status = pd.DataFrame(pmap(execute_run, [(r, sweep.evaluation, sweep.cell_timeout) for r in runs], jobs, progress))
    status.to_csv(root / "runs.csv", index=False)
    metrics = collect(status, sweep.robust_attack)
    metrics.to_csv(root / "metrics.csv", index=False)
    agg = aggregate(metrics) if len(metrics) else pd.DataFrame()
    agg.to_csv(root / "aggregate.csv", index=False)

    notes = []
    finished = status[status["status"].isin(["done", "skipped"])]["run"].tolist()
    if finished:  # notebook 05 over every finished run: the comparison views, as HTML too
        attack = metrics["robust_attack"].dropna().iloc[0] if metrics["robust_attack"].notna().any() else "pgd20"
        try:
            execute(NB_COMPARE, root / "report" / f"{NB_COMPARE}.ipynb",
                    notebook_params(NB_COMPARE, {}, runs=finished, out_dir=str(root / "report"), attack=attack,
                                    interactive=False), sweep.cell_timeout)
        except Exception as e:
            notes.append(f"report notebook failed ({root / 'report' / NB_COMPARE}.ipynb): {error_text(e)}")
    from . import report
    report_path = report.write_sweep_report(root, sweep, status, agg, notes)
    failed = status[status["status"] == "failed"]
    log(summary(status, time.time() - t0, report_path, notes))
    return {"status": status, "metrics": metrics, "aggregate": agg, "report": report_path,
            "ok": failed.empty and not notes}


def summary(status: pd.DataFrame, seconds: float, report_path: Path | None, notes=()) -> str:
    counts = status["status"].value_counts().to_dict()
    lines = [f"sweep finished in {seconds:.0f}s: " + ", ".join(f"{counts.get(s, 0)} {s}"
                                                               for s in ("done", "skipped", "failed"))]
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
    p.set_defaults(func=cmd_sweep)


def sweep_from_args(args) -> Sweep:
    from .cli import parse_sets
    preset = None
    if args.preset:
        from . import presets
        preset = presets.get(args.preset)
    pc, ps = (preset.config, preset.sweep) if preset else ({}, {})
    config = {**pc, **parse_sets(args.set)}
    dataset = args.dataset or config.pop("dataset", None) or "fashion_mnist"
    config.pop("dataset", None)
    variants = [True] if args.robustlt_only else [False, True] if args.robustlt else [False]
    if args.methods or args.robustlt or args.robustlt_only or not ps.get("arms"):
        methods = args.methods or list(dict.fromkeys(m for m, _ in ps.get("arms", []))) or ["taet", "at_bsl", "pgd_at"]
        arms = [(m, r) for m in methods for r in variants]
    else:
        arms = [tuple(a) for a in ps["arms"]]
    evaluation = copy.deepcopy(preset.evaluation if preset else DEFAULT_EVALUATION)
    if args.attacks:
        evaluation["attacks"] = args.attacks
    if args.eval_per_class is not None:
        evaluation["per_class"] = args.eval_per_class
    for key, value in parse_sets(args.eval_param).items():
        if "." not in key:
            raise ConfigError(f"--eval-param {key!r}: expected ATTACK.NAME=VALUE, e.g. pgd20.steps=50")
        attack, name = key.split(".", 1)
        evaluation.setdefault("attack_params", {}).setdefault(attack, {})[name] = value
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: must be >= 1.")
    out = args.out or f"runs/{args.preset or 'sweep-' + dataset}"
    return Sweep(root=resolve(out), dataset=dataset, irs=args.irs or ps.get("irs") or [10.0], arms=arms,
                 seeds=args.seeds or ps.get("seeds") or [0], config=config,
                 method_overrides=dict(preset.method_overrides) if preset else {}, evaluation=evaluation,
                 robust_attack=args.robust_attack, preset=args.preset, cell_timeout=args.cell_timeout)


def cmd_sweep(args) -> int:
    sweep = sweep_from_args(args)
    if args.dry_run:
        for r in sweep.plan():
            print(f"{r.dir}  {'INVALID: ' + r.error if r.error else ''}")
        return 0
    return 0 if run_sweep(sweep, jobs=args.jobs)["ok"] else 1


# ------------------------------------------------------------------------------ notebook side
def notebook_config(params: dict, extra: dict | None = None) -> RunConfig:
    """A notebook's validation cell: its RunConfig parameters plus `extra` (any other RunConfig
    field) -> a validated RunConfig; a wrong type or unknown name raises ConfigError naming it."""
    extra = check_params(extra=(extra if extra is not None else {}, dict))["extra"]
    both = sorted(set(params) & set(extra))
    if both:
        raise ConfigError(f"extra={extra!r}: sets {both}, which are parameters of this notebook; set them there.")
    return RunConfig.from_dict({**params, **extra})


def check_params(**typed) -> dict:
    """check_params(name=(value, type)) for parameters outside RunConfig; returns {name: value}.
    Errors name the parameter, as RunConfig's do."""
    out = {}
    for name, (value, hint) in typed.items():
        if hint is dict:
            if not isinstance(value, dict):
                raise ConfigError(f"{name}={value!r}: expected a dict, got {type(value).__name__}.")
            out[name] = value
        else:
            out[name] = coerce(name, value, hint)
    return out


def notebook_run_dir(run_dir: str, cfg: RunConfig, root: str = "runs/interactive") -> Path:
    """The run folder a notebook writes to: `run_dir`, or for '' the sweep layout under runs/interactive."""
    if run_dir:
        return resolve(run_dir)
    return run_path(root, cfg.dataset, cfg.imbalance_ratio, cfg.method, cfg.robustlt, cfg.seed)


def stage1_checkpoint(run_dir: Path, cfg: RunConfig) -> Path:
    """TAET stage 2 starts from <run_dir>/stage1/last.pt (weights, optimizer, history), trained with
    the same settings: notebooks 02 and 03 must be given the same parameters."""
    ck, saved = Path(run_dir) / "stage1" / "last.pt", Path(run_dir) / "stage1" / "config.json"
    if not ck.exists() or not saved.exists():
        raise FileNotFoundError(f"{ck} not found: TAET's stage 2 starts from stage 1. Run notebook "
                                f"{NB_STAGE1} with the same parameters (run_dir={str(run_dir)!r}) first.")
    old = RunConfig.load(saved).to_dict()
    diff = {k: (old.get(k), v) for k, v in cfg.to_dict().items() if k not in ("device", "compile") and old.get(k) != v}
    if diff:
        raise ConfigError(f"stage 1 in {saved.parent} was trained with other settings {diff} (stage 1, now): "
                          f"give notebooks {NB_STAGE1} and {NB_TRAIN} the same parameters, or another run_dir.")
    return ck


if __name__ == "__main__":  # python -m taetlib.sweep ... works without cli.py too
    import argparse
    parser = argparse.ArgumentParser(prog="python -m taetlib.sweep")
    add_cli(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["sweep", *sys.argv[1:]])
    sys.exit(ns.func(ns))
