"""What evaluate() does, step by step: check the request and resolve every attack's parameters
(plan_evaluation), gather each distinct test image of the protocols once (test_pool), run every attack on
that pool and read each protocol off it (attack_pool), the PGD-20 robustness curves (attack_curves),
the zero-gradient check (zero_gradient_tables), then the tables, flags and summary (assemble)."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from .attack_suite import ATTACKS, SWEEP_ATTACK, fill_defaults, resolve_attacks, zero_gradient_mask
from .batches import Split, select_per_class
from .errors import bad, check_choice
from .eval_result import EvalResult, per_class_table, summary_table
from .sanity import SMALL_N, sanity_flags, small_classes
from .worst_case import NAME as WORST
from .worst_case import check_components
from .worst_case import worst_case as combine

__all__ = ["Attacked", "EvalPlan", "assemble", "attack_curves", "attack_pool", "plan_evaluation", "test_pool",
           "zero_gradient_tables"]


def _names(v) -> list[str]:
    return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else list(v)


def _sweep(eps_sweep, eps: float) -> list[float]:
    """Radii of the robustness curves; 0 and eps are always in (the eps0 and ordering checks use them)."""
    values = [0.0, eps / 2, eps] if eps_sweep is None else [float(e) for e in _names(eps_sweep)]
    for e in values:
        if e < 0:
            raise bad("eps_sweep", eps_sweep, "radii must be >= 0 (L-inf, [0,1] pixel units).")
    return sorted({0.0, float(eps), *values})


@dataclass
class EvalPlan:
    """What evaluate() runs: the attacks with their full parameters, the curve radii, the classes."""
    attacks: list[str]
    protocols: list[str]
    eps: float
    params: dict
    sweep: dict
    names: tuple
    worst_case: list = field(default_factory=list)   # attacks read together, image by image (worst_case.py)

    @property
    def C(self) -> int:
        return len(self.names)


@dataclass
class Attacked:
    """What the attacks produced, per protocol: tables, curves, predictions, seconds, log lines."""
    tables: list = field(default_factory=list)
    curves: list = field(default_factory=list)
    curve_clean: list = field(default_factory=list)
    zero_grad: list = field(default_factory=list)
    warn_rows: list = field(default_factory=list)
    log: list = field(default_factory=list)
    predictions: dict = field(default_factory=dict)
    pool_predictions: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    curve_n: int = 0
    kept: list = field(default_factory=list)   # attacks read back from keep_attacks, not run by this call


def plan_evaluation(data, attacks, protocols, eps, per_class, attack_params, eps_sweep, worst_case=()) -> EvalPlan:
    """Check the request and resolve every attack's parameters (and the curves') before anything runs."""
    attacks, protocols = _names(attacks), _names(protocols)
    attacks = ["clean", *[a for a in dict.fromkeys(attacks) if a != "clean"]]
    for p in protocols:
        check_choice("protocols", p, data.test)
    if per_class is not None and per_class < 1:
        raise bad("per_class", per_class, "must be >= 1, or None for the whole test set.")
    C = data.num_classes
    eps = float(data.spec.default_eps if eps is None else eps)
    if eps < 0:
        raise bad("eps", eps, "must be >= 0 (L-inf radius in [0,1] pixel units, e.g. 8/255).")
    params = resolve_attacks(attacks, attack_params, eps, C)
    sweep_base = {**ATTACKS[SWEEP_ATTACK].defaults, **(attack_params or {}).get(SWEEP_ATTACK, {})}
    sweep = {e: fill_defaults(SWEEP_ATTACK, {**sweep_base, "eps": e}, e, C) for e in _sweep(eps_sweep, eps)}
    worst = check_components(_names(worst_case), attacks) if worst_case else []
    return EvalPlan(attacks, protocols, eps, params, sweep, tuple(data.class_names), worst)


def attack_pool(attack, pool: Split, where: dict, plan: EvalPlan) -> Attacked:
    """Every attack once on the pool of test images; each protocol's tables and predictions read off it.
    attack(name, x, y, params) -> (predictions, seconds, log, kept): evaluate()'s run_attack, kept or not."""
    out, y_pool = Attacked(), pool.y.numpy()
    for name in plan.attacks:
        pred, secs, log, kept = attack(name, pool.x, pool.y, plan.params[name])   # a tqdm bar while it runs
        how = "kept from an earlier call, took" if kept else "took"
        acc = np.mean(pred == y_pool)
        print(f"evaluate: {name} on {len(pool)} test images: {how} {secs:.0f} s, accuracy {acc:.3f}", flush=True)
        out.kept += [name] if kept else []
        out.pool_predictions[name] = pred
        out.log += [f"{logging.getLevelName(level)} {message}" for level, message in log]
        _record(out, pool, where, plan, name, pred, secs, plan.params[name].get("eps", 0.0), log)
    if plan.worst_case:   # robust only if robust to every one of them, image by image
        pred = combine(y_pool, {a: out.pool_predictions[a] for a in plan.worst_case})
        secs = sum(out.seconds[(plan.protocols[0], a)] for a in plan.worst_case)
        _record(out, pool, where, plan, WORST, pred, secs, plan.eps)
    return out


