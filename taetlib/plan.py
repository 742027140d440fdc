"""A sweep's plan: the grid of runs (IR x arm x seed), each with its validated config and folder, and
what makes the comparison unfair (unequal adversarial budgets), before anything runs."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from .arms import Arm, arm_name
from .config import RunConfig, coerce
from .errors import ConfigError
from .presets import Preset
from .runs import run_path
from .schedule import unequal_budgets

__all__ = ["DEFAULT_EVALUATION", "POINT_FILE", "Run", "SWEEP_AXES", "SWEEP_FILE", "Sweep", "TUNING_FILE",
           "budget_problems", "from_preset", "load_sweep"]

SWEEP_AXES = ("method", "imbalance_ratio", "seed", "robustlt")  # set per run, never by --set
TUNING_FILE = "tuning/tuning.json"   # a sweep's tuning record, under its root
POINT_FILE = "point.json"            # one tuning run's record, in its folder under the tuning record's
SWEEP_FILE = "sweep.json"            # what a sweep was asked to run (Sweep.to_dict), under its root
DEFAULT_EVALUATION = {"attacks": ["clean", "pgd20"], "protocols": ["balanced", "long_tailed"]}


@dataclass
class Run:
    config: dict                       # full RunConfig as a dict (or the raw overrides when invalid)
    dir: Path
    error: str | None = None           # set when the config does not validate: recorded, never run
    arm_spec: Arm | None = None        # the arm this run belongs to (label, overrides)

    @property
    def arm(self) -> str:
        if self.arm_spec is not None:
            return self.arm_spec.name
        return arm_name(self.config["method"], self.config.get("robustlt", False))

    def row(self) -> dict:
        c = self.config
        return {"run": str(self.dir), "dataset": c.get("dataset"), "imbalance_ratio": c.get("imbalance_ratio"),
                "method": c.get("method"), "robustlt": bool(c.get("robustlt", False)), "arm": self.arm,
                "seed": c.get("seed"), "class_order": c.get("class_order", "label")}


@dataclass
class Sweep:
    root: Path
    dataset: str
    irs: list[float]
    arms: list[Arm]                                       # (method, robustlt) pairs are taken too
    seeds: list[int]
    config: dict = field(default_factory=dict)            # RunConfig overrides shared by every run
    method_overrides: dict = field(default_factory=dict)  # method -> overrides (from a preset)
    ir_overrides: dict = field(default_factory=dict)      # IR -> overrides: a budget sized per IR, equal across arms
    evaluation: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_EVALUATION))
    robust_attack: str | None = None  # the attack behind the robust metrics (default: pgd20 or the first)
    preset: str | None = None
    cell_timeout: float | None = None  # seconds one notebook cell may take; None: no limit
    primary: list = field(default_factory=list)    # pre-declared primary comparisons (presets.Preset.primary)
    health: dict = field(default_factory=dict)     # health gate rules (health.Rules)
    tuning: dict | None = None         # the equal tuning budget (tuning.py); its choices: root/tuning/tuning.json

    def __post_init__(self):
        self.irs, self.seeds = coerce("irs", self.irs, list[float]), coerce("seeds", self.seeds, list[int])
        self.arms = [Arm.of(a) for a in self.arms]
        self.ir_overrides = {float(k): v for k, v in self.ir_overrides.items()}   # JSON keys are strings
        labels = [a.name for a in self.arms]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:
            raise ConfigError(f"arms {twice} appear twice: give each arm its own label (LABEL=METHOD:...).")

    def plan(self, tuned: bool = True) -> list[Run]:
        """Every run with its config; with a tuning spec (and `tuned`), each arm's value chosen by tuning."""
        bad_axes = sorted(set(self.config) & set(SWEEP_AXES))
        if bad_axes:
            raise ConfigError(f"--set {bad_axes}: these are sweep axes; use --irs/--methods/--arms/--seeds/--robustlt.")
        choices = self.tuned_choices() if tuned and self.tuning else {}
        runs = []
        for ir in self.irs:
            for arm in self.arms:
                for seed in self.seeds:   # config < IR < method < arm < tuned < the sweep's axes
                    d = {**self.config, "dataset": self.dataset, **self.ir_overrides.get(float(ir), {}),
                         **self.method_overrides.get(arm.method, {}),
                         **arm.overrides, **choices.get(f"{float(ir):g}", {}).get(arm.name, {}),
                         "method": arm.method, "imbalance_ratio": float(ir), "seed": int(seed),
                         "robustlt": arm.robustlt}
                    d.setdefault("split_seed", int(seed))   # each seed draws its own data unless a preset fixes it
                    run = Run(d, run_path(self.root, self.dataset, ir, arm.method, arm.robustlt, seed, arm.name),
                              arm_spec=arm)
                    try:
                        run.config = RunConfig.from_dict(d).to_dict()
                    except ConfigError as e:
                        run.error = f"ConfigError: {e}"
                    runs.append(run)
        return runs

    def tuned_choices(self) -> dict:
        """{IR: {arm: overrides}} from root/tuning/tuning.json, made with this sweep's tuning spec."""
        path = Path(self.root) / TUNING_FILE
        fix = f"run `python -m taetlib tune{f' --preset {self.preset}' if self.preset else ''} --out {self.root}` first"
        if not path.exists():
            raise ConfigError(f"tuning={self.tuning}: this sweep tunes each arm on a validation split, and {path} "
                              f"does not exist yet; {fix}.")
        rec = json.loads(path.read_text())
        if rec.get("spec") != self.tuning:
            raise ConfigError(f"tuning: {path} was made with {rec.get('spec')}, this sweep asks for {self.tuning}; "
                              f"delete {path.parent} and {fix}.")
        missing = [f"IR {float(ir):g} {a.name}" for ir in self.irs for a in self.arms
                   if a.name not in rec["choices"].get(f"{float(ir):g}", {})]
        if missing:
            raise ConfigError(f"tuning: {path} holds no choice for {missing}; {fix}.")
        return {ir: {arm: c["overrides"] for arm, c in arms.items()} for ir, arms in rec["choices"].items()}

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "irs": self.irs, "arms": [a.to_dict() for a in self.arms], "seeds": self.seeds,
                "config": self.config, "method_overrides": self.method_overrides,
                "ir_overrides": self.ir_overrides, "evaluation": self.evaluation,
                "robust_attack": self.robust_attack, "preset": self.preset, "cell_timeout": self.cell_timeout,
                "primary": list(self.primary), "health": self.health, "tuning": self.tuning}


