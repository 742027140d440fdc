"""The evaluation attacks by name: their parameters and defaults, the checks that refuse a bad one
before anything runs, and running one on a model over uint8 images (AutoAttack's log captured).

Every attack yields per-sample predictions; evaluate.py turns them into tables.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import attacks as atk
from .errors import Registry, bad, check_choice

__all__ = ["AA_ATTACKS", "AA_DERIVED", "AA_SINGLE", "AA_STANDARD_RESTARTS", "AA_SUBATTACKS", "AA_VERSIONS", "ATTACKS",
           "AttackSpec", "ITERATES", "PGD_ARGS", "STARTS", "STEP_FRACTION", "SWEEP_ATTACK", "fill_defaults",
           "resolve_attacks", "run_attack", "zero_gradient_mask"]

STEP_FRACTION = 1 / 8  # PGD step = eps / 8: 1/255 at 8/255, the TAET and RobustLT evaluation code
AA_VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
AA_SUBATTACKS = ("apgd", "apgd_targeted", "fab", "square")
AA_SINGLE = {"apgd_ce": "apgd-ce", "apgd_t": "apgd-t"}   # attack name -> its pyautoattack sub-attack, alone
# ... with the restarts AutoAttack's standard version gives it (Linf, L2): its 'custom' version would keep
# APGDAttack's constructor default of 5 restarts, five times the cost of the attack AutoAttack reports
AA_STANDARD_RESTARTS = {"apgd_ce": {"apgd.n_restarts": 1}, "apgd_t": {"apgd_targeted.n_restarts": 1}}
AA_DERIVED = ("apgd_targeted.n_target_classes", "fab.n_target_classes")   # set by _aa_derive
ITERATES = ("last", "any")
STARTS = ("uniform", "normal", "uniform_pos", "none")
SWEEP_ATTACK = "pgd20"  # the attack the eps sweep repeats at every radius


@dataclass(frozen=True)
class AttackSpec:
    """One evaluation attack: its parameters' defaults (None: derived from the evaluation's eps by `derive`),
    the check that refuses a bad name or value before any attack runs, and how it runs."""
    defaults: dict
    run: Callable[..., np.ndarray]   # (name, model, x uint8, y, params, *, batch_size, device, seed, log) -> preds
    check: Callable[[str, dict], None]   # (name, params with defaults) -> None, or raise bad(...)
    derive: Callable[[dict, float, int], dict]   # (params, eps, num_classes) -> params with derived values


# ------------------------------------------------------------------------------ checks
def _check_names(name: str, params: dict, extra: tuple[str, ...] = ()) -> None:
    """Unknown parameter names fail before any attack runs, naming the allowed ones."""
    for key in params:
        if key not in ATTACKS[name].defaults:
            allowed = sorted(ATTACKS[name].defaults) + list(extra)
            raise bad(f"attack_params[{name!r}]", key, f"unknown parameter of {name}; choose from {allowed}.")


def _check_radius(where: str, p: dict) -> None:
    for key in ("eps", "step"):
        v = p.get(key)
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise bad(f"{where}[{key!r}]", v, "must be a number >= 0 (L-inf, [0,1] pixel units).")


def _check_pgd(name: str, p: dict) -> None:
    """PGD's parameters, before an hour of the attacks listed before it has run."""
    _check_names(name, p)
    where = f"attack_params[{name!r}]"
    _check_radius(where, p)
    if not (isinstance(p["steps"], int) and p["steps"] >= 1):
        raise bad(f"{where}['steps']", p["steps"], "must be an integer >= 1.")
    if not callable(p["loss"]):
        check_choice(f"{where}['loss']", p["loss"], ("ce", "cw"))
    check_choice(f"{where}['iterate']", p["iterate"], ITERATES)
    check_choice(f"{where}['random_start']", p["random_start"], STARTS)
    check_choice(f"{where}['clamp_start']", p["clamp_start"], (True, False))
    if p["iterate"] == "any" and not p["clamp_start"]:
        raise bad(f"{where}['clamp_start']", p["clamp_start"], "iterate='any' counts the start as an iterate, and an "
                  "unclamped start may lie outside [0,1]; use clamp_start=True or iterate='last'.")


def _check_fgsm(name: str, p: dict) -> None:
    _check_names(name, p)
    _check_radius(f"attack_params[{name!r}]", p)


def _aa_attributes(sub: str) -> set[str]:
    import pyautoattack  # heavy optional import, deferred for start-up time
    probe = pyautoattack.AutoAttack(nn.Identity(), device="cpu", version="custom", attacks=["apgd-ce"])
    return set(vars(getattr(probe, sub)))


