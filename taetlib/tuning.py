"""The equal tuning budget: every arm of a comparison gets the same small grid for its learning rate, or,
for an objective with a loss scale of its own (TAET's HARL weights of 0.1 scale its gradient about tenfold
down), for that scale; the same number of values, the same training budget per value, the same attack.

The value is chosen once, on one seed (the spec's, else the sweep's first), by balanced robustness on a
validation split held out of that seed's training set (a stratified `val_fraction` of each class), and
then used for every seed. A study whose factor is a setting (Study B's class order) names it in
`held_fixed`: each arm is tuned without its own value of it, and the arms that then match share that one
tuning and its choice, so a change across the factor is the factor's, not a retuned lr's. The test set is
never read: the tuning runs train with eval_every=0 on data that holds no test split, and are read on the
validation split only. Each run trains on the training set less
the validation split, with the study run's epochs.

`python -m taetlib tune --preset P` writes OUT/tuning/: one folder per run (fit's files and point.json),
tuning.csv (every run: value, validation robustness and accuracy, seconds of the call that finished it, the
training's seconds over every session, SGD steps, status) and
tuning.json (the spec, the choice per IR and arm, the cost); a sweep whose preset tunes reads its choices
from there (plan.Sweep.tuned_choices), and refuses to start without them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import presets
from .attack_suite import resolve_attacks, run_attack
from .batches import Split
from .checkpoints import load_model
from .config import RunConfig
from .data import LTData, load_lt
from .distributed import resolve_device
from .errors import ConfigError, bad, check_choice
from .fit_state import TrainingDiverged
from .history import compute_seconds, read_history
from .metrics import balanced_accuracy
from .parallel import pmap
from .paths import resolve
from .plan import POINT_FILE, SWEEP_FILE, TUNING_FILE, Run, Sweep, from_preset, load_sweep
from .run_files import link_run, record_reuse, reuse_source
from .schedule import budget
from .selection import hold_out
from .sessions import read_sessions, session, wall_seconds
from .train import fit

__all__ = ["LOSS_SCALES", "PARAMS", "TuningSpec", "add_cli", "choose", "cmd_tune", "grid", "preset_tuning_budgets",
           "recorded_points", "recorded_rows", "recorded_tuning", "reuse_points", "same_config", "source_spec", "tune",
           "tune_point", "tuning_budget", "tuning_points", "validation_data"]

PARAMS = ("lr", "loss_scale")
# the fields one loss scale multiplies together: HARL's alpha, beta, gamma (alpha / (2 beta), where a class
# weight turns negative, stays where it is)
LOSS_SCALES = {"taet": {"harl_alpha": "alpha", "harl_beta": "beta", "harl_gamma": "gamma"}}   # setting -> its arg


@dataclass(frozen=True)
class TuningSpec:
    factors: dict                                  # param -> multipliers of the arm's own value; equal counts
    params: dict = field(default_factory=dict)     # method -> the param it tunes (default lr)
    attack: str = "pgd20"                          # the validation attack, the same for every arm
    val_fraction: float = 0.2                      # held out of each class of the tuning seed's training set
    seed: int | None = None                        # the seed tuned on (None: the sweep's first)
    held_fixed: list = field(default_factory=list)  # settings a study varies: tuned without them, one choice across

    @classmethod
    def of(cls, d: dict) -> TuningSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise bad("tuning", unknown, f"unknown keys; a tuning spec takes {sorted(names)}.")
        spec = cls(**d)
        spec.validate()
        return spec

    def validate(self) -> None:
        for param, values in self.factors.items():
            check_choice("tuning factors' param", param, PARAMS)
            if not values or any(not isinstance(v, (int, float)) or v <= 0 for v in values):
                raise bad(f"tuning.factors[{param!r}]", values, "must be a non-empty list of numbers > 0.")
        counts = {p: len(v) for p, v in self.factors.items()}
        if len(set(counts.values())) > 1:
            raise bad("tuning.factors", counts, "every param needs as many values: the budget is the same for "
                      "every arm.")
        for method, param in self.params.items():
            check_choice(f"tuning.params[{method!r}]", param, PARAMS)
            if param not in self.factors:
                raise bad(f"tuning.params[{method!r}]", param, f"has no factors; add tuning.factors[{param!r}].")
            if param == "loss_scale" and method not in LOSS_SCALES:
                raise bad(f"tuning.params[{method!r}]", param, f"{method} has no loss scale registered; those that "
                          f"do: {sorted(LOSS_SCALES)}. Tune its lr.")
        if "lr" not in self.factors:
            raise bad("tuning.factors", self.factors, "needs 'lr': the param of every method not in tuning.params.")
        if not 0 < self.val_fraction < 1:
            raise bad("tuning.val_fraction", self.val_fraction, "must lie in (0, 1).")
        resolve_attacks([self.attack], None, 0.1, 10)   # an unknown attack fails here, by name
        settings = {f.name for f in dataclasses.fields(RunConfig)}
        for name in self.held_fixed:
            if name not in settings or name in ("method", "robustlt", "imbalance_ratio", "seed", *PARAMS):
                raise bad("tuning.held_fixed", name, "must name a RunConfig setting an arm overrides (e.g. "
                          "class_order), not the method, an axis of the sweep or the tuned param.")

    def param_of(self, method: str) -> str:
        return self.params.get(method, "lr")

    def size(self) -> int:
        return len(next(iter(self.factors.values())))


def grid(spec: TuningSpec, config: dict) -> list[dict]:
    """One arm's grid: per value, the param, its factor, the value(s) and the RunConfig overrides."""
    param = spec.param_of(config["method"])
    cfg = RunConfig.from_dict(config)
    now = ({k: getattr(cfg.hparams, a) for k, a in LOSS_SCALES[cfg.method].items()} if param == "loss_scale"
           else {"lr": cfg.lr})
    fields = list(now)
    points = []
    for f in spec.factors[param]:
        overrides = {k: now[k] * f for k in fields}
        points.append({"param": param, "factor": f, "value": overrides[fields[0]], "overrides": overrides})
    return points


