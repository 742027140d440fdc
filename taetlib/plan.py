"""A sweep's plan: the grid of runs (IR x arm x seed), each with its validated config and folder, and
what makes the comparison unfair (unequal adversarial budgets), before anything runs. check_plan gathers
every bad cell (a config, a class left without training images, the evaluation, the Slurm settings)
into one ConfigError, so a bad grid is fixed in one go, before anything is written or submitted."""
from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

from . import presets
from .arms import Arm, arm_name
from .attack_suite import resolve_attacks
from .config import RunConfig, coerce, parse_sets
from .data import DATASETS, longtail_counts
from .errors import ConfigError, bad, check_choice
from .launchers import SlurmSettings
from .notebook_exec import declared_parameters
from .paths import resolve
from .plugins import load_plugins
from .presets import Preset
from .runs import DONE, FAILED, NB_EVAL, check_params, run_path
from .schedule import unequal_budgets
from .worst_case import NAME as WORST
from .worst_case import check_components

__all__ = ["DEFAULT_EVALUATION", "EVALUATION_TYPES", "POINT_FILE", "Run", "SWEEP_AXES", "SWEEP_FILE", "Sweep",
           "TUNING_FILE", "budget_problems", "check_plan", "config_hash", "finished_with_these_settings",
           "from_preset", "load_sweep", "plan_problems", "recorded", "start_time", "sweep_from_args"]

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
        if self.preset and resolve(f"results/{self.preset}/record/{TUNING_FILE}").exists():   # a new machine
            fix = (f"its tuning is in git: run `python -m taetlib restore --preset {self.preset} --root {self.root}` "
                   "first")
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


EVALUATION_TYPES = {"attacks": list[str], "protocols": list[str], "eps": Optional[float],   # notebook 04's
                    "eps_sweep": Optional[list[float]], "per_class": Optional[int],        # parameters
                    "curve_per_class": Optional[int], "attack_params": dict, "eval_seed": int,
                    "worst_case": Optional[list[str]]}


def _check_evaluation(evaluation: dict, robust_attack: str | None) -> None:
    unknown = sorted(set(evaluation) - declared_parameters(NB_EVAL))
    if unknown:
        raise ConfigError(f"evaluation {unknown}: not parameters of notebook {NB_EVAL} "
                          f"(it takes {sorted(declared_parameters(NB_EVAL))}).")
    ev = check_params(**{k: (v, EVALUATION_TYPES[k]) for k, v in evaluation.items() if k in EVALUATION_TYPES})
    attacks = ev.get("attacks", DEFAULT_EVALUATION["attacks"])
    for protocol in ev.get("protocols") or []:
        check_choice("protocols", protocol, ("balanced", "long_tailed"))
    for name in ("per_class", "curve_per_class"):
        if ev.get(name) is not None and ev[name] < 1:
            raise bad(name, ev[name], "must be >= 1, or None for every test image.")
    resolve_attacks(attacks, ev.get("attack_params"), 8 / 255 if ev.get("eps") is None else ev["eps"], 10)
    worst = check_components(ev["worst_case"], attacks) if ev.get("worst_case") else []
    if robust_attack is not None:   # an attack that runs, or their worst case per image where one is declared
        check_choice("robust_attack", robust_attack, [a for a in attacks if a != "clean"] + ([WORST] if worst else []))


def _check_launcher(slurm: SlurmSettings) -> None:
    if slurm.cpus_per_run is not None and (not isinstance(slurm.cpus_per_run, int) or slurm.cpus_per_run < 1):
        raise bad("cpus_per_run (--cpus-per-run)", slurm.cpus_per_run, "expected a whole number >= 1.")
    empty = [k for k, v in slurm.extra.items() if not k or v in ("", None)]
    if empty:
        raise bad("--sbatch", empty, "each setting needs a name and a value, e.g. --sbatch account=my_lab.")
    if slurm.cluster == "slurm" and shutil.which("sbatch") is None:
        raise bad("--launcher", "slurm", "no `sbatch` on this machine's PATH: submit from the cluster's login node, "
                                         "or --submitit-cluster local to run the jobs here.")


def plan_problems(sweep: Sweep, runs: list[Run], slurm: SlurmSettings | None = None) -> list[tuple[str, str]]:
    """Every bad cell of a sweep, as (where, what): each run whose RunConfig does not validate (an unknown
    arm, an IR below 1, ...), the evaluation and the launcher's settings."""
    root = resolve(sweep.root)
    out = [(str(r.dir.relative_to(root)), r.error.removeprefix("ConfigError: ")) for r in runs if r.error]
    out += [(str(r.dir.relative_to(root)), what) for r in runs if not r.error and (what := _empty_classes(r.config))]
    def launcher() -> None:
        if slurm is not None:
            _check_launcher(slurm)
    for where, check in (("evaluation", lambda: _check_evaluation(sweep.evaluation, sweep.robust_attack)),
                         ("launcher", launcher)):
        try:
            check()
        except ConfigError as e:
            out.append((where, str(e)))
    return out


