"""Evaluation suite: attacks by name -> one tidy per-class table, a summary and sanity flags.

`evaluate(model, data, attacks, protocols)` is the one call (RobustBench style). Every attack yields
per-sample predictions; every number is computed from them by metrics.py, and they are saved beside
the tables (predictions.npz), so any metric can be recomputed without attacking again.
`evaluate_run(run_dir)` does the same for a trained run folder; `python -m taetlib evaluate` calls it.
The attacks by name are in attack_suite.py, the sanity flags in sanity.py (its docstring lists them),
the tables and EvalResult in eval_result.py.
"""
from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import attacks as atk
from .attack_suite import ATTACKS, SWEEP_ATTACK, fill_defaults, resolve_attacks, run_attack, zero_gradient_mask
from .batches import Split, select_per_class
from .checkpoints import load_model
from .config import RunConfig, parse_sets
from .data import load_lt
from .distributed import resolve_device
from .errors import ConfigError, bad, check_choice
from .eval_result import EvalResult, per_class_table, summary_table
from .sanity import NOISE_Z, SMALL_N, sanity_flags, small_classes
from .worst_case import NAME as WORST
from .worst_case import check_components
from .worst_case import worst_case as combine

__all__ = ["add_cli", "evaluate", "evaluate_run"]


# ------------------------------------------------------------------------------ the one call
def _names(v) -> list[str]:
    return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else list(v)


def _sweep(eps_sweep, eps: float) -> list[float]:
    """Radii of the robustness curves; 0 and eps are always in (the eps0 and ordering checks use them)."""
    values = [0.0, eps / 2, eps] if eps_sweep is None else [float(e) for e in _names(eps_sweep)]
    for e in values:
        if e < 0:
            raise bad("eps_sweep", eps_sweep, "radii must be >= 0 (L-inf, [0,1] pixel units).")
    return sorted({0.0, float(eps), *values})


@contextmanager
def _eval_mode(model: nn.Module, device):
    """Eval mode (BatchNorm running stats) and fp32 on `device`; each module's mode is restored after."""
    model.to(device=device)
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        model.float()  # evaluation is fp32: half precision blunts gradients and flips borderline predictions
    with atk.bn_eval(model):
        yield model


