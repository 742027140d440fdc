"""Arms of a comparison, and the adversarial budget each one gets.

An arm is a method, with or without RobustLT, plus its own RunConfig overrides and a label: e.g. the
loss-scale control "taet_unit" is TAET with alpha = beta = gamma = 1, so a comparison can tell HARL's
structure from its scale. Overrides stack: preset config < preset method_overrides < arm overrides.
A fair comparison gives every arm the same adversarial epochs on the same lr sequence
(budget_rule="equal_adversarial"); `budget` and `unequal_budgets` make that checkable.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .config import ConfigError, RunConfig
from .train import lr_at, stage_epochs

LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")   # a label is a folder name of the sweep layout


def arm_name(method: str, robustlt: bool) -> str:
    return method + ("+robustlt" if robustlt else "")


@dataclass(frozen=True)
class Arm:
    method: str
    robustlt: bool = False
    overrides: dict = field(default_factory=dict)   # RunConfig overrides of this arm only
    label: str = ""                                 # default: method[+robustlt]

    def __post_init__(self):
        bad_keys = sorted({"method", "robustlt", "imbalance_ratio", "seed"} & set(self.overrides))
        if bad_keys:
            raise ConfigError(f"arm {self.name!r} overrides {bad_keys}: the arm's method/robustlt and the sweep's "
                              "axes (imbalance_ratio, seed) are set by the sweep, not by overrides.")
        if not LABEL.match(self.name):
            raise ConfigError(f"arm label={self.name!r}: use letters, digits and _ . + - only (it names a folder).")

    @property
    def name(self) -> str:
        return self.label or arm_name(self.method, self.robustlt)

    def to_dict(self) -> dict:
        return {"label": self.name, "method": self.method, "robustlt": self.robustlt, "overrides": self.overrides}

    @classmethod
    def parse(cls, text: str) -> "Arm":
        """'METHOD[+robustlt]' or 'LABEL=METHOD[+robustlt][:KEY=VALUE,...]' (values parse as JSON), e.g.
        taet_unit=taet:harl_alpha=1,harl_beta=1,harl_gamma=1"""
        head, _, sets = text.partition(":")
        label, eq, spec = head.partition("=")
        if not eq:
            label, spec = "", head
        method, plus, rlt = spec.partition("+")
        if plus and rlt != "robustlt":
            raise ConfigError(f"--arms {text!r}: expected METHOD or METHOD+robustlt before the overrides.")
        overrides = {}
        for pair in filter(None, sets.split(",")):
            key, eq, value = pair.partition("=")
            if not eq:
                raise ConfigError(f"--arms {text!r}: override {pair!r} is not KEY=VALUE.")
            try:
                overrides[key] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key] = value
        return cls(method, bool(plus), overrides, label)

    @classmethod
    def of(cls, a) -> "Arm":
        """An Arm from an Arm, a (method, robustlt) pair, a dict (to_dict's form) or parse's text."""
        if isinstance(a, Arm):
            return a
        if isinstance(a, str):
            return cls.parse(a)
        if isinstance(a, dict):
            return cls(a["method"], bool(a.get("robustlt", False)), dict(a.get("overrides", {})), a.get("label", ""))
        method, robustlt = a
        return cls(method, bool(robustlt))


# ------------------------------------------------------------------ budgets
def budget(cfg: RunConfig) -> dict:
    """What a run's adversarial phase gets: its epochs, their lr sequence and sum, the clean epochs
    before it, and the AIW intensity RobustLT reaches at the last epoch (1.0 = the full radius)."""
    epochs = stage_epochs(cfg, "all")
    clean = cfg.stabilization_epochs if cfg.method == "taet" else 0
    adv = [e for e in epochs if e > clean] if cfg.method != "ce" else []
    lrs = [lr_at(cfg, e) for e in adv]
    out = {"adversarial_epochs": len(adv), "clean_epochs": clean, "lrs": lrs, "lr_sum": sum(lrs),
           "budget_rule": cfg.budget_rule, "aiw_final": None}
    if cfg.robustlt and adv:
        start = cfg.clean_epochs_before()
        out["aiw_final"] = min((adv[-1] - start - 1) / (cfg.robustlt_b * cfg.epochs), 1.0)
    return out


def unequal_budgets(configs: dict[str, RunConfig]) -> list[str]:
    """Problems with a comparison's budgets (label -> config): adversarial arms whose adversarial
    epochs or lr sequences differ, and RobustLT arms whose AIW ramp never reaches the full radius."""
    budgets = {label: budget(cfg) for label, cfg in configs.items() if cfg.method != "ce"}
    problems = []
    shapes = {(b["adversarial_epochs"], tuple(round(lr, 12) for lr in b["lrs"])) for b in budgets.values()}
    if len(shapes) > 1:
        problems.append("adversarial budgets differ: " + "; ".join(
            f"{k}: {b['adversarial_epochs']} epochs at lr {[f'{lr:g}' for lr in b['lrs']]}" for k, b in budgets.items()))
    for label, b in budgets.items():
        if b["aiw_final"] is not None and b["aiw_final"] < 1:
            cfg = configs[label]
            problems.append(f"{label}: RobustLT's AIW ramp ends at {b['aiw_final']:.2f} of the radius; "
                            f"robustlt_b={cfg.robustlt_b} spans {cfg.robustlt_b * cfg.epochs:g} of its {cfg.epochs} "
                            f"epochs. Fix: robustlt_b <= {(cfg.epochs - 1) / cfg.epochs:.3f}.")
    return problems