def _empty_classes(config: dict) -> str:
    """What is wrong when the long-tail profile leaves a class without a training image (n_max given), else ''."""
    spec, n_max, ir = DATASETS.get(config["dataset"]), config.get("n_max"), config["imbalance_ratio"]
    if spec is None or spec.natural or not n_max:
        return ""
    least = min(longtail_counts(n_max, spec.num_classes, ir))
    if least >= 1:
        return ""
    return (f"imbalance_ratio={ir:g} with n_max={n_max} gives the rarest class {least} training images; every "
            f"class needs one. Fix: imbalance_ratio <= {n_max}, or a larger n_max.")


def check_plan(sweep: Sweep, slurm: SlurmSettings | None = None) -> list[Run]:
    """The sweep's runs, once every cell validates; else one ConfigError listing every bad cell (the same
    problem in many cells once, with its cells), before anything is written or submitted."""
    runs = sweep.plan()
    problems: dict[str, list[str]] = {}
    for where, what in plan_problems(sweep, runs, slurm):
        problems.setdefault(what, []).append(where)
    if problems:
        cells = sum(len(w) for w in problems.values())
        raise ConfigError(f"the sweep plan has {cells} bad cell(s); nothing was written or started: " + " | ".join(
            f"{', '.join(w)}: {what}" for what, w in problems.items()))
    return runs


# ------------------------------------------------------------------ a run's record; the sweep subcommand's Sweep
def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_with_these_settings(run: Run, done: dict) -> bool:
    """Whether a run's DONE.json record is of run.config: its hash, or for a run finished by taetlib 0.1 (whose
    config.json spelled method settings as flat keys, so another hash) the settings its config.json holds."""
    if done.get("config_hash") == config_hash(run.config):
        return True
    try:
        return RunConfig.load(run.dir / "config.json").to_dict() == run.config
    except (OSError, ValueError):   # no config.json, or one that no longer loads: not these settings
        return False


def recorded(run: Run) -> dict | None:
    """The status row a run's folder records (DONE.json / FAILED.json), None when it holds neither;
    a DONE.json written with other settings is a failure, never a result."""
    row, done, failed = run.row(), run.dir / DONE, run.dir / FAILED
    if run.error:
        return {**row, "status": "failed", "seconds": 0.0, "error": run.error, "notebook": ""}
    if done.exists():
        rec = json.loads(done.read_text())
        if finished_with_these_settings(run, rec):
            return {**row, "status": "done", "seconds": rec.get("seconds", 0.0), "error": "", "notebook": ""}
        return {**row, "status": "failed", "seconds": 0.0, "notebook": "",
                "error": f"{run.dir} finished earlier with other settings; delete it or sweep into another --out"}
    if failed.exists():
        rec = json.loads(failed.read_text())
        return {**row, "status": "failed", "seconds": rec.get("seconds", 0.0), "error": rec.get("error", ""),
                "notebook": rec.get("notebook", "")}
    return None


def sweep_from_args(args) -> Sweep:
    preset = None
    if args.preset:
        preset = presets.get(args.preset)
    pc, ps = (preset.config, preset.sweep) if preset else ({}, {})
    config = {**pc, **parse_sets(args.set)}
    plugins = getattr(args, "plugin", [])   # --plugin: recorded in sweep.json and every run's config.json
    if plugins:
        config["plugins"] = list(dict.fromkeys([*config.get("plugins", []), *load_plugins(plugins)]))
    dataset = args.dataset or config.pop("dataset", None) or "fashion_mnist"
    config.pop("dataset", None)
    variants = [True] if args.robustlt_only else [False, True] if args.robustlt else [False]
    if args.arms:
        if args.methods or args.robustlt or args.robustlt_only:
            raise ConfigError("--arms: give the arms either with --arms or with --methods/--robustlt, not both.")
        arms = [Arm.parse(a) for a in args.arms]
    elif args.methods or args.robustlt or args.robustlt_only or not ps.get("arms"):
        preset_methods = list(dict.fromkeys(Arm.of(a).method for a in ps.get("arms", [])))
        methods = args.methods or preset_methods or ["taet", "at_bsl", "pgd_at"]
        arms = [Arm(m, r) for m in methods for r in variants]
    else:
        arms = [Arm.of(a) for a in ps["arms"]]
    evaluation: dict = copy.deepcopy(preset.evaluation if preset else DEFAULT_EVALUATION)
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
                 method_overrides=dict(preset.method_overrides) if preset else {},
                 ir_overrides=dict(preset.ir_overrides) if preset else {}, evaluation=evaluation,
                 robust_attack=args.robust_attack or (preset.robust_attack if preset else None), preset=args.preset,
                 cell_timeout=args.cell_timeout, tuning=preset.tuning if preset else None,
                 primary=list(preset.primary) if preset else [], health=dict(preset.health) if preset else {})


def start_time(text: str | None, now: datetime | None = None) -> float | None:
    """--no-start-after: HH:MM (local time, its next occurrence) or an ISO date and time -> a time.time()."""
    if text is None:
        return None
    now = now or datetime.now()
    try:
        if hm := re.fullmatch(r"(\d{1,2}):(\d{2})", text):
            at = now.replace(hour=int(hm[1]), minute=int(hm[2]), second=0, microsecond=0)
            return (at if at > now else at + timedelta(days=1)).timestamp()
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise bad("--no-start-after", text, "give a local time HH:MM (e.g. 12:10) or an ISO date and time "
                  "(e.g. 2026-12-04T12:10).") from None
