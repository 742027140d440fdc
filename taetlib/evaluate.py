"""Evaluation suite: attacks by name -> one tidy per-class table, a summary and sanity flags.

`evaluate(model, data, attacks, protocols)` is the one call (RobustBench style). Every attack yields
per-sample predictions; every number is computed from them by metrics.py, and they are saved beside
the tables (predictions.npz), so any metric can be recomputed without attacking again.
`evaluate_run(run_dir)` does the same for a trained run folder; `python -m taetlib evaluate` calls it.
The steps of the one call are in eval_steps.py, the attacks by name in attack_suite.py, the sanity flags
in sanity.py (its docstring lists them), the tables and EvalResult in eval_result.py.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from . import attacks as atk
from . import numerics
from .attack_cache import kept_attack
from .attack_suite import ATTACKS
from .checkpoints import load_model
from .config import RunConfig, parse_sets
from .data import load_lt
from .distributed import resolve_device
from .errors import ConfigError, bad, check_choice
from .eval_result import EvalResult
from .eval_steps import assemble, attack_curves, attack_pool, plan_evaluation, test_pool, zero_gradient_tables
from .outside import load_weights
from .runlock import holds_run_lock
from .runs import ARM_FILE, JOINED, OUTSIDE, run_path
from .sanity import NOISE_Z

__all__ = ["DATA_FIELDS", "KEPT_SUFFIX", "OUTSIDE_ROOT", "add_cli", "data_config", "evaluate", "evaluate_run",
           "evaluate_weights", "join_sweep", "kept", "save_evaluation"]


# ------------------------------------------------------------------------------ the one call
@contextmanager
def _eval_mode(model: nn.Module, device, precision: str = "fp32", channels_last: bool = False):
    """Eval mode (BatchNorm running stats), fp32 weights on `device` and, only when precision='bf16' is
    asked, bf16 autocast; each module's mode is restored after. channels_last changes no number."""
    numerics.in_format(model.to(device=device), channels_last)
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        model.float()  # evaluation is fp32: half precision blunts gradients and flips borderline predictions
    with atk.bn_eval(model), numerics.autocast(device, precision == "bf16"):
        yield model


def _mark_precision(precision: str, *tables: pd.DataFrame) -> None:
    """A table made by bf16 attacks says so in every row: a weaker attack reads as higher robustness."""
    if precision != "fp32":
        for t in tables:
            t["eval_precision"] = precision


