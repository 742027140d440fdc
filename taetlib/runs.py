"""Run folders and the notebook side of the pipeline's contract.

A run lives in <root>/<dataset>-ir<IR>/<method>[+robustlt]/seed<S>/ (run_path); the notebooks that
fill it are NB_DATA .. NB_COMPARE. The notebooks' own cells call check_params and notebook_config
(their parameters -> a validated RunConfig), notebook_run_dir and stage1_checkpoint; they find them
as sweep.<name>, which re-exports them.
"""
from __future__ import annotations

import json
from pathlib import Path

from .arms import arm_name
from .config import RunConfig, coerce
from .errors import ConfigError
from .paths import resolve

__all__ = ["ARM_FILE", "DONE", "FAILED", "JOINED", "NB_COMPARE", "NB_DATA", "NB_EVAL", "NB_STAGE1", "NB_TRAIN",
           "OUTSIDE", "check_params", "joined_rows", "notebook_config", "notebook_run_dir", "run_path",
           "stage1_checkpoint"]

NB_DATA, NB_STAGE1, NB_TRAIN, NB_EVAL, NB_COMPARE = (
    "01_dataset_creation", "02_stabilization_stage", "03_harl_stage", "04_evaluation", "05_per_class_plots")


# ------------------------------------------------------------------------------ the run folder
DONE, FAILED = "DONE.json", "FAILED.json"   # a run's record, written last: finished, or its error
ARM_FILE = "arm.json"   # the arm a sweep run belongs to: label, method, robustlt, overrides
OUTSIDE = "outside"     # the method of a run folder that holds the evaluation of weights trained elsewhere
JOINED = "JOINED.json"  # an outside evaluation joined to a sweep: its status row


def joined_rows(root: str | Path) -> list[dict]:
    """The status rows of the outside evaluations joined to the sweep in `root` (evaluate --join)."""
    return [json.loads(p.read_text()) for p in sorted(resolve(root).glob(f"*/*/*/{JOINED}"))]


def run_path(root: str | Path, dataset: str, imbalance_ratio: float, method: str, robustlt: bool,
             seed: int, label: str = "") -> Path:
    """<root>/<dataset>-ir<IR>/<arm label>/seed<S>: the one layout of a run directory; the label
    defaults to method[+robustlt]."""
    return resolve(root) / f"{dataset}-ir{imbalance_ratio:g}" / (label or arm_name(method, robustlt)) / f"seed{seed}"


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
