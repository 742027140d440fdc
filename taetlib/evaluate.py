"""Evaluation suite: attacks by name -> one tidy per-class table, a summary and sanity flags.

`evaluate(model, data, attacks, protocols)` is the one call (RobustBench style). Every attack yields
per-sample predictions; every number is computed from them by metrics.py, and they are saved beside
the tables (predictions.npz), so any metric can be recomputed without attacking again.

Sanity flags are always computed, listed in `.flags` (passing checks too) and named in the summary
row they concern. They catch broken evaluations, gradient masking above all:
  eps0_not_clean         PGD at eps = 0 must give exactly the clean predictions' counts.
  rises_with_eps         robust accuracy must not rise with eps (curves from the eps sweep).
  <strong>_above_<weak>  a stronger attack must not score above a weaker one on the same samples:
                         pgd20 vs fgsm, pgd100 vs pgd20, autoattack vs pgd20 / pgd100 / cw20.
  robust_above_clean     no attack may score above clean accuracy.
  zero_gradients         samples whose input gradient is exactly zero (a masked, e.g. quantised,
                         model): gradient attacks cannot work there.
  autoattack_warnings    warnings pyautoattack logged (its own checks: zero gradients, randomness...).
Noise rule, for every "above" check: recall a is above recall b on n samples when
a - b > NOISE_Z * sqrt(2 p (1 - p) / n), p = (a + b) / 2: the standard error of the difference of two
binomial proportions. Treating the two as independent overstates the noise of a paired comparison
(same samples), so the rule errs towards silence; it is applied per class and to the pooled counts.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import attacks as atk
from . import metrics
from .config import ConfigError, bad, check_choice
from .data import Split, select_per_class

NOISE_Z = 2.0
STEP_FRACTION = 1 / 8  # PGD step = eps / 8: 1/255 at 8/255, the TAET and RobustLT evaluation code

# ------------------------------------------------------------------------------ attack registry
# Defaults of every attack's parameters; None = derived: eps from evaluate(), step = eps * STEP_FRACTION.
_PGD = {"eps": None, "step": None, "steps": 20, "loss": "ce", "random_start": "uniform"}
ATTACKS: dict[str, dict] = {
    "clean": {},
    "fgsm": {"eps": None},
    "pgd20": dict(_PGD),
    "pgd100": {**_PGD, "steps": 100},
    "cw20": {**_PGD, "loss": "cw"},  # PGD on the CW margin loss, kappa 0
    # Also any "<sub>.<attribute>" of pyautoattack's sub-attacks, e.g. "square.n_queries": 1000.
    # n_target_classes of apgd_targeted and fab default to min(9, C - 1).
    "autoattack": {"eps": None, "version": "standard", "attacks": None, "norm": "Linf"},
}
AA_VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
AA_SUBATTACKS = ("apgd", "apgd_targeted", "fab", "square")
SWEEP_ATTACK = "pgd20"  # the attack the eps sweep repeats at every radius
# Pairs (stronger, weaker): the stronger one must not score above the weaker one beyond noise.
ORDER = (("pgd20", "fgsm"), ("pgd100", "pgd20"), ("autoattack", "pgd20"), ("autoattack", "pgd100"),
         ("autoattack", "cw20"))


def _aa_attributes(sub: str) -> set[str]:
    import pyautoattack
    probe = pyautoattack.AutoAttack(nn.Identity(), device="cpu", version="custom", attacks=["apgd-ce"])
    return set(vars(getattr(probe, sub)))


def _check_params(name: str, params: dict) -> None:
    """Unknown parameter names fail before any attack runs, naming the allowed ones."""
    for key, value in params.items():
        if name == "autoattack" and "." in key:
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


def _fill(name: str, params: dict, eps: float, num_classes: int) -> dict:
    """Derived defaults: eps, step = eps * STEP_FRACTION, AutoAttack's target-class counts."""
    p = dict(params)
    if "eps" in p and p["eps"] is None:
        p["eps"] = float(eps)
    if "step" in p and p["step"] is None:
        p["step"] = p["eps"] * STEP_FRACTION
    if name == "autoattack":
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
    resolved = {n: _fill(n, {**ATTACKS[n], **attack_params.get(n, {})}, eps, num_classes)
                for n in dict.fromkeys([*names, *attack_params])}
    for name, p in resolved.items():
        _check_values(name, p)
    return {n: resolved[n] for n in names}


