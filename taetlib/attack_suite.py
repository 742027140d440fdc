"""The evaluation attacks by name: their parameters and defaults, the checks that refuse a bad one
before anything runs, and running one on a model over uint8 images (AutoAttack's log captured).

Every attack yields per-sample predictions; evaluate.py turns them into tables.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import attacks as atk
from .errors import Registry, bad, check_choice

__all__ = ["AA_ATTACKS", "AA_SINGLE", "AA_SUBATTACKS", "AA_VERSIONS", "ATTACKS", "ITERATES", "STEP_FRACTION",
           "SWEEP_ATTACK", "fill_defaults", "resolve_attacks", "run_attack", "zero_gradient_mask"]

STEP_FRACTION = 1 / 8  # PGD step = eps / 8: 1/255 at 8/255, the TAET and RobustLT evaluation code

# ------------------------------------------------------------------------------ attack registry
# Defaults of every attack's parameters; None = derived: eps from evaluate(), step = eps * STEP_FRACTION.
# iterate: "last" reads x_K (the released evaluation code); "any" counts an image broken once any iterate
# is misclassified and drops it from the batch then (AutoAttack's counting; never weaker, and cheaper).
_PGD = {"eps": None, "step": None, "steps": 20, "loss": "ce", "random_start": "uniform", "iterate": "last"}
ITERATES = ("last", "any")
ATTACKS: dict[str, dict] = Registry("attacks", {
    "clean": {},
    "fgsm": {"eps": None},
    "pgd20": dict(_PGD),
    "pgd100": {**_PGD, "steps": 100},
    "cw20": {**_PGD, "loss": "cw"},  # PGD on the CW margin loss, kappa 0
    # Also any "<sub>.<attribute>" of pyautoattack's sub-attacks, e.g. "square.n_queries": 1000.
    # n_target_classes of apgd_targeted and fab default to min(9, C - 1).
    "autoattack": {"eps": None, "version": "standard", "attacks": None, "norm": "Linf"},
    # one pyautoattack sub-attack alone, so its per-image predictions sit beside PGD's (worst_case.py)
    "apgd_ce": {"eps": None, "norm": "Linf"},
    "apgd_t": {"eps": None, "norm": "Linf"},
})
AA_SINGLE = {"apgd_ce": "apgd-ce", "apgd_t": "apgd-t"}   # attack name -> its pyautoattack name
AA_VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
AA_SUBATTACKS = ("apgd", "apgd_targeted", "fab", "square")
SWEEP_ATTACK = "pgd20"  # the attack the eps sweep repeats at every radius


def _aa_attributes(sub: str) -> set[str]:
    import pyautoattack  # heavy optional import, deferred for start-up time
    probe = pyautoattack.AutoAttack(nn.Identity(), device="cpu", version="custom", attacks=["apgd-ce"])
    return set(vars(getattr(probe, sub)))


def _check_params(name: str, params: dict) -> None:
    """Unknown parameter names fail before any attack runs, naming the allowed ones."""
    for key in params:
        if name in ("autoattack", *AA_SINGLE) and "." in key:
            sub, attr = key.split(".", 1)
            check_choice(f"attack_params['autoattack'] sub-attack in {key!r}", sub, AA_SUBATTACKS)
            check_choice(f"attack_params['autoattack'][{key!r}] attribute", attr, _aa_attributes(sub))
        elif key not in ATTACKS[name]:
            allowed = sorted(ATTACKS[name]) + (["<sub-attack>.<attribute>"] if name == "autoattack" else [])
            raise bad(f"attack_params[{name!r}]", key, f"unknown parameter of {name}; choose from {allowed}.")
    if name == "autoattack":
        if "version" in params:
            check_choice("attack_params['autoattack']['version']", params["version"], AA_VERSIONS)
        for a in params.get("attacks") or []:
            check_choice("attack_params['autoattack']['attacks'] item", a, AA_ATTACKS)
        if params.get("attacks") and params.get("version", "custom") != "custom":
            raise bad("attack_params['autoattack']['version']", params["version"],
                      "an explicit attack list needs version='custom' (or leave version out).")


def fill_defaults(name: str, params: dict, eps: float, num_classes: int) -> dict:
    """Derived defaults: eps, step = eps * STEP_FRACTION, AutoAttack's target-class counts."""
    p = dict(params)
    if "eps" in p and p["eps"] is None:
        p["eps"] = float(eps)
    if "step" in p and p["step"] is None:
        p["step"] = p["eps"] * STEP_FRACTION
    if name in AA_SINGLE:
        p.update(version="custom", attacks=[AA_SINGLE[name]])
    if name in ("autoattack", *AA_SINGLE):
        if p["attacks"]:
            p["attacks"], p["version"] = list(p["attacks"]), "custom"
        for sub in ("apgd_targeted", "fab"):  # pyautoattack's default of 9 breaks with fewer classes
            p.setdefault(f"{sub}.n_target_classes", min(9, num_classes - 1))
    return p