def tuning_budget(spec: TuningSpec, run: Run) -> dict:
    """What tuning spends on one arm: values tried, and per value its adversarial and clean epochs (the
    study run's), the validation attack and share."""
    cfg = RunConfig.from_dict(run.config)
    b = budget(cfg)
    return {"values": spec.size(), "adversarial_epochs": b["adversarial_epochs"], "clean_epochs": b["clean_epochs"],
            "attack": spec.attack, "val_fraction": spec.val_fraction}


def preset_tuning_budgets(p: presets.Preset) -> dict:
    """{IR: {arm: tuning_budget}} of a preset that tunes (a sweep with no folder: nothing is read)."""
    spec = TuningSpec.of(p.tuning or {})
    sweep = Sweep(root=Path("."), dataset=p.config["dataset"], irs=p.sweep["irs"], arms=list(p.sweep["arms"]),
                  seeds=p.sweep["seeds"][:1], config={k: v for k, v in p.config.items() if k != "dataset"},
                  method_overrides=p.method_overrides, ir_overrides=p.ir_overrides)
    out: dict = {}
    for r in sweep.plan(tuned=False):
        out.setdefault(r.config["imbalance_ratio"], {})[r.arm] = tuning_budget(spec, r)
    return out


# ------------------------------------------------------------------------------ one tuning run
def validation_data(data: LTData, val_fraction: float, seed: int) -> tuple[LTData, Split]:
    """(what trains: the training set less the validation split, and no test split; the validation split)."""
    C = data.num_classes
    train, val = hold_out(data.train, val_fraction, seed, C)
    manifest = {k: v for k, v in data.manifest.items() if k != "indices"}
    trains = LTData(spec=data.spec, classes=data.classes, train=train, test={}, train_counts=train.counts(C),
                    manifest={**manifest, "validation_fraction": val_fraction})
    return trains, val


def same_config(saved: dict | None, config: dict) -> bool:
    """Whether a recorded point was made with this config; a field added since counts as its default."""
    try:
        return saved is not None and RunConfig.from_dict(saved).to_dict() == config
    except ConfigError:   # a record no longer valid is not this config
        return False