# ------------------------------------------------------------------------------ running attacks
def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, device):
    """uint8 CPU tensors -> float [0,1] batches on the device, one at a time (memory stays flat)."""
    for i in range(0, len(y), batch_size):
        yield x[i:i + batch_size].to(device).float().div_(255), y[i:i + batch_size].to(device)


def _batched_predictions(model, x, y, batch_size, device, perturb) -> np.ndarray:
    preds = []
    for xb, yb in _batches(x, y, batch_size, device):
        x_adv = perturb(xb, yb)
        with torch.no_grad():
            preds.append(model(x_adv).argmax(1).cpu())
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
    import pyautoattack
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
        if name == "autoattack":
            return _autoattack(model, x, y, params, batch_size=batch_size, device=dev, seed=seed, log=log)
        if name == "clean":
            perturb = lambda xb, yb: xb  # noqa: E731
        elif name == "fgsm":
            perturb = lambda xb, yb: atk.fgsm(model, xb, yb, eps=params["eps"])  # noqa: E731
        else:
            keys = ("eps", "step", "steps", "loss", "random_start")
            perturb = lambda xb, yb: atk.pgd(model, xb, yb, **{k: params[k] for k in keys})  # noqa: E731
        return _batched_predictions(model, x, y, batch_size, dev, perturb)


def zero_gradient_mask(model, x, y, *, batch_size=256, device="cpu") -> np.ndarray:
    """True where the input gradient of the CE loss is exactly zero at the clean image."""
    out = []
    with torch.enable_grad():
        for xb, yb in _batches(x, y, batch_size, device):
            xb.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xb), yb, reduction="sum"), xb)
            out.append((g.flatten(1).abs().amax(1) == 0).cpu())
    return torch.cat(out).numpy()


# ------------------------------------------------------------------------------ tables
def per_class_table(attack, protocol, eps, y, pred, class_names) -> pd.DataFrame:
    n, correct = metrics.per_class_counts(y, pred, len(class_names))
    return pd.DataFrame({"attack": attack, "protocol": protocol, "eps": float(eps),
                         "class": np.arange(len(class_names)), "class_name": list(class_names),
                         "n": n, "correct": correct, "recall": metrics.per_class_recall(y, pred, len(class_names))})


def above_noise(r_hi, r_lo, n, z: float = NOISE_Z) -> np.ndarray:
    """Where recall r_hi is above r_lo (both on n samples) by more than z standard errors."""
    r_hi, r_lo, n = (np.asarray(v, dtype=float) for v in (r_hi, r_lo, n))
    p = (r_hi + r_lo) / 2
    se = np.sqrt(np.clip(2 * p * (1 - p), 0, None) / np.maximum(n, 1))
    return (n > 0) & (r_hi - r_lo > z * se)


def _classes_text(df: pd.DataFrame, diff) -> str:
    return ", ".join(f"{c} ({name}) {d:+.3f}" for c, name, d in zip(df["class"], df["class_name"], diff))