def _check_autoattack(name: str, p: dict) -> None:
    where = f"attack_params[{name!r}]"
    for key in p:
        if "." in key and key not in AA_DERIVED:
            sub, attr = key.split(".", 1)
            check_choice(f"{where} sub-attack in {key!r}", sub, AA_SUBATTACKS)
            check_choice(f"{where}[{key!r}] attribute", attr, _aa_attributes(sub))
    _check_names(name, {k: v for k, v in p.items() if "." not in k}, ("<sub-attack>.<attribute>",))
    _check_radius(where, p)
    check_choice(f"{where}['version']", p["version"], AA_VERSIONS)
    for a in p["attacks"] or []:
        check_choice(f"{where}['attacks'] item", a, AA_ATTACKS)
    if p["attacks"] and p["version"] not in ("custom", ATTACKS[name].defaults["version"]):
        raise bad(f"{where}['version']", p["version"],
                  "an explicit attack list needs version='custom' (or leave version out).")
    check_choice(f"{where}['norm']", p["norm"], ("Linf", "L2", "L1"))


# ------------------------------------------------------------------------------ derived values
def _derive_radius(p: dict, eps: float, num_classes: int) -> dict:
    """eps None: the evaluation's; step None: eps * STEP_FRACTION."""
    if "eps" in p and p["eps"] is None:
        if not (isinstance(eps, (int, float)) and eps >= 0):
            raise bad("eps", eps, "must be a number >= 0 (L-inf, [0,1] pixel units).")
        p["eps"] = float(eps)
    if "step" in p and p["step"] is None:
        p["step"] = p["eps"] * STEP_FRACTION
    return p


def _aa_derive(p: dict, eps: float, num_classes: int) -> dict:
    p = _derive_radius(p, eps, num_classes)
    if p["attacks"]:
        p["attacks"], p["version"] = list(p["attacks"]), "custom"
    for key in AA_DERIVED:   # pyautoattack's default of 9 target classes breaks with fewer classes
        p.setdefault(key, min(9, num_classes - 1))
    return p


def fill_defaults(name: str, params: dict, eps: float, num_classes: int) -> dict:
    """Derived defaults: eps, step = eps * STEP_FRACTION, AutoAttack's target-class counts."""
    return ATTACKS[name].derive(dict(params), eps, num_classes)


def resolve_attacks(names, attack_params: dict | None, eps: float, num_classes: int) -> dict[str, dict]:
    """Full parameters of each named attack: defaults <- attack_params[name] <- derived values.
    attack_params may also set attacks that are not run (pgd20's shape the eps sweep)."""
    attack_params = attack_params or {}
    for name in [*names, *attack_params]:
        check_choice("attacks", name, ATTACKS)
    resolved = {}
    for name in dict.fromkeys([*attack_params, *names]):   # the user's settings are checked first
        p = {**ATTACKS[name].defaults, **attack_params.get(name, {})}
        ATTACKS[name].check(name, p)
        resolved[name] = fill_defaults(name, p, eps, num_classes)
    return {n: resolved[n] for n in names}


# ------------------------------------------------------------------------------ running attacks
def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, device):
    """uint8 CPU tensors -> float [0,1] batches on the device, one at a time (memory stays flat)."""
    for i in range(0, len(y), batch_size):
        yield x[i:i + batch_size].to(device).float().div_(255), y[i:i + batch_size].to(device)