def tune_point(config: dict, run_dir: str | Path, spec: dict) -> dict:
    """Train one grid value on the training set less the validation split, then read balanced accuracy and
    balanced robustness (spec's attack) on the validation split. Recorded in run_dir/point.json: a run
    holding one made with this config is not trained again."""
    run_dir = Path(run_dir)
    t0 = time.time()
    done = run_dir / POINT_FILE
    if done.exists() and same_config(json.loads(done.read_text()).get("config"), config):
        return json.loads(done.read_text())["result"]
    cfg = RunConfig.from_dict(config)
    trains, val = validation_data(load_lt(cfg), spec["val_fraction"], cfg.seed)
    device = resolve_device(cfg.device)
    result = {"status": "done", "error": "", "val_n": len(val), "train_n": len(trains.train)}
    try:
        fitted = fit(cfg, trains, run_dir)
        result["sgd_steps"] = len(fitted.history) * math.ceil(len(trains.train) / cfg.batch_size)
    except TrainingDiverged as e:   # a value that diverges is tried and recorded, never chosen
        result.update(status="diverged", error=str(e).splitlines()[0], val_balanced_accuracy=np.nan,
                      val_balanced_robustness=np.nan, sgd_steps=None)
    if result["status"] == "done":
        model = load_model(run_dir, device)
        eps = cfg.train_eps(trains.spec.default_eps)
        C = trains.num_classes
        params = resolve_attacks(["clean", spec["attack"]], None, eps, C)
        y = val.y.numpy()
        for name, key in (("clean", "val_balanced_accuracy"), (spec["attack"], "val_balanced_robustness")):
            pred = run_attack(name, model, val.x, val.y, params[name], device=device, seed=cfg.seed)
            result[key] = balanced_accuracy(y, pred, C)
    result["seconds"] = round(time.time() - t0, 1)
    done.write_text(json.dumps({"config": config, "result": result}, indent=2, default=float) + "\n")
    return result


# ------------------------------------------------------------------------------ the tuning of a sweep
def tuning_points(sweep: Sweep, spec: TuningSpec) -> list[dict]:
    """Every (IR, arm, value) of the sweep on the tuning seed: its row, the config it trains and `arms`, the
    arms that take its choice (the arm, and those that differ from it only in spec.held_fixed)."""
    seed = spec.seed if spec.seed is not None else sweep.seeds[0]
    arms = [dataclasses.replace(a, overrides={k: v for k, v in a.overrides.items() if k not in spec.held_fixed})
            for a in sweep.arms]
    runs = dataclasses.replace(sweep, seeds=[seed], tuning=None, arms=arms).plan(tuned=False)
    invalid = [f"{r.dir}: {r.error}" for r in runs if r.error]
    if invalid:
        raise ConfigError("tuning: invalid runs, fix them first: " + "; ".join(invalid))
    root = Path(sweep.root) / Path(TUNING_FILE).parent
    points: list[dict] = []
    shared: dict[str, list[str]] = {}   # a tuning run's config -> the arms that take its choice
    for r in runs:
        names = shared.setdefault(json.dumps(r.config, sort_keys=True), [])
        names.append(r.arm)
        if len(names) > 1:   # held at an earlier arm's tuning
            continue
        for g in grid(spec, r.config):
            # the test set is not read (eval_every 0); so no epoch is chosen on it, but FAWA's average stays
            select = "last" if r.config["select"] == "best_val_pgd" else r.config["select"]
            config = RunConfig.from_dict({**r.config, **g["overrides"], "eval_every": 0, "select": select}).to_dict()
            where = root / r.dir.relative_to(sweep.root).parent.parent / r.arm / f"{g['param']}x{g['factor']:g}"
            points.append({"imbalance_ratio": r.config["imbalance_ratio"], "arm": r.arm, "method": r.config["method"],
                           "seed": seed, "param": g["param"], "factor": g["factor"], "value": g["value"],
                           "overrides": g["overrides"], "config": config, "dir": str(where), "arms": names})
    return points


def choose(rows: pd.DataFrame) -> pd.Series:
    """The chosen value of one arm: the highest validation balanced robustness; of ties, the factor
    nearest 1 (the arm's own value)."""
    ok = rows[rows["status"] == "done"]
    if ok.empty:
        raise ConfigError(f"tuning: every value of arm {rows['arm'].iloc[0]} failed ({'; '.join(rows['error'])}); "
                          "widen or lower the grid.")
    best = ok["val_balanced_robustness"].max()
    tied = ok[ok["val_balanced_robustness"] == best]
    return tied.loc[tied["factor"].map(lambda f: abs(math.log(f))).idxmin()]


def recorded_tuning(sweep: Sweep, points: list[dict]) -> dict | None:
    """The sweep folder's tuning.json where it records every tuning run as finished (done or diverged), made
    with this spec and these configs (re-derived from the folder's sweep.json): a finished tuning restored from
    git, whose run folders need not be there (Study A's were lost with a replaced machine). None otherwise."""
    root = Path(sweep.root)
    record = json.loads((root / TUNING_FILE).read_text()) if (root / TUNING_FILE).exists() else {}
    if json.dumps(record.get("spec"), sort_keys=True) != json.dumps(sweep.tuning, sort_keys=True):
        return None
    ran = {_canonical(config) for config, row in recorded_rows(root) if row.get("status") in ("done", "diverged")}
    return record if points and all(_canonical(p["config"]) in ran for p in points) else None


