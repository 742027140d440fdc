"""One run of the notebook pipeline: its folder, its notebooks run headless by papermill, and the
notebook side of that contract.

A run lives in <root>/<dataset>-ir<IR>/<method>[+robustlt]/seed<S>/ (run_path): executed notebooks
02 (TAET only), 03 and 04, config, history, checkpoints, eval/ tables, figures/; DONE.json written
last (a run holding it is skipped), FAILED.json with the error when it failed. execute_run runs one;
sweep.py runs many. The notebooks' own cells call check_params, notebook_config, notebook_run_dir and
stage1_checkpoint (also importable from sweep, where the notebooks find them).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, RunConfig, coerce
from .paths import PROJECT_ROOT, resolve

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NB_DATA, NB_STAGE1, NB_TRAIN, NB_EVAL, NB_COMPARE = (
    "01_dataset_creation", "02_stabilization_stage", "03_harl_stage", "04_evaluation", "05_per_class_plots")
DONE, FAILED = "DONE.json", "FAILED.json"
KERNEL = "python3"  # installed into the venv by `make setup` (ipykernel install --sys-prefix)


# ------------------------------------------------------------------------------ the run folder
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


# ------------------------------------------------------------------------------ papermill
def declared_parameters(notebook: str) -> set[str]:
    import papermill as pm  # heavy optional import, deferred for start-up time
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
    import papermill as pm  # heavy optional import, deferred for start-up time
    os.environ["TAET_HEADLESS"] = "1"  # the kernel inherits it: static figures, no widgets
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb"), str(out), parameters=params,
                        kernel_name=KERNEL, cwd=str(NOTEBOOK_DIR), progress_bar=False,
                        execution_timeout=timeout, stdout_file=sys.stdout)  # per-epoch lines stay visible
    return out


def check_kernel(name: str = KERNEL) -> None:
    """papermill runs the Jupyter kernel `name`: it must be this environment's Python, or the
    notebooks would import another taetlib (or none)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # deferred with papermill
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