def _batched_predictions(model, x, y, batch_size, device, perturb, name: str) -> np.ndarray:
    """perturb(xb, yb) -> x_adv, or (x_adv, pred) when the attack already knows its predictions."""
    preds = []
    # plain tqdm on stderr: a bar in Lab, a line in logs and sweep output; silent for a single batch
    batches = tqdm(_batches(x, y, batch_size, device), desc=name, total=-(-len(y) // batch_size),
                   unit="batch", leave=False, mininterval=2, disable=len(y) <= batch_size)
    for xb, yb in batches:
        out = perturb(xb, yb)
        if isinstance(out, tuple):
            preds.append(out[1].cpu())
            continue
        with torch.no_grad():
            preds.append(model(out).argmax(1).cpu())
    return torch.cat(preds).numpy()


def _per_batch(perturb_of: Callable) -> Callable[..., np.ndarray]:
    """An attack's run from perturb_of(model, params) -> perturb(xb, yb), applied batch by batch."""
    def run(name, model, x, y, params, *, batch_size, device, seed, log):   # seeded by run_attack
        return _batched_predictions(model, x, y, batch_size, device, perturb_of(model, params), name)
    return run


def _clean(model, p):
    return lambda xb, yb: xb


def _fgsm(model, p):
    return lambda xb, yb: atk.fgsm(model, xb, yb, eps=p["eps"])


PGD_ARGS = ("eps", "step", "steps", "loss", "random_start", "clamp_start")


def _pgd(model, p):
    fn = atk.pgd_any if p["iterate"] == "any" else atk.pgd
    kw = {k: p[k] for k in PGD_ARGS}
    return lambda xb, yb: fn(model, xb, yb, **kw)


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextmanager
def _captured(logger_name: str):
    """Collect a library's log records instead of printing them; the caller keeps and reports them."""
    logger = logging.getLogger(logger_name)
    handler, saved = _ListHandler(), (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class _InputTied(nn.Module):
    """The model's logits + 0 * x: the same numbers, and an input gradient that exists (exactly zero) for a
    model that ignores its input, which pyautoattack's backward would otherwise crash on."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)   # a fresh module is in training mode; keep the model's

    def forward(self, x):
        return self.model(x) + 0 * x.flatten(1)[:, :1]


def _autoattack(name, model, x, y, p, *, batch_size, device, seed: int, log: list) -> np.ndarray:
    import pyautoattack  # heavy optional import, deferred for start-up time
    aa = pyautoattack.AutoAttack(_InputTied(model), attacks=p["attacks"], device=device, eps=p["eps"], norm=p["norm"],
                                 seed=seed, version=p["version"])
    for key, value in p.items():
        if "." in key:
            sub, attr = key.split(".", 1)
            setattr(getattr(aa, sub), attr, value)
    tracer = sys.gettrace()  # its dynamic-defence check calls sys.settrace(None): keep coverage/debuggers
    try:
        with _captured("auto-attack") as records:
            # y_adv holds its per-sample predictions (clean prediction where no attack succeeded)
            _, y_adv = aa.run_standard_evaluation(x.float().div(255), y, batch_size=batch_size)
    finally:
        sys.settrace(tracer)
    log.extend(records)
    return y_adv.cpu().numpy()


# ------------------------------------------------------------------------------ the registry
# iterate: "last" reads x_K (the released evaluation code); "any" counts an image broken once any iterate
# is misclassified and drops it from the batch then (AutoAttack's counting; never weaker, and cheaper).
# Start: U(-eps, eps) clamped into [0,1] before the first forward, as torchattacks' PGD (TAET's evaluation)
# and RobustLT's attack; AT-BSL's pgd_attack.py feeds it unclamped (clamp_start=False).
_PGD = {"eps": None, "step": None, "steps": 20, "loss": "ce", "random_start": "uniform", "clamp_start": True,
        "iterate": "last"}
ATTACKS: dict[str, AttackSpec] = Registry("attacks", {
    "clean": AttackSpec({}, _per_batch(_clean), _check_names, _derive_radius),
    "fgsm": AttackSpec({"eps": None}, _per_batch(_fgsm), _check_fgsm, _derive_radius),
    "pgd20": AttackSpec(dict(_PGD), _per_batch(_pgd), _check_pgd, _derive_radius),
    "pgd100": AttackSpec({**_PGD, "steps": 100}, _per_batch(_pgd), _check_pgd, _derive_radius),
    "cw20": AttackSpec({**_PGD, "loss": "cw"}, _per_batch(_pgd), _check_pgd, _derive_radius),  # CW margin, kappa 0
    # Also any "<sub>.<attribute>" of pyautoattack's sub-attacks, e.g. "square.n_queries": 1000.
    # n_target_classes of apgd_targeted and fab default to min(9, C - 1).
    "autoattack": AttackSpec({"eps": None, "version": "standard", "attacks": None, "norm": "Linf"},
                             _autoattack, _check_autoattack, _aa_derive),
    # One pyautoattack sub-attack alone (the claims' worst case per image reads them beside PGD-20).
    **{name: AttackSpec({"eps": None, "version": "custom", "attacks": [aa], "norm": "Linf",
                         **AA_STANDARD_RESTARTS[name]}, _autoattack, _check_autoattack, _aa_derive)
       for name, aa in AA_SINGLE.items()},
})


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict, *,
               batch_size: int = 256, device="cpu", seed: int = 0, log: list | None = None) -> np.ndarray:
    """Per-sample predictions of `model` under attack `name` on uint8 images x (model in eval mode)."""
    log = [] if log is None else log
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)  # each attack starts from the same seed, whatever ran before
        return ATTACKS[name].run(name, model, x, y, params, batch_size=batch_size, device=dev, seed=seed, log=log)


def zero_gradient_mask(model, x, y, *, batch_size=256, device="cpu") -> np.ndarray:
    """True where the input gradient of the CE loss is exactly zero at the clean image."""
    out = []
    with torch.enable_grad():
        for xb, yb in _batches(x, y, batch_size, device):
            xb.requires_grad_(True)
            g = atk.input_grad(F.cross_entropy(model(xb), yb, reduction="sum"), xb)
            out.append((g.flatten(1).abs().amax(1) == 0).cpu())
    return torch.cat(out).numpy()