def _check_values(name: str, p: dict) -> None:
    """Bad values fail before any attack runs, not after an hour of the attacks listed before them."""
    where = f"attack_params[{name!r}]"
    for key in ("eps", "step"):
        if key in p and not (isinstance(p[key], (int, float)) and p[key] >= 0):
            raise bad(f"{where}[{key!r}]", p[key], "must be a number >= 0 (L-inf, [0,1] pixel units).")
    if "steps" in p and not (isinstance(p["steps"], int) and p["steps"] >= 1):
        raise bad(f"{where}['steps']", p["steps"], "must be an integer >= 1.")
    if "loss" in p and not callable(p["loss"]):
        check_choice(f"{where}['loss']", p["loss"], ("ce", "cw"))
    if "iterate" in p:
        check_choice(f"{where}['iterate']", p["iterate"], ITERATES)
    if "random_start" in p:
        check_choice(f"{where}['random_start']", p["random_start"], ("uniform", "normal", "none"))
    if "norm" in p:
        check_choice(f"{where}['norm']", p["norm"], ("Linf", "L2", "L1"))


def resolve_attacks(names, attack_params: dict | None, eps: float, num_classes: int) -> dict[str, dict]:
    """Full parameters of each named attack: defaults <- attack_params[name] <- derived values.
    attack_params may also set attacks that are not run (pgd20's shape the eps sweep)."""
    attack_params = attack_params or {}
    for name in [*names, *attack_params]:
        check_choice("attacks", name, ATTACKS)
    for name, params in attack_params.items():
        _check_params(name, params)
    resolved = {n: fill_defaults(n, {**ATTACKS[n], **attack_params.get(n, {})}, eps, num_classes)
                for n in dict.fromkeys([*names, *attack_params])}
    for name, p in resolved.items():
        _check_values(name, p)
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


def _autoattack(model, x, y, p, *, batch_size, device, seed, log: list) -> np.ndarray:
    import pyautoattack  # heavy optional import, deferred for start-up time
    aa = pyautoattack.AutoAttack(model, attacks=p["attacks"], device=device, eps=p["eps"], norm=p["norm"],
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


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict, *,
               batch_size: int = 256, device="cpu", seed: int = 0, log: list | None = None) -> np.ndarray:
    """Per-sample predictions of `model` under attack `name` on uint8 images x (model in eval mode)."""
    log = [] if log is None else log
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)  # each attack starts from the same seed, whatever ran before
        if name in ("autoattack", *AA_SINGLE):
            return _autoattack(model, x, y, params, batch_size=batch_size, device=dev, seed=seed, log=log)
        if name == "clean":
            perturb = lambda xb, yb: xb  # noqa: E731
        elif name == "fgsm":
            perturb = lambda xb, yb: atk.fgsm(model, xb, yb, eps=params["eps"])  # noqa: E731
        else:
            keys = ("eps", "step", "steps", "loss", "random_start")
            pgd = atk.pgd_any if params.get("iterate", "last") == "any" else atk.pgd
            perturb = lambda xb, yb: pgd(model, xb, yb, **{k: params[k] for k in keys})  # noqa: E731
        return _batched_predictions(model, x, y, batch_size, dev, perturb, name)


def zero_gradient_mask(model, x, y, *, batch_size=256, device="cpu") -> np.ndarray:
    """True where the input gradient of the CE loss is exactly zero at the clean image."""
    out = []
    with torch.enable_grad():
        for xb, yb in _batches(x, y, batch_size, device):
            xb.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xb), yb, reduction="sum"), xb)
            out.append((g.flatten(1).abs().amax(1) == 0).cpu())
    return torch.cat(out).numpy()