def evaluate(model: nn.Module, data, attacks=("clean", "pgd20"), protocols=("balanced",), *,
             eps: float | None = None, per_class: int | None = None, seed: int = 0, batch_size: int = 256,
             device=None, attack_params: dict | None = None, eps_sweep=None,
             curve_per_class: int | None = None, worst_case=(), precision: str = "fp32",
             channels_last: bool = False, keep_attacks=None) -> EvalResult:
    """Attack `model` on `data`'s test protocols; per-class table, summary, sanity flags, predictions.

    attacks: names from ATTACKS (list or "a,b"); 'clean' is always added (every check compares with it).
    eps: L-inf radius in [0,1] pixels; None = the dataset's default (8/255 CIFAR / DermaMNIST, 0.1 F-MNIST).
    per_class: evaluate on a seeded stratified subset of at most this many samples per class (None = all).
    attack_params: {"pgd20": {"step": 2/255}, "autoattack": {"version": "rand"}, ...}.
    eps_sweep: radii of the PGD-20 robustness curves (default 0, eps/2, eps; 0 and eps are always added).
    curve_per_class: run the curves on a seeded stratified subset of at most this many images per class
      (None = every image); the cheap way to keep the eps checks on a large test set.
    worst_case: two or more of `attacks` (e.g. pgd20, apgd_ce, apgd_t) read together as one more row,
      'worst_case': an image counts as robust only if every one of them left it correctly classified.
    The model is moved to `device` (default: where its parameters are) and run in fp32 eval mode.
    precision: 'fp32' (default) or 'bf16' (autocast: a weaker attack, faster; every table then carries an
      eval_precision column). channels_last: the model in that memory format (the same numbers).
    keep_attacks: a folder where each finished attack's predictions wait (attack_cache.py): a call killed
      mid-way and made again attacks only what had not finished. None (default): nothing kept.
    The test images are data's test protocols (fixed by dataset, n_max, test_per_class, split_seed and
    imbalance_ratio through load_lt), then per_class with seed.
    """
    check_choice("precision", precision, numerics.EVAL_PRECISIONS)
    plan = plan_evaluation(data, attacks, protocols, eps, per_class, attack_params, eps_sweep, worst_case)
    device = torch.device(device if device is not None else next(model.parameters(), torch.empty(0)).device)
    run = dict(batch_size=batch_size, device=device, seed=seed)
    numerics_key = {"precision": precision, "channels_last": channels_last}

    def attack(name: str, x, y, params: dict):
        return kept_attack(keep_attacks, name, model, x, y, params, run, numerics_key)
    splits = {p: data.test[p].subset_per_class(per_class, seed) for p in plan.protocols}
    pool, where = test_pool(splits)   # each distinct test image is attacked once, every protocol read off it
    with _eval_mode(model, device, precision, channels_last):
        out = attack_pool(attack, pool, where, plan)
        attack_curves(attack, pool, where, plan, seed, curve_per_class, out)
        out.zero_grad = zero_gradient_tables(model, pool, where, plan, batch_size, device)
    config = {
        "dataset": data.spec.name, "eps": plan.eps, "protocols": plan.protocols, "attacks": plan.params,
        "eps_sweep": {f"{e:.6g}": p for e, p in plan.sweep.items()}, "worst_case": plan.worst_case,
        "class_order": getattr(data, "manifest", {}).get("class_order", "label"), "curve_per_class": curve_per_class,
        "curve_n": out.curve_n, "subset": {p: {"per_class": per_class, "seed": seed, "n": len(sp),
                                               "counts": sp.counts(plan.C)} for p, sp in splits.items()},
        "seed": seed, "batch_size": batch_size, "device": str(device), "noise_z": NOISE_Z,
        "dtype": "float32" if precision == "fp32" else "bfloat16 autocast (eval_precision=bf16)",
        "memory_format": "channels_last" if channels_last else "contiguous",
        "seconds": {f"{p}/{a}": s for (p, a), s in out.seconds.items()},
        "kept_attacks": out.kept,   # read back from an earlier, interrupted call (their seconds are that call's)
        "versions": _versions(), "split_manifest": getattr(data, "manifest", {}).get("path"),
    }
    result = assemble(out, plan, data, config)
    _mark_precision(precision, result.table, result.summary, result.curves)
    return result


def _versions() -> dict:
    import pyautoattack  # heavy optional import, deferred for start-up time
    return {"torch": torch.__version__, "pyautoattack": getattr(pyautoattack, "__version__", "?")}