def evaluate(model: nn.Module, data, attacks=("clean", "pgd20"), protocols=("balanced",), *,
             eps: float | None = None, per_class: int | None = None, seed: int = 0, batch_size: int = 256,
             device=None, attack_params: dict | None = None, eps_sweep=None,
             curve_per_class: int | None = None, worst_case=()) -> EvalResult:
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
    """
    attacks, protocols = _names(attacks), _names(protocols)
    attacks = ["clean", *[a for a in dict.fromkeys(attacks) if a != "clean"]]
    for p in protocols:
        check_choice("protocols", p, data.test)
    if per_class is not None and per_class < 1:
        raise bad("per_class", per_class, "must be >= 1, or None for the whole test set.")
    C, names = data.num_classes, tuple(data.class_names)
    eps = float(data.spec.default_eps if eps is None else eps)
    if eps < 0:
        raise bad("eps", eps, "must be >= 0 (L-inf radius in [0,1] pixel units, e.g. 8/255).")
    params = resolve_attacks(attacks, attack_params, eps, C)
    worst_case = check_components(_names(worst_case), attacks) if worst_case else []
    sweep_base = {**ATTACKS[SWEEP_ATTACK], **(attack_params or {}).get(SWEEP_ATTACK, {})}
    sweep = {e: fill_defaults(SWEEP_ATTACK, {**sweep_base, "eps": e}, e, C) for e in _sweep(eps_sweep, eps)}
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    device = torch.device(device)

    tables, curves, zero_grad, warn_rows, log = [], [], [], [], []
    predictions, seconds, subset = {}, {}, {}
    run = dict(batch_size=batch_size, device=device, seed=seed)
    splits = {p: data.test[p].subset_per_class(per_class, seed) for p in protocols}
    for p, split in splits.items():
        subset[p] = {"per_class": per_class, "seed": seed, "n": len(split), "counts": split.counts(C)}
    # The protocols draw from one test set (the long-tailed one is a subset of the balanced one when
    # both are whole): attack each distinct test image once, then read every protocol off that run.
    pool, where = _pool(splits)
    predictions_pool, curve_clean = {}, []
    y_pool = pool.y.numpy()
    with _eval_mode(model, device):
        def attack_pool(name, p, records=None):
            t0 = time.perf_counter()   # run_attack shows a tqdm bar while it runs; one line when done
            pred = run_attack(name, model, pool.x, pool.y, p, log=records if records is not None else [], **run)
            print(f"evaluate: {name} on {len(pool)} test images: {time.perf_counter() - t0:.0f} s, "
                  f"accuracy {np.mean(pred == y_pool):.3f}", flush=True)
            return pred, time.perf_counter() - t0

        def record(name, pred, secs, attack_eps, records=()):
            for protocol, at in where.items():
                seconds[(protocol, name)] = secs  # one shared run serves every protocol
                y_np, index = y_pool[at], pool.index.numpy()[at]
                predictions[(protocol, name)] = {"y": y_np, "pred": pred[at], "index": index}
                tables.append(per_class_table(name, protocol, attack_eps, y_np, pred[at], names))
                warn_rows.extend({"protocol": protocol, "message": r.getMessage()}
                                 for r in records if r.levelno >= logging.WARNING)

        for name in attacks:
            records = []
            pred, secs = attack_pool(name, params[name], records)
            predictions_pool[name] = pred
            log += [f"{r.levelname} {r.getMessage()}" for r in records]
            record(name, pred, secs, params[name].get("eps", 0.0), records)
        if worst_case:   # robust only if robust to every one of them, image by image
            record(WORST, combine(y_pool, {a: predictions_pool[a] for a in worst_case}),
                   sum(seconds[(protocols[0], a)] for a in worst_case), eps)
        # Robustness curves: on a seeded stratified subset of the pool when curve_per_class is set
        # (each extra radius is a full PGD-20 run); the main radius reuses the pgd20 run above.
        sel = np.arange(len(pool)) if curve_per_class is None else select_per_class(
            y_pool, np.minimum(np.bincount(y_pool, minlength=C), curve_per_class), np.random.default_rng(seed))
        inv = np.full(len(pool), -1)
        inv[sel] = np.arange(len(sel))
        for e, p in sweep.items():
            if params.get(SWEEP_ATTACK) == p:  # the main pgd20 run is this sweep point
                pred = predictions_pool[SWEEP_ATTACK][sel]
            else:
                pred = run_attack(SWEEP_ATTACK, model, pool.x[sel], pool.y[sel], p, **run)
            for protocol, at in where.items():
                mine = at[inv[at] >= 0]
                y_np, index, pr = y_pool[mine], pool.index.numpy()[mine], pred[inv[mine]]
                predictions[(protocol, f"{SWEEP_ATTACK}@eps={e:.6g}")] = {"y": y_np, "pred": pr, "index": index}
                curves.append(per_class_table(SWEEP_ATTACK, protocol, e, y_np, pr, names))
        for protocol, at in where.items():  # the reference of the eps=0 check, on the same images
            mine = at[inv[at] >= 0]
            curve_clean.append(per_class_table("clean", protocol, 0.0, y_pool[mine],
                                               predictions_pool["clean"][mine], names))
        zmask = zero_gradient_mask(model, pool.x, pool.y, batch_size=batch_size, device=device)
        for protocol, at in where.items():
            y_np = y_pool[at]
            zt = per_class_table("clean", protocol, 0.0, y_np, np.where(zmask[at], y_np, -1), names)  # count = zero
            zero_grad.append(zt.rename(columns={"correct": "zero_gradient"}))

    table, curves = pd.concat(tables, ignore_index=True), pd.concat(curves, ignore_index=True)
    table["train_count"] = table["class"].map(dict(enumerate(data.train_counts)))   # for recall-vs-frequency views
    aa_warnings = pd.DataFrame(warn_rows, columns=["protocol", "message"])
    flags = sanity_flags(table, curves, pd.concat(zero_grad, ignore_index=True), aa_warnings,
                         pd.concat(curve_clean, ignore_index=True))
    main_preds = {k: v for k, v in predictions.items() if k[1] in [*attacks, *([WORST] if worst_case else [])]}
    small = small_classes(table)
    for protocol, text in small.items():
        if text:
            warnings.warn(f"{data.spec.name} {protocol} protocol: classes with fewer than {SMALL_N} test images, "
                          f"whose recall moves by 1/n per image: {text}. Read per-class and tail numbers there as "
                          "noise; the summary's small_classes column names them.", stacklevel=2)
    summary = summary_table(table, main_preds, data.train_counts, names, flags, seconds, small)
    config = {
        "dataset": data.spec.name, "eps": eps, "protocols": protocols, "attacks": params,
        "eps_sweep": {f"{e:.6g}": p for e, p in sweep.items()}, "worst_case": worst_case,
        "curve_per_class": curve_per_class,
        "curve_n": int(len(sel)), "subset": subset, "seed": seed,
        "batch_size": batch_size, "device": str(device), "dtype": "float32", "noise_z": NOISE_Z,
        "seconds": {f"{p}/{a}": s for (p, a), s in seconds.items()},
        "versions": _versions(), "split_manifest": getattr(data, "manifest", {}).get("path"),
        "class_order": getattr(data, "manifest", {}).get("class_order", "label"),
    }
    return EvalResult(table, summary, flags, curves, predictions, config, log)


def _pool(splits: dict) -> tuple:
    """The distinct test images of all protocols, and where each protocol's samples sit in that pool."""
    idx = {p: (sp.index if sp.index is not None else torch.arange(len(sp))) for p, sp in splits.items()}
    allidx = torch.cat(list(idx.values()))
    uniq, inverse = torch.unique(allidx, return_inverse=True)
    # rows of the pool: take each distinct index from whichever protocol holds it
    xs = torch.cat([sp.x for sp in splits.values()])
    ys = torch.cat([sp.y for sp in splits.values()])
    pick = torch.empty(len(uniq), dtype=torch.long)
    pick[inverse] = torch.arange(len(allidx))
    pool = Split(xs[pick], ys[pick], uniq)
    where, off = {}, 0
    for p, i in idx.items():
        where[p] = inverse[off:off + len(i)].numpy()
        off += len(i)
    return pool, where


