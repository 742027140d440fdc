"""A training method, described once: MethodSpec (factory, hyperparameters, head, evaluation set-up, attack
loss), the METHODS registry and the `register` decorator every method file uses (docs/adding-a-method.md).

A method's hyperparameters are a small frozen dataclass (a MethodArgs subclass): its defaults are the
method's, its __post_init__ checks each value on its own, and `check(cfg)` what depends on the rest of the
run (epochs, attack steps). RunConfig carries them as the mapping `method_args` and validates it against
the spec of its method, so a new method adds no RunConfig field and no check anywhere else.

This sits on the floor above errors.py: RunConfig (config.py) reads the specs, methods/*.py fill them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import Registry, bad

__all__ = ["METHODS", "MethodArgs", "MethodSpec", "NoArgs", "PGD_LOSSES", "RELEASED_START", "arg_error", "register"]

# what pgd() maximises by name (attacks._loss_fn); anything else must be a callable(logits, y) -> per-sample
# loss, or None where the objective passes its own loss every batch (TRADES' KL to the clean prediction)
PGD_LOSSES = ("ce", "cw")
RELEASED_START = ("normal", False)   # TAET / AT-BSL / TRADES / MART code: x + 0.001 N(0,1), not clamped


@dataclass(frozen=True)
class MethodArgs:
    """Base of a method's hyperparameters. Subclasses are frozen dataclasses whose fields carry defaults;
    raise `bad("method_args.<field>", value, fix)` from __post_init__ for a value that is wrong on its own."""

    def check(self, cfg) -> None:
        """Checks that need the rest of the run's config (cfg: RunConfig); none by default."""


@dataclass(frozen=True)
class NoArgs(MethodArgs):
    """A method without hyperparameters of its own (ce, pgd_at)."""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    factory: Callable                    # (args, cfg, train_counts, attack) -> methods.base.Objective
    args: type = NoArgs                  # its MethodArgs dataclass
    head: str = "fc"                     # the classifier head it trains (models.HEADS); head='auto' builds it
    eval_setup: Callable | None = None   # (model, args) -> None: what load_model does before evaluation
    attack_loss: Any = "ce"              # what its training attack maximises: "ce", "cw", a callable, or None
    aliases: dict = field(default_factory=dict)   # RunConfig key of taetlib <= 0.1 -> its args field
    clean_stage: str | None = None       # the args field counting clean epochs before the attack (TAET's stage 1)
    summary: str = ""                    # one line for listings (the factory's docstring by default)
    # the training attack's (random_start, clamp_start) in the method's released code, or args -> that pair
    # where a setting picks the loop (CFA's base); random_start='auto' and clamp_start=None take it
    start: Any = RELEASED_START

    def __post_init__(self):
        if not (dataclasses.is_dataclass(self.args) and issubclass(self.args, MethodArgs)
                and self.args.__dataclass_params__.frozen):
            raise TypeError(f"method {self.name!r}: args must be a frozen dataclass subclassing MethodArgs, "
                            f"got {self.args!r}.")
        names = {f.name for f in dataclasses.fields(self.args)}
        missing = [f.name for f in dataclasses.fields(self.args)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise TypeError(f"method {self.name!r}: every hyperparameter needs a default; {missing} have none.")
        if not (self.attack_loss is None or callable(self.attack_loss) or self.attack_loss in PGD_LOSSES):
            raise ValueError(f"method {self.name!r}: attack_loss={self.attack_loss!r} is no loss pgd() takes; use one "
                             f"of {list(PGD_LOSSES)}, a callable(logits, y) -> per-sample loss, or None when the "
                             "objective passes its own loss every batch.")
        for where in (list(self.aliases.values()) + ([self.clean_stage] if self.clean_stage else [])):
            if where not in names:
                raise ValueError(f"method {self.name!r}: {where!r} is not one of its args fields {sorted(names)}.")

    def field_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.args)]

    def defaults(self) -> dict:
        return dataclasses.asdict(self.args())


METHODS: dict[str, MethodSpec] = Registry("method")


def register(name: str, *, args: type = NoArgs, head: str = "fc", eval_setup: Callable | None = None,
             attack_loss: Any = "ce", aliases: dict | None = None, clean_stage: str | None = None,
             start: Any = RELEASED_START):
    """Decorator for a method's factory `(args, cfg, train_counts, attack) -> Objective`: files its MethodSpec
    in METHODS under `name`. Everything else (RunConfig, the CLI, sweeps, notebooks) reads the spec."""
    def deco(factory):
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        METHODS[name] = MethodSpec(name, factory, args, head, eval_setup, attack_loss, dict(aliases or {}),
                                   clean_stage, (factory.__doc__ or "").strip().split("\n")[0], start)
        return factory
    return deco


def arg_error(name: str, value, fix: str):
    """A method's own hyperparameter refused: names it as it sits in config.json (method_args.<name>)."""
    return bad(f"method_args.{name}", value, fix)