# ------------------------------------------------------------------------------ runs, outside weights, the subcommand
@holds_run_lock("run_dir")   # no training writes the weights while they are read, nor another evaluation eval/
def evaluate_run(run_dir, attacks=("clean", "pgd20"), protocols=("balanced", "long_tailed"), *,
                 out_dir=None, **kw) -> EvalResult:
    """Load a trained run (config.json + weights), evaluate it, save into run_dir/eval/ (or out_dir).
    Each attack's predictions wait in eval.partial/ until then: a call killed mid-way and made again
    attacks only what had not finished."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise bad("run", str(run_dir), f"{'holds no config.json' if run_dir.is_dir() else 'is no folder'}, so how "
                  "its model was built is unknown. Fix: a folder `train --run` wrote; for weights trained "
                  "elsewhere: evaluate --weights FILE --model NAME --dataset D.")
    cfg = RunConfig.load(run_dir / "config.json")
    kw["device"] = resolve_device(str(kw.get("device") or cfg.device))   # refuses a GPU this machine lacks
    num = numerics.resolve(cfg, torch.device(kw["device"]))   # channels_last as trained; fp32 unless asked
    kw.setdefault("precision", num.eval_precision)
    kw.setdefault("channels_last", num.channels_last)
    out = Path(out_dir) if out_dir is not None else run_dir / "eval"
    result = evaluate(load_model(run_dir), load_lt(cfg), attacks, protocols, **{"keep_attacks": kept(out), **kw})
    result.config["run_dir"] = str(run_dir)
    save_evaluation(result, out)
    return result


def kept(out: Path) -> Path:
    """Where each finished attack's predictions wait until `out` is saved (attack_cache.py)."""
    return out.with_name(out.name + KEPT_SUFFIX)


def save_evaluation(result: EvalResult, out: Path) -> None:
    result.save(out)
    shutil.rmtree(kept(out), ignore_errors=True)   # every attack is in out/predictions.npz now


KEPT_SUFFIX = ".partial"
DATA_FIELDS = ("dataset", "imbalance_ratio", "n_max", "test_per_class", "split_seed", "data_root", "seed", "device")
OUTSIDE_ROOT = "runs/outside"


def data_config(dataset: str, model: str, settings: dict | None = None) -> RunConfig:
    """The RunConfig that fixes the test images of an outside model (dataset, imbalance_ratio, n_max,
    test_per_class, split_seed, data_root) and names it (model, seed); nothing else may be set."""
    settings = dict(settings or {})
    other = sorted(set(settings) - set(DATA_FIELDS))
    if other:
        raise bad(other[0], settings[other[0]], f"not a setting of an evaluation; weights trained elsewhere take only "
                  f"{', '.join(DATA_FIELDS)} (what fixes the test images).")
    return RunConfig.from_dict({**settings, "dataset": dataset, "model": model})


def evaluate_weights(weights, model: str, dataset: str, attacks=("clean", "pgd20"),
                     protocols=("balanced", "long_tailed"), *, normalization=None, head: str = "fc",
                     settings: dict | None = None, label: str | None = None, out_root=OUTSIDE_ROOT,
                     **kw) -> EvalResult:
    """Evaluate a state_dict trained elsewhere, as architecture `model` (any name in the models registry,
    a plugin's too) on `dataset`'s test images (settings: imbalance_ratio, n_max, test_per_class,
    split_seed, ...; the same values give the same images). normalization: None (the file's own mean/std),
    'dataset', 'none' or 'MEAN/STD'. Saved as a run folder, <out_root>/<dataset>-ir<IR>/<label>/seed<S>/
    (config.json, arm.json, eval/ with robustbench.json), which a sweep's report lists as an arm when
    out_root is the sweep's folder (join_sweep). label: default the weights file's name."""
    cfg = data_config(dataset, model, settings)
    label = label or _label(Path(weights).stem)
    net, info = load_weights(weights, model, dataset, normalization=normalization, head=head)
    kw.setdefault("device", resolve_device(cfg.device))
    run_dir = run_path(out_root, cfg.dataset, cfg.imbalance_ratio, OUTSIDE, False, cfg.seed, label)
    result = evaluate(net, load_lt(cfg), attacks, protocols, **{"keep_attacks": kept(run_dir / "eval"), **kw})
    result.config["weights"] = info
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "method": OUTSIDE}, indent=2) + "\n")
    (run_dir / ARM_FILE).write_text(json.dumps({"label": label, "method": OUTSIDE, "robustlt": False,
                                                "overrides": {}, "weights": info}, indent=2) + "\n")
    save_evaluation(result, run_dir / "eval")
    result.config["run_dir"] = str(run_dir)
    return result