def _versions() -> dict:
    import pyautoattack  # heavy optional import, deferred for start-up time
    return {"torch": torch.__version__, "pyautoattack": getattr(pyautoattack, "__version__", "?")}


# ------------------------------------------------------------------------------ runs and the subcommand
def evaluate_run(run_dir, attacks=("clean", "pgd20"), protocols=("balanced", "long_tailed"), *,
                 out_dir=None, **kw) -> EvalResult:
    """Load a trained run (config.json + weights), evaluate it, save into run_dir/eval/ (or out_dir)."""
    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / "config.json")
    kw.setdefault("device", resolve_device(cfg.device))
    result = evaluate(load_model(run_dir), load_lt(cfg), attacks, protocols, **kw)
    result.config["run_dir"] = str(run_dir)
    result.save(out_dir if out_dir is not None else run_dir / "eval")
    return result


def add_cli(subparsers) -> None:
    """Register `python -m taetlib evaluate --run RUN --attacks pgd20,autoattack --protocols ...`."""
    p = subparsers.add_parser("evaluate", help="attack a trained run; tables and predictions go to RUN/eval/")
    p.add_argument("--run", required=True, help="run directory holding config.json and the weights")
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
    p.add_argument("--out", help="output directory (default RUN/eval)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    attack_params: dict = {}
    for key, value in parse_sets(args.param).items():
        if "." not in key:
            raise ConfigError(f"--param {key!r}: expected ATTACK.NAME=VALUE, e.g. pgd20.step=0.004")
        attack, name = key.split(".", 1)
        attack_params.setdefault(attack, {})[name] = value
    kw = {k: v for k, v in dict(eps=args.eps, per_class=args.per_class, device=args.device).items() if v is not None}
    result = evaluate_run(args.run, args.attacks, args.protocols, out_dir=args.out, seed=args.seed,
                          batch_size=args.batch_size, attack_params=attack_params or None,
                          eps_sweep=args.eps_sweep, worst_case=args.worst_case, **kw)
    print(result)
    print(f"saved to {args.out or Path(args.run) / 'eval'}")
    return 0