def _record(out: Attacked, pool: Split, where: dict, plan: EvalPlan, name: str, pred, secs: float,
            attack_eps: float, log=()) -> None:
    """One attack's predictions on the pool, read off for every protocol: predictions, table, seconds."""
    y_pool = pool.y.numpy()
    for protocol, at in where.items():
        out.seconds[(protocol, name)] = secs  # one shared run serves every protocol
        y_np, index = y_pool[at], pool.positions().numpy()[at]
        out.predictions[(protocol, name)] = {"y": y_np, "pred": pred[at], "index": index}
        out.tables.append(per_class_table(name, protocol, attack_eps, y_np, pred[at], plan.names))
        out.warn_rows += [{"protocol": protocol, "message": message}
                          for level, message in log if level >= logging.WARNING]


def attack_curves(attack, pool: Split, where: dict, plan: EvalPlan, seed: int,
                  curve_per_class: int | None, out: Attacked) -> None:
    """The PGD-20 robustness curves, on a seeded stratified subset of the pool when curve_per_class is set
    (each extra radius is a full PGD-20 run); the main radius reuses the pgd20 run; and the clean
    reference of the eps=0 check on the same images."""
    y_pool = pool.y.numpy()
    sel = np.arange(len(pool)) if curve_per_class is None else select_per_class(
        y_pool, np.minimum(np.bincount(y_pool, minlength=plan.C), curve_per_class),
        np.random.default_rng(seed))
    inv = np.full(len(pool), -1)
    inv[sel] = np.arange(len(sel))
    out.curve_n = int(len(sel))
    for e, p in plan.sweep.items():
        if plan.params.get(SWEEP_ATTACK) == p:  # the main pgd20 run is this sweep point
            pred = out.pool_predictions[SWEEP_ATTACK][sel]
        else:
            pred, _, _, kept = attack(SWEEP_ATTACK, pool.x[sel], pool.y[sel], p)
            out.kept += [f"{SWEEP_ATTACK}@eps={e:.6g}"] if kept else []
        for protocol, at in where.items():
            mine = at[inv[at] >= 0]
            y_np, index, pr = y_pool[mine], pool.positions().numpy()[mine], pred[inv[mine]]
            out.predictions[(protocol, f"{SWEEP_ATTACK}@eps={e:.6g}")] = {"y": y_np, "pred": pr, "index": index}
            out.curves.append(per_class_table(SWEEP_ATTACK, protocol, e, y_np, pr, plan.names))
    for protocol, at in where.items():
        mine = at[inv[at] >= 0]
        out.curve_clean.append(per_class_table("clean", protocol, 0.0, y_pool[mine],
                                               out.pool_predictions["clean"][mine], plan.names))


def zero_gradient_tables(model: nn.Module, pool: Split, where: dict, plan: EvalPlan, batch_size: int,
                         device) -> list:
    """Per protocol and class: how many images give the attack a zero input gradient (gradient masking)."""
    zmask = zero_gradient_mask(model, pool.x, pool.y, batch_size=batch_size, device=device)
    tables = []
    for protocol, at in where.items():
        y_np = pool.y.numpy()[at]
        zt = per_class_table("clean", protocol, 0.0, y_np, np.where(zmask[at], y_np, -1), plan.names)  # count = zero
        tables.append(zt.rename(columns={"correct": "zero_gradient"}))
    return tables


def assemble(out: Attacked, plan: EvalPlan, data, config: dict) -> EvalResult:
    """The per-class table, the sanity flags, the small-class warning and the summary."""
    table, curves = pd.concat(out.tables, ignore_index=True), pd.concat(out.curves, ignore_index=True)
    table["train_count"] = table["class"].map(dict(enumerate(data.train_counts)))   # for recall-vs-frequency views
    aa_warnings = pd.DataFrame(out.warn_rows, columns=["protocol", "message"])
    flags = sanity_flags(table, curves, pd.concat(out.zero_grad, ignore_index=True), aa_warnings,
                         pd.concat(out.curve_clean, ignore_index=True))
    read = [*plan.attacks, *([WORST] if plan.worst_case else [])]
    main_preds = {k: v for k, v in out.predictions.items() if k[1] in read}
    small = small_classes(table)
    for protocol, text in small.items():
        if text:
            warnings.warn(f"{data.spec.name} {protocol} protocol: classes with fewer than {SMALL_N} test images, "
                          f"whose recall moves by 1/n per image: {text}. Read per-class and tail numbers there as "
                          "noise; the summary's small_classes column names them.", stacklevel=3)
    summary = summary_table(table, main_preds, data.train_counts, plan.names, flags, out.seconds, small)
    return EvalResult(table, summary, flags, curves, out.predictions, config, out.log)


def test_pool(splits: dict) -> tuple:
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