def _label(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", stem).strip("_") or "outside"


def join_sweep(root, weights, model: str, *, label: str, imbalance_ratio: float | None = None, seed: int = 0,
               normalization=None, head: str = "fc", **kw) -> EvalResult:
    """Evaluate outside weights as one more arm of the sweep in `root`: on its test images (its dataset,
    IR, n_max, test_per_class, split_seed) with its evaluation (attacks, eps, per_class, ...); the run
    folder lands in the sweep's layout with JOINED.json, so the sweep's next aggregate (`sweep ...
    --aggregate-only`) lists it in runs.csv, the aggregate and report.html."""
    root = Path(root)
    if not (root / "sweep.json").is_file():
        raise bad("join", str(root), "holds no sweep.json: not a sweep's folder. Fix: the --out of a sweep.")
    sw = json.loads((root / "sweep.json").read_text())
    irs = [float(i) for i in sw["irs"]]
    if imbalance_ratio is None and len(irs) > 1:
        raise bad("imbalance_ratio", None, f"the sweep in {root} has IRs {irs}; say which one the weights were "
                  "trained at (--set imbalance_ratio=IR).")
    ir = irs[0] if imbalance_ratio is None else float(imbalance_ratio)
    check_choice("imbalance_ratio", ir, irs)
    shared = {**sw.get("config", {}), **sw.get("ir_overrides", {}).get(str(ir), sw.get("ir_overrides", {}).get(ir, {}))}
    settings = {k: v for k, v in shared.items() if k in DATA_FIELDS}
    ev = dict(sw.get("evaluation", {}))
    ev["seed"] = ev.pop("eval_seed", 0)
    t0 = time.time()
    result = evaluate_weights(weights, model, sw["dataset"], ev.pop("attacks", ("clean", "pgd20")),
                              ev.pop("protocols", ("balanced", "long_tailed")), normalization=normalization,
                              head=head, settings={**settings, "imbalance_ratio": ir, "seed": seed}, label=label,
                              out_root=root, **{**ev, **kw})
    run_dir = Path(result.config["run_dir"])
    row = {"run": str(run_dir), "dataset": sw["dataset"], "imbalance_ratio": ir, "method": OUTSIDE,
           "robustlt": False, "arm": label, "seed": seed, "status": "done", "seconds": round(time.time() - t0, 1),
           "error": "", "notebook": ""}
    (run_dir / JOINED).write_text(json.dumps(row, indent=2) + "\n")
    return result


def add_cli(subparsers) -> None:
    """Register `python -m taetlib evaluate --run RUN ...` and `evaluate --weights FILE --model NAME --dataset D`."""
    p = subparsers.add_parser("evaluate", help="attack a trained run (tables and predictions go to RUN/eval/), or "
                                               "weights trained elsewhere")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory holding config.json and the weights")
    src.add_argument("--weights", help="a state_dict file trained elsewhere (with --model and --dataset)")
    p.add_argument("--attacks", default="clean,pgd20", help=f"comma list of {sorted(ATTACKS)}")
    p.add_argument("--protocols", default="balanced,long_tailed", help="comma list of balanced, long_tailed")
    p.add_argument("--eps", type=float, help="L-inf radius in [0,1] pixels (default: the dataset's)")
    p.add_argument("--eps-sweep", help="comma list of radii for the PGD-20 robustness curves")
    p.add_argument("--per-class", type=int, help="seeded stratified subset: at most this many per class")
    p.add_argument("--worst-case", default="", help="comma list of two or more of --attacks read together, image by "
                   "image, as the row worst_case (e.g. pgd20,apgd_ce,apgd_t)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's)")
    p.add_argument("--param", nargs="*", default=[], metavar="ATTACK.NAME=VALUE",
                   help="attack parameters, e.g. pgd20.step=0.002 autoattack.version=rand "
                        "autoattack.square.n_queries=1000")
    p.add_argument("--precision", choices=numerics.EVAL_PRECISIONS,
                   help="attack precision (default: the run's eval_precision, fp32 unless set); bf16 is a weaker "
                        "attack and marks every table")
    p.add_argument("--out", help="output directory (default RUN/eval; with --weights the folder under which the "
                                 f"run folder is made, default {OUTSIDE_ROOT})")
    w = p.add_argument_group("weights trained elsewhere")
    w.add_argument("--model", help="architecture, a name in the models registry (a plugin's too)")
    w.add_argument("--dataset", help="dataset the weights were trained on")
    w.add_argument("--normalization", help="what the network expects: dataset | none | MEAN/STD, e.g. "
                                           "0.49,0.48,0.45/0.25,0.24,0.26 (default: the file's own mean/std)")
    w.add_argument("--head", default="fc", help="classifier head the weights hold (fc, cosplus, he_norm)")
    w.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help=f"what fixes the test images: {', '.join(DATA_FIELDS[1:])}")
    w.add_argument("--label", help="the arm's name (default: the weights file's name)")
    w.add_argument("--join", metavar="SWEEP_ROOT", help="evaluate as one more arm of this sweep, on its test images "
                                                        "with its evaluation settings")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    attack_params: dict = {}
    for key, value in parse_sets(args.param).items():
        if "." not in key:
            raise ConfigError(f"--param {key!r}: expected ATTACK.NAME=VALUE, e.g. pgd20.step=0.004")
        attack, name = key.split(".", 1)
        attack_params.setdefault(attack, {})[name] = value
    kw = {k: v for k, v in dict(eps=args.eps, per_class=args.per_class, device=args.device,
                                precision=args.precision).items() if v is not None}
    if args.weights:
        return _cmd_weights(args, attack_params, kw)
    result = evaluate_run(args.run, args.attacks, args.protocols, out_dir=args.out, seed=args.seed,
                          batch_size=args.batch_size, attack_params=attack_params or None,
                          eps_sweep=args.eps_sweep, worst_case=args.worst_case, **kw)
    print(result)
    print(f"saved to {args.out or Path(args.run) / 'eval'}")
    return 0