def _compare(flag, attack, protocol, hi: pd.DataFrame, lo: pd.DataFrame, what: str, exact=False) -> dict:
    """One flag row: is `hi` above `lo` per class (named) or pooled? exact=True: any difference."""
    hi, lo = hi.sort_values("class"), lo.sort_values("class")
    r_hi, r_lo, n = hi["recall"].to_numpy(), lo["recall"].to_numpy(), hi["n"].to_numpy()
    pooled_hi, pooled_lo, N = hi["correct"].sum() / max(n.sum(), 1), lo["correct"].sum() / max(n.sum(), 1), n.sum()
    if exact:
        bad_cls = hi["correct"].to_numpy() != lo["correct"].to_numpy()
        pooled = pooled_hi != pooled_lo
    else:
        bad_cls = above_noise(r_hi, r_lo, n)
        pooled = bool(above_noise(pooled_hi, pooled_lo, N))
    raised = bool(bad_cls.any() or pooled)
    detail = f"{what}: overall {pooled_hi:.3f} vs {pooled_lo:.3f}"
    if bad_cls.any():
        detail += "; classes " + _classes_text(hi[bad_cls], (r_hi - r_lo)[bad_cls])
    return _flag(flag, attack, protocol, hi["class"][bad_cls].tolist(), raised, detail)


def _flag(flag, attack, protocol, classes, raised, detail) -> dict:
    return {"flag": flag, "attack": attack, "protocol": protocol, "classes": ",".join(map(str, classes)),
            "raised": bool(raised), "detail": detail}