def from_preset(p: Preset, root: str | Path, irs=None) -> Sweep:
    """A preset's whole sweep into `root` (`irs`: others than the preset's)."""
    return Sweep(root=Path(root), dataset=p.config["dataset"], irs=irs or p.sweep["irs"], arms=list(p.sweep["arms"]),
                 seeds=p.sweep["seeds"], config={k: v for k, v in p.config.items() if k != "dataset"},
                 method_overrides=p.method_overrides, ir_overrides=p.ir_overrides, evaluation=p.evaluation,
                 preset=p.name, primary=list(p.primary), health=dict(p.health), tuning=p.tuning,
                 robust_attack=p.robust_attack)


def load_sweep(root: str | Path) -> Sweep:
    """The sweep a folder's sweep.json records (what it was asked to run), rooted at `root`."""
    return Sweep(root=Path(root), **json.loads((Path(root) / SWEEP_FILE).read_text()))


def budget_problems(runs: list[Run], tuned: bool = False) -> list[str]:
    """Unequal adversarial budgets, or RobustLT ramps that never reach the radius, among the valid runs
    of each (IR, seed): stated in the log and the report, since they make a comparison unfair. `tuned`:
    each arm's lr was chosen by tuning (the same grid for every arm), so the lr sequences are compared
    relative to each arm's lr."""
    groups: dict = {}
    for r in runs:
        if not r.error:
            cell = groups.setdefault((r.config["imbalance_ratio"], r.config["seed"]), {})
            cell[r.arm] = RunConfig.from_dict(r.config)
    notes = []
    for (ir, seed), configs in groups.items():
        notes += [f"IR {ir:g} seed {seed}: {p}" for p in unequal_budgets(configs, relative_lr=tuned)]
    return notes