def _cmd_weights(args, attack_params: dict, kw: dict) -> int:
    for flag in ("model", "dataset"):
        if getattr(args, flag) is None:
            raise ConfigError(f"evaluate --weights {args.weights}: --{flag} is missing. Fix: --model NAME (an "
                              f"architecture of the models registry) --dataset D (its test images).")
    sets = parse_sets(args.set)
    if args.join:
        fixed = sorted(set(sets) - {"imbalance_ratio", "seed"})
        if fixed:
            raise bad(fixed[0], sets[fixed[0]], f"the sweep in {args.join} fixes it (--join takes only imbalance_ratio "
                      "and seed).")
        result = join_sweep(args.join, args.weights, args.model, label=args.label or _label(Path(args.weights).stem),
                            imbalance_ratio=sets.pop("imbalance_ratio", None), seed=sets.pop("seed", 0),
                            normalization=args.normalization, head=args.head, batch_size=args.batch_size,
                            **{k: v for k, v in kw.items() if k == "device"})
    else:
        result = evaluate_weights(args.weights, args.model, args.dataset, args.attacks, args.protocols,
                                  normalization=args.normalization, head=args.head, settings=sets, label=args.label,
                                  out_root=args.out or OUTSIDE_ROOT, seed=args.seed, batch_size=args.batch_size,
                                  attack_params=attack_params or None, eps_sweep=args.eps_sweep, **kw)
    print(result)
    print(f"weights: {result.config['weights']['keys_mapped']} tensors mapped "
          f"(prefixes stripped: {result.config['weights']['prefixes_stripped'] or 'none'}), normalisation "
          f"{result.config['weights']['normalization']}")
    print(f"saved to {result.config['run_dir']} (eval/robustbench.json: the RobustBench record)")
    return 0