def _canonical(config: dict) -> str:
    """A config as same_config compares it (a field added since at its default), as one string."""
    return json.dumps(RunConfig.from_dict(config).to_dict(), sort_keys=True, default=str)


def tune(sweep: Sweep, jobs: int = 1, log=print) -> dict:
    """Run (or resume) every tuning run of `sweep`, choose each arm's value, write tuning.csv and tuning.json."""
    if not sweep.tuning:
        raise bad("tuning", sweep.tuning, "this sweep has no tuning spec; give a preset that tunes (e.g. "
                  "fmnist_lt_study_a) or a spec.")
    spec = TuningSpec.of(sweep.tuning)
    points = tuning_points(sweep, spec)
    finished = recorded_tuning(sweep, points)
    if finished is not None:
        log(f"tuning: finished already ({Path(sweep.root) / TUNING_FILE} records every one of its {len(points)} runs); "
            "nothing to train, the record is left as it is")
        return finished
    log(f"tuning {len(points)} runs ({spec.size()} values x {len(points) // spec.size()} arm(s) x IR) on seed "
        f"{points[0]['seed']}, by balanced {spec.attack} robustness on {spec.val_fraction:.0%} of each class")
    t0 = time.time()
    args = [(p["config"], p["dir"], dataclasses.asdict(spec)) for p in points]
    root = Path(sweep.root) / Path(TUNING_FILE).parent
    with session(root, "tune", jobs=jobs):   # the tuning's wall time, over every session it needs
        results = pmap(tune_point, args, jobs, lambda r: log(f"  tuning run: {r['status']}, {r['seconds']:.0f} s"))
    rows = pd.DataFrame([{**{k: v for k, v in p.items() if k not in ("config", "overrides")},
                          "arms": " ".join(p["arms"]), **res}
                         for p, res in zip(points, results)])
    # the training's own seconds from each point's history, every session counted (a call's `seconds` holds
    # only what that call ran, e.g. the last epochs of a point resumed after a kill)
    # (a reading adopted from another study's record has no history here: its record's seconds)
    rows["train_seconds"] = [compute_seconds(read_history(p["dir"])) or float(res.get("train_seconds") or 0.0)
                             for p, res in zip(points, results)]
    rows["chosen"] = False
    choices: dict = {}
    for (ir, arm), group in rows.groupby(["imbalance_ratio", "arm"], sort=False):
        best = choose(group)
        rows.loc[best.name, "chosen"] = True
        point = points[best.name]
        for name in point["arms"]:   # the arm, and those held at its value across spec.held_fixed
            choices.setdefault(f"{ir:g}", {})[name] = {
                "param": point["param"], "factor": point["factor"], "value": point["value"],
                "overrides": point["overrides"], "val_balanced_robustness": best["val_balanced_robustness"],
                "tuned_as": arm}
    rows.to_csv(root / "tuning.csv", index=False)
    record = {"spec": sweep.tuning, "seed": points[0]["seed"], "attack": spec.attack,
              "validation": f"{spec.val_fraction:g} of each class of the tuning seed's training set; "
                            "the test set is not read",
              "choices": choices,
              "cost": {"runs": len(rows), "seconds": float(rows["train_seconds"].sum()),
                       "sgd_steps": int(rows["sgd_steps"].fillna(0).sum()),
                       "last_call_wall_seconds": round(time.time() - t0),
                       "wall_seconds": round(wall_seconds(read_sessions(root))),
                       "sessions": len(read_sessions(root))},
              "runs": json.loads(rows.to_json(orient="records"))}
    (root / "tuning.json").write_text(json.dumps(record, indent=2) + "\n")
    for ir, arms in choices.items():
        log(f"IR {ir}: " + ", ".join(f"{a} {c['param']} {c['value']:g} (x{c['factor']:g})" for a, c in arms.items()))
    log(f"tuning written: {root / 'tuning.json'}, {root / 'tuning.csv'}")
    return record


# ------------------------------------------------------------------------------ reusing another sweep's
def source_spec(source: Path) -> dict | None:
    """The tuning spec another sweep folder tuned with (its tuning.json, else its sweep.json)."""
    for path, key in ((source / TUNING_FILE, "spec"), (source / SWEEP_FILE, "tuning")):
        if path.exists():
            return json.loads(path.read_text()).get(key)
    return None