def sanity_flags(table: pd.DataFrame, curves: pd.DataFrame, zero_grad: pd.DataFrame | None = None,
                 warnings: pd.DataFrame | None = None, curve_clean: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every sanity check (module docstring) as one row; `raised` says whether it failed.
    curve_clean: clean counts on the images the curves ran on, when that is a subset."""
    rows = []
    for protocol, tab in table.groupby("protocol", sort=False):
        clean = tab[tab.attack == "clean"]
        if curve_clean is not None:
            clean = curve_clean[curve_clean.protocol == protocol]
        cur = curves[curves.protocol == protocol]
        # 1. eps = 0 gives the clean counts exactly: the attack may not change an unperturbed input.
        at0 = cur[cur.eps == 0]
        if len(at0) and len(clean):
            rows.append(_compare("eps0_not_clean", SWEEP_ATTACK, protocol, at0, clean,
                                 "PGD at eps=0 vs clean", exact=True))
        # 2. accuracy does not rise with eps: each radius vs the lowest recall at any smaller one.
        rows.append(_rises_with_eps(cur, protocol))
        clean = tab[tab.attack == "clean"]
        # 3. stronger attacks not above weaker ones; the sweep stands in for a pgd20 that was not asked for
        ref = {a: t for a, t in tab.groupby("attack")}
        for strong, weak in ORDER:
            if strong not in ref:
                continue
            a = ref[strong]
            b = ref.get(weak, cur[np.isclose(cur.eps, a.eps.iloc[0])] if weak == SWEEP_ATTACK else None)
            if b is None or not len(b):
                continue
            if not np.isclose(a.eps.iloc[0], b.eps.iloc[0]):
                rows.append(_flag(f"{strong}_above_{weak}", strong, protocol, [], False,
                                  f"skipped: {strong} ran at eps={a.eps.iloc[0]:g}, {weak} at {b.eps.iloc[0]:g}"))
                continue
            rows.append(_compare(f"{strong}_above_{weak}", strong, protocol, a, b, f"{strong} vs {weak}"))
        # 4. no attack above clean
        for attack, t in tab.groupby("attack", sort=False):
            if attack != "clean" and len(clean):
                rows.append(_compare("robust_above_clean", attack, protocol, t, clean, f"{attack} vs clean"))
        # 5. exactly-zero input gradients
        if zero_grad is not None:
            z = zero_grad[zero_grad.protocol == protocol].sort_values("class")
            hit = z[z.zero_gradient > 0]
            detail = (f"{int(z.zero_gradient.sum())} of {int(z.n.sum())} samples have an exactly-zero input "
                      "gradient (gradient masking, e.g. a quantised input): gradient attacks are blind there")
            if len(hit):
                detail += "; classes " + ", ".join(f"{c} ({nm}) {k}/{n}" for c, nm, k, n in
                                                   zip(hit["class"], hit.class_name, hit.zero_gradient, hit.n))
            rows.append(_flag("zero_gradients", "all", protocol, hit["class"].tolist(), len(hit) > 0, detail))
        # 6. pyautoattack's own warnings
        if warnings is not None and "autoattack" in set(tab.attack):
            w = warnings[warnings.protocol == protocol]["message"].tolist()
            rows.append(_flag("autoattack_warnings", "autoattack", protocol, [], len(w) > 0,
                              " | ".join(dict.fromkeys(w)) or "no warnings"))
    return pd.DataFrame(rows, columns=["flag", "attack", "protocol", "classes", "raised", "detail"])


def _rises_with_eps(cur: pd.DataFrame, protocol: str) -> dict:
    eps_values = sorted(cur.eps.unique())
    if len(eps_values) < 2:
        return _flag("rises_with_eps", SWEEP_ATTACK, protocol, [], False, "skipped: fewer than two radii")
    correct = cur.pivot(index="class", columns="eps", values="correct")[eps_values].to_numpy(float)
    n = cur.pivot(index="class", columns="eps", values="n")[eps_values].to_numpy(float)
    recall = correct / np.maximum(n, 1)
    low_so_far = np.minimum.accumulate(recall, axis=1)[:, :-1]
    per_class = above_noise(recall[:, 1:], low_so_far, n[:, 1:])
    pooled = correct.sum(0) / max(n[:, 0].sum(), 1)
    pooled_bad = above_noise(pooled[1:], np.minimum.accumulate(pooled)[:-1], n[:, 0].sum())
    bad_cls = per_class.any(1) & (n[:, 0] > 0)
    names = cur.drop_duplicates("class").set_index("class").loc[:, "class_name"]
    detail = "overall recall by eps " + ", ".join(f"{e:g}: {r:.3f}" for e, r in zip(eps_values, pooled))
    if bad_cls.any():
        classes = np.flatnonzero(bad_cls)
        detail += "; rises in classes " + ", ".join(
            f"{c} ({names[c]}) at eps={eps_values[1 + int(np.argmax(per_class[c]))]:g}" for c in classes)
    return _flag("rises_with_eps", SWEEP_ATTACK, protocol, np.flatnonzero(bad_cls).tolist(),
                 bad_cls.any() or pooled_bad.any(), detail)


def summary_table(table: pd.DataFrame, predictions: dict, train_counts, class_names, flags: pd.DataFrame,
                  seconds: dict) -> pd.DataFrame:
    """Per attack x protocol: overall, balanced (accuracy for clean, robustness otherwise), head / medium /
    tail, worst class, absent classes and the raised flags that concern the row (never hidden)."""
    rows = []
    attacks_run = set(table.attack)
    raised = flags[flags.raised]
    for (attack, protocol), t in table.groupby(["attack", "protocol"], sort=False):
        p = predictions[(protocol, attack)]
        s = metrics.summarize(p["y"], p["pred"], train_counts, len(class_names))
        # a flag about an attack without a row of its own (the sweep, 'all') shows on every row
        mine = raised[(raised.protocol == protocol) & ((raised.attack == attack) | ~raised.attack.isin(attacks_run))]
        rows.append({
            "attack": attack, "protocol": protocol, "eps": float(t.eps.iloc[0]), "n": int(t.n.sum()),
            "metric": "balanced_accuracy" if attack == "clean" else "balanced_robustness",
            "overall": s["overall"], "balanced": s["balanced"], "head": s["head"], "medium": s["medium"],
            "tail": s["tail"], "worst_class": s["worst_class"],
            "worst_class_name": class_names[s["worst_class"]] if s["worst_class"] >= 0 else "",
            "worst_recall": s["worst_recall"], "absent_classes": ",".join(map(str, s["absent_classes"])),
            "raised_flags": ",".join(dict.fromkeys(mine.flag)),
            "seconds": seconds.get((protocol, attack), float("nan")),
        })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ result
@dataclass
class EvalResult:
    table: pd.DataFrame          # attack, protocol, eps, class, class_name, n, correct, recall
    summary: pd.DataFrame        # one row per attack x protocol, with the raised flags
    flags: pd.DataFrame          # every sanity check: flag, attack, protocol, classes, raised, detail
    curves: pd.DataFrame         # the eps sweep, same columns as table (attack = SWEEP_ATTACK)
    predictions: dict            # (protocol, attack or "pgd20@eps=E") -> {"y", "pred", "index"}
    config: dict                 # attacks with full parameters, eps, subset, seed, versions
    log: list = field(default_factory=list)  # pyautoattack's log lines

    @property
    def raised(self) -> pd.DataFrame:
        return self.flags[self.flags.raised]

    def save(self, out_dir) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(out / "per_class.csv", index=False)
        self.summary.to_csv(out / "summary.csv", index=False)
        self.flags.to_csv(out / "flags.csv", index=False)
        self.curves.to_csv(out / "curves.csv", index=False)
        np.savez_compressed(out / "predictions.npz", **{f"{p}/{a}/{k}": v for (p, a), d in self.predictions.items()
                                                         for k, v in d.items()})
        (out / "eval_config.json").write_text(json.dumps(self.config, indent=2, default=str) + "\n")
        if self.log:
            (out / "autoattack.log").write_text("\n".join(self.log) + "\n")
        return out

    @classmethod
    def load(cls, out_dir) -> "EvalResult":
        out = Path(out_dir)

        def read(name, text=()):  # text columns: "" stays "", not NaN; "3" stays "3", not 3
            df = pd.read_csv(out / name, dtype={c: str for c in text})
            return df.fillna({c: "" for c in text})

        preds: dict = {}
        with np.load(out / "predictions.npz") as z:
            for key in z.files:
                p, a, k = key.rsplit("/", 2)
                preds.setdefault((p, a), {})[k] = z[key]
        log = out / "autoattack.log"
        return cls(read("per_class.csv"), read("summary.csv", ("absent_classes", "raised_flags", "worst_class_name")),
                   read("flags.csv", ("classes", "detail")), read("curves.csv"), preds,
                   json.loads((out / "eval_config.json").read_text()),
                   log.read_text().splitlines() if log.exists() else [])

    def __repr__(self) -> str:
        cols = ["attack", "protocol", "eps", "n", "overall", "balanced", "head", "medium", "tail",
                "worst_class_name", "worst_recall", "raised_flags"]
        lines = ["EvalResult", self.summary[cols].to_string(index=False, float_format="{:.4f}".format)]
        raised = self.raised
        lines.append(f"sanity flags: {len(raised)} raised of {len(self.flags)} checks")
        lines += [f"  [{r.protocol}] {r.flag} ({r.attack}): {r.detail}" for r in raised.itertuples()]
        return "\n".join(lines)


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
             curve_per_class: int | None = None) -> EvalResult:
    """Attack `model` on `data`'s test protocols; per-class table, summary, sanity flags, predictions.

    attacks: names from ATTACKS (list or "a,b"); 'clean' is always added (every check compares with it).
    eps: L-inf radius in [0,1] pixels; None = the dataset's default (8/255 CIFAR / DermaMNIST, 0.1 F-MNIST).
    per_class: evaluate on a seeded stratified subset of at most this many samples per class (None = all).
    attack_params: {"pgd20": {"step": 2/255}, "autoattack": {"version": "rand"}, ...}.
    eps_sweep: radii of the PGD-20 robustness curves (default 0, eps/2, eps; 0 and eps are always added).
    curve_per_class: run the curves on a seeded stratified subset of at most this many images per class
      (None = every image); the cheap way to keep the eps checks on a large test set.
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
    sweep_base = {**ATTACKS[SWEEP_ATTACK], **(attack_params or {}).get(SWEEP_ATTACK, {})}
    sweep = {e: _fill(SWEEP_ATTACK, {**sweep_base, "eps": e}, e, C) for e in _sweep(eps_sweep, eps)}
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
            t0 = time.perf_counter()
            print(f"evaluate: {name} on {len(pool)} test images ...", end="", flush=True)
            pred = run_attack(name, model, pool.x, pool.y, p, log=records if records is not None else [], **run)
            print(f" {time.perf_counter() - t0:.0f} s, accuracy {np.mean(pred == y_pool):.3f}", flush=True)
            return pred, time.perf_counter() - t0

        for name in attacks:
            records = []
            pred, secs = attack_pool(name, params[name], records)
            predictions_pool[name] = pred
            log += [f"{r.levelname} {r.getMessage()}" for r in records]
            for protocol, at in where.items():
                seconds[(protocol, name)] = secs  # one shared run serves every protocol
                y_np, index = y_pool[at], pool.index.numpy()[at]
                predictions[(protocol, name)] = {"y": y_np, "pred": pred[at], "index": index}
                tables.append(per_class_table(name, protocol, params[name].get("eps", 0.0), y_np, pred[at], names))
                warn_rows += [{"protocol": protocol, "message": r.getMessage()}
                              for r in records if r.levelno >= logging.WARNING]
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
    warnings = pd.DataFrame(warn_rows, columns=["protocol", "message"])
    flags = sanity_flags(table, curves, pd.concat(zero_grad, ignore_index=True), warnings,
                         pd.concat(curve_clean, ignore_index=True))
    main_preds = {k: v for k, v in predictions.items() if k[1] in attacks}
    summary = summary_table(table, main_preds, data.train_counts, names, flags, seconds)
    config = {
        "dataset": data.spec.name, "eps": eps, "protocols": protocols, "attacks": params,
        "eps_sweep": {f"{e:.6g}": p for e, p in sweep.items()}, "curve_per_class": curve_per_class,
        "curve_n": int(len(sel)), "subset": subset, "seed": seed,
        "batch_size": batch_size, "device": str(device), "dtype": "float32", "noise_z": NOISE_Z,
        "seconds": {f"{p}/{a}": s for (p, a), s in seconds.items()},
        "versions": _versions(), "split_manifest": getattr(data, "manifest", {}).get("path"),
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
    import pyautoattack
    return {"torch": torch.__version__, "pyautoattack": getattr(pyautoattack, "__version__", "?")}


# ------------------------------------------------------------------------------ runs and CLI
def evaluate_run(run_dir, attacks=("clean", "pgd20"), protocols=("balanced", "long_tailed"), *,
                 out_dir=None, **kw) -> EvalResult:
    """Load a trained run (config.json + weights), evaluate it, save into run_dir/eval/ (or out_dir)."""
    from .config import RunConfig
    from .data import load_lt
    from .train import load_model, resolve_device  # here, not at the top: train sits on the same floor

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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's)")
    p.add_argument("--param", nargs="*", default=[], metavar="ATTACK.NAME=VALUE",
                   help="attack parameters, e.g. pgd20.step=0.002 autoattack.version=rand "
                        "autoattack.square.n_queries=1000")
    p.add_argument("--out", help="output directory (default RUN/eval)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from .cli import parse_sets
    attack_params: dict = {}
    for key, value in parse_sets(args.param).items():
        if "." not in key:
            raise ConfigError(f"--param {key!r}: expected ATTACK.NAME=VALUE, e.g. pgd20.step=0.004")
        attack, name = key.split(".", 1)
        attack_params.setdefault(attack, {})[name] = value
    kw = {k: v for k, v in dict(eps=args.eps, per_class=args.per_class, device=args.device).items() if v is not None}
    result = evaluate_run(args.run, args.attacks, args.protocols, out_dir=args.out, seed=args.seed,
                          batch_size=args.batch_size, attack_params=attack_params or None,
                          eps_sweep=args.eps_sweep, **kw)
    print(result)
    print(f"saved to {args.out or Path(args.run) / 'eval'}")
    return 0
