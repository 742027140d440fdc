"""Arms of a comparison.

An arm is a method, with or without RobustLT, plus its own RunConfig overrides and a label: e.g. the
loss-scale control "taet_unit" is TAET with alpha = beta = gamma = 1, so a comparison can tell HARL's
structure from its scale. Overrides stack: preset config < preset method_overrides < arm overrides.
A fair comparison gives every arm the same adversarial epochs on the same lr sequence
(budget_rule="equal_adversarial"); schedule.budget and schedule.unequal_budgets make that checkable.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["Arm", "LABEL", "arm_name"]

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
    def parse(cls, text: str) -> Arm:
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
    def of(cls, a) -> Arm:
        """An Arm from an Arm, a (method, robustlt) pair, a dict (to_dict's form) or parse's text."""
        if isinstance(a, Arm):
            return a
        if isinstance(a, str):
            return cls.parse(a)
        if isinstance(a, dict):
            return cls(a["method"], bool(a.get("robustlt", False)), dict(a.get("overrides", {})), a.get("label", ""))
        method, robustlt = a
        return cls(method, bool(robustlt))