def recorded_rows(source: Path) -> list[tuple[dict, dict]]:
    """(config, row) of each tuning run another sweep folder's tuning.json records, whether or not its run
    folder survives (Study A's were lost with a replaced machine): the source's points re-derived from its
    sweep.json, matched to the record's rows by IR, arm and factor."""
    if not (source / TUNING_FILE).exists() or not (source / SWEEP_FILE).exists():
        return []
    record = json.loads((source / TUNING_FILE).read_text())
    rows = {(float(r["imbalance_ratio"]), r["arm"], float(r["factor"])): r for r in record.get("runs", [])}
    points = tuning_points(load_sweep(source.resolve()), TuningSpec.of(record["spec"]))
    return [(p["config"], row) for p in points
            if (row := rows.get((float(p["imbalance_ratio"]), p["arm"], float(p["factor"])))) is not None]


def recorded_points(source: Path) -> list[tuple[dict, dict]]:
    """(config, result) of each tuning run another sweep folder records with a validation reading
    (recorded_rows), its result marked `reused_from` that folder's tuning.json."""
    keep = ("status", "error", "val_balanced_robustness", "val_balanced_accuracy", "sgd_steps", "train_seconds")
    return [(config, {**{k: row.get(k) for k in keep}, "seconds": 0.0,
                      "reused_from": str((source / TUNING_FILE).resolve())})
            for config, row in recorded_rows(source)
            if row.get("status") == "done" and row.get("val_balanced_robustness") is not None]


def reuse_points(sweep: Sweep, source: Path, log=print) -> list[tuple[Path, Path]]:
    """Link into this sweep's tuning folder the tuning runs another sweep folder finished with the same config
    (seed included) and the same validation (attack, fraction): Study B's AT-BSL and TAET from Study A. Where
    the source's run folder is gone but its tuning.json holds the reading, that reading is adopted: a new
    folder holding only point.json, its result marked `reused_from`. A run folder that exists here already is
    left as it is."""
    spec, theirs = TuningSpec.of(sweep.tuning or {}), source_spec(source)
    other = TuningSpec.of(theirs) if theirs else None
    if other is None or (other.attack, other.val_fraction) != (spec.attack, spec.val_fraction):
        log(f"reuse: no tuning run linked; {source} tuned with {theirs}, this sweep validates with "
            f"{spec.attack} on {spec.val_fraction:g} of each class")
        return []
    done = [(rec["config"], p.parent) for p in sorted((source / TUNING_FILE).parent.rglob(POINT_FILE))
            if (rec := json.loads(p.read_text())).get("result", {}).get("status") == "done"]
    recorded = recorded_points(source)
    pairs, adopted = [], []
    for point in tuning_points(sweep, spec):
        dst = Path(point["dir"])
        if dst.exists():
            continue
        src = next((d for c, d in done if same_config(c, point["config"])), None)
        if src is not None:
            link_run(src, dst)
            pairs.append((src, dst))
        elif (result := next((r for c, r in recorded if same_config(c, point["config"])), None)) is not None:
            dst.mkdir(parents=True)
            (dst / POINT_FILE).write_text(json.dumps({"config": point["config"], "result": result}, indent=2) + "\n")
            adopted.append((source / TUNING_FILE, dst))
    record_reuse(sweep.root, "tuning", source, pairs + adopted)
    log(f"reuse: {len(pairs)} tuning run(s) linked from {source}" +
        (f", {len(adopted)} reading(s) adopted from its tuning.json (their run folders are gone)" if adopted else ""))
    return pairs + adopted


# ------------------------------------------------------------------------------ CLI
def add_cli(subparsers) -> None:
    p = subparsers.add_parser("tune", help="the equal tuning budget: each arm's lr (or loss scale) on a validation "
                                           "split, once, before the sweep")
    p.add_argument("--preset", required=True, help="a preset that tunes (its `tuning` spec)")
    p.add_argument("--out", help="the sweep's folder (default runs/<preset>); the record goes to OUT/tuning/")
    p.add_argument("--irs", nargs="+", type=float, help="imbalance ratios (default: the preset's)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--reuse-from", metavar="FOLDER", help="first link the tuning runs this other sweep folder "
                   "finished with the same config and validation (Study B from Study A); recorded in reused.json")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    p = presets.get(args.preset)
    if not p.tuning:
        raise bad("preset", args.preset, "has no tuning spec; presets that tune: "
                  f"{sorted(n for n, q in presets.PRESETS.items() if q.tuning)}.")
    if args.jobs < 1:
        raise bad("--jobs", args.jobs, "must be >= 1.")
    sweep = from_preset(p, resolve(args.out or f"runs/{p.name}"), irs=args.irs)
    if args.reuse_from:
        reuse_points(sweep, reuse_source(args.reuse_from, sweep.root))
    tune(sweep, jobs=args.jobs)
    return 0

