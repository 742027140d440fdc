"""Run configuration: one flat dataclass whose fields are the notebooks' parameters and the CLI's flags.

Flat on purpose: a papermill `parameters` cell, a sweep's override dict and a saved config.json
all map 1:1 onto it. Validation names the bad field, the value and the fix. Names (dataset, model,
method, augment) are checked against the registries filed in errors.REGISTRIES.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FIELD_CHECKS, REGISTRIES, ConfigError, bad, check_choice

__all__ = ["BUDGET_RULES", "RunConfig", "coerce", "parse_sets", "check_class_order"]

BUDGET_RULES = ("equal_adversarial", "released")


@dataclass
class RunConfig:
    # --- data
    dataset: str = "fashion_mnist"
    imbalance_ratio: float = 10.0          # n_max / n_min; 1 means balanced
    n_max: int | None = None               # head-class size; None = the dataset's own maximum
    test_per_class: int | None = None      # cap of the balanced test set per class (None = full)
    split_seed: int = 0
    # which classes the profile makes rare: label (class 0 the head, as the papers), permutation (seeded by
    # split_seed), permutation:N (seed N), or a named order of data.CLASS_ORDERS (e.g. hard_rarest)
    class_order: str = "label"
    data_root: str = "data"
    augment: str = "crop_flip"             # none | crop_flip | autoaugment | randaugment
    # --- model
    model: str = "small_cnn"
    head: str = "auto"                     # classifier: auto (the method's own: robal cosplus, he he_norm, else fc)
    # --- method (objective) and its knobs
    method: str = "taet"
    stabilization_epochs: int = 40         # TAET stage 1 (clean CE) length
    # equal_adversarial: `epochs` are adversarial epochs for every method, and TAET's stage 1 comes
    # before them, extra, at the initial lr; released: stage 1 is part of `epochs` (TAET's 40 + 60)
    budget_rule: str = "equal_adversarial"
    harl_alpha: float = 0.1
    harl_beta: float = 0.1
    harl_gamma: float = 0.1
    harl_absent_classes: str = "zero"      # zero (released code) | exclude (S_C = classes present)
    trades_beta: float = 6.0
    mart_beta: float = 6.0
    bsl_tau: float = 1.0
    reat_tail: str = "index"               # REAT tail: index (code: classes C//3*2+1..C-1) | rarest (as many, fewest)
    robal_variant: str = "R"               # R (RoBal-R, RobustLT's) | N (RoBal-N: post-hoc logits at evaluation)
    robal_s: float = 10.0                  # margin-CE scale s (also RoBal-N's evaluation scale)
    robal_m: float = 0.1                   # base margin m
    robal_tau_m: float | None = None       # class-aware margin; None = the variant's (R 0.3, N 0)
    robal_tau_b: float | None = None       # prior bias; None = the variant's (R 1.5, N 1.2)
    robal_beta: float = 6.0                # TRADES-KL weight
    robal_tau_p: float = 0.1               # RoBal-N evaluation: z = s * cos - tau_p * ln pi
    he_s: float = 10.0                     # HE scale s (official CIFAR-10 command)
    he_m: float = 0.2                      # HE angular margin m
    gairat_lambda: float = -1.0            # GAIR Tanh weight's lambda
    gairat_begin_epoch: int | None = None  # first (1-based) epoch with GAIR weights; None = round(epochs / 2)
    awp_gamma: float = 0.01                # AWP: relative weight perturbation (official AT-AWP; RobustLT 0.005)
    awp_warmup: int = 0                    # AWP: epochs trained without the perturbation
    awp_ascent: str = "official"           # official (normalised CE gradient) | robustlt (a training-optimiser step)
    adt_lambda: float = 0.01               # ADT_EXP: entropy weight
    adt_steps: int = 7                     # ADT_EXP: inner Adam steps
    adt_samples: int = 5                   # ADT_EXP: samples per inner step
    adt_lr: float = 0.3                    # ADT_EXP: inner Adam lr (in tanh-argument space)
    lasat_eps_choices: list[int] = field(default_factory=lambda: list(range(3, 16)))   # LAS-AT, in lasat_unit
    lasat_step_choices: list[int] = field(default_factory=lambda: list(range(1, 6)))   # LAS-AT, in lasat_unit
    lasat_iter_choices: list[int] = field(default_factory=lambda: list(range(3, 15)))  # LAS-AT attack steps
    lasat_unit: float | None = None        # LAS-AT: eps unit (None: eps / 8, i.e. 1/255 at eps 8/255)
    lasat_interval: int = 20               # LAS-AT: strategy update every N training steps
    lasat_policy_lr: float = 1e-4          # LAS-AT: strategy SGD lr (no momentum)
    lasat_clip: float = 1.0                # LAS-AT: strategy gradient-norm clip
    lasat_smoothing: float = 0.7           # LAS-AT: label-smoothing factor (target on the true class)
    lasat_reward: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])   # LAS-AT reward weights a, b, c
    lasat_reward_steps: int = 10           # LAS-AT: PGD steps of the reward's robustness term (2 restarts)
    lasat_strategy_model: str = "resnet18"  # LAS-AT: the strategy network's trunk (a models registry name)
    robustlt: bool = False                 # wrap the objective in RobustLT (CPB + AIW)
    robustlt_a: float = 0.3
    robustlt_b: float = 0.8
    # --- training attack (None = the dataset's default radius; step = eps / 4)
    eps: float | None = None
    step_size: float | None = None
    attack_steps: int = 10
    random_start: str = "normal"           # normal (0.001*N(0,1), TAET/AT-BSL) | uniform | uniform_pos (RoBal) | none
    attack_bn: str = "eval"                # training attack's BatchNorm: eval (TAET/AT-BSL code) | batch (RobustLT)
    # --- schedule (papers' defaults)
    epochs: int = 100                      # adversarial epochs under budget_rule=equal_adversarial
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False                 # RobustLT's code trains with Nesterov momentum
    weight_decay: float = 5e-4
    lr_milestones: list[float] = field(default_factory=lambda: [0.75, 0.9])  # fractions of epochs
    lr_gamma: float = 0.1
    # --- in-training evaluation
    eval_every: int = 10                   # test clean + PGD per class every N epochs (0 = never)
    eval_pgd_steps: int = 10
    eval_per_class: int | None = 100       # subsample of the balanced test set for in-training eval
    # model.pt: the last epoch (TAET, RobustLT) | best_val_pgd: the best balanced PGD accuracy on a validation
    # split held out of the training set (AT-BSL's script picks on the test set, which this never does)
    select: str = "last"
    val_fraction: float = 0.1              # share of each class held out for select=best_val_pgd
    # --- hardware
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    bf16: bool = False                     # autocast on CUDA
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False                  # SyncBatchNorm across DDP ranks (GPUs; torchrun runs only)
    seed: int = 0

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # types first, so range checks never compare a str with 1
            setattr(self, f.name, coerce(f.name, getattr(self, f.name), hints[f.name]))
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Build from a plain dict, refusing unknown names and values of the wrong type."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            k = unknown[0]
            close = difflib.get_close_matches(k, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise bad(k, d[k], f"unknown parameter.{hint} Known: {sorted(names)}")
        return cls(**d)

    def replace(self, **changes) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ------------------------------------------------------------------ validation
    def validate(self) -> RunConfig:
        # registries live beside what they register; taetlib/__init__.py imports those modules
        for name in ("dataset", "model", "method", "augment"):
            REGISTRIES[name].check(getattr(self, name))
        check_class_order(self.class_order, self.dataset)
        check_choice("harl_absent_classes", self.harl_absent_classes, ("zero", "exclude"))
        check_choice("random_start", self.random_start, ("normal", "uniform", "uniform_pos", "none"))
        check_choice("head", self.head, ("auto", *REGISTRIES["head"]))
        for check in FIELD_CHECKS:   # the objectives' own fields (methods/*.py register their checks)
            check(self)
        check_choice("attack_bn", self.attack_bn, ("eval", "batch"))
        check_choice("select", self.select, ("last", "best_val_pgd"))
        if self.select != "last" and not 0 < self.val_fraction < 1:
            raise bad("val_fraction", self.val_fraction,
                      "must lie in (0, 1): the share of each class held out for selection.")
        if self.select != "last" and self.eval_every == 0:
            raise bad("select", self.select, "selects among validated epochs; set eval_every > 0 (e.g. 5).")
        if self.nesterov and self.momentum <= 0:
            raise bad("nesterov", self.nesterov,
                      f"needs momentum > 0 (momentum={self.momentum}); set momentum or nesterov=False.")
        if self.imbalance_ratio < 1:
            raise bad("imbalance_ratio", self.imbalance_ratio,
                      "must be >= 1 (n_max / n_min; 1 means balanced). Use e.g. 10 or 100.")
        for name in ("eps", "step_size"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise bad(name, v, "must be >= 0 (an L-inf radius in [0,1] pixel units, e.g. 8/255).")
        positive = ("epochs", "batch_size", "attack_steps", "lr")
        for name in positive:
            if getattr(self, name) <= 0:
                raise bad(name, getattr(self, name), "must be > 0.")
        for name in ("n_max", "test_per_class", "eval_per_class"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise bad(name, v, "must be >= 1, or None for no cap.")
        check_choice("budget_rule", self.budget_rule, BUDGET_RULES)
        released_taet = self.method == "taet" and self.budget_rule == "released"
        if released_taet and not 0 <= self.stabilization_epochs <= self.epochs:
            raise bad("stabilization_epochs", self.stabilization_epochs,
                      f"must lie in [0, epochs={self.epochs}] (budget_rule='released' counts stage 1 inside epochs).")
        if self.method == "taet" and self.stabilization_epochs < 0:
            raise bad("stabilization_epochs", self.stabilization_epochs, "must be >= 0.")
        self._validate_awp_adt_lasat()
        if not 0 <= self.robustlt_a <= 1:
            raise bad("robustlt_a", self.robustlt_a, "must lie in [0, 1] (0 = no class-wise balancing).")
        if self.robustlt_b <= 0:
            raise bad("robustlt_b", self.robustlt_b, "must be > 0 (fraction of epochs the eps ramp takes).")
        if any(not 0 < m <= 1 for m in self.lr_milestones):
            raise bad("lr_milestones", self.lr_milestones, "must be fractions of the epochs in (0, 1].")
        if self.eval_every < 0:
            raise bad("eval_every", self.eval_every, "must be >= 0 (0 turns in-training evaluation off).")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise bad("device", self.device, "use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
        return self

    def _validate_awp_adt_lasat(self) -> None:
        """AWP, ADT and LAS-AT settings (docs/methods.md §3, §6, §7)."""
        check_choice("awp_ascent", self.awp_ascent, ("official", "robustlt"))
        check_choice("lasat_strategy_model", self.lasat_strategy_model, REGISTRIES["model"])
        for name in ("awp_gamma", "adt_lambda", "awp_warmup"):
            if getattr(self, name) < 0:
                raise bad(name, getattr(self, name), "must be >= 0.")
        for name in ("adt_steps", "adt_samples", "adt_lr", "lasat_interval", "lasat_policy_lr", "lasat_clip",
                     "lasat_reward_steps"):
            if getattr(self, name) <= 0:
                raise bad(name, getattr(self, name), "must be > 0.")
        for name in ("lasat_eps_choices", "lasat_step_choices", "lasat_iter_choices"):
            v = getattr(self, name)
            if not v or min(v) < 1:
                raise bad(name, v, "must be a non-empty list of integers >= 1 (LAS-AT's strategy picks one per "
                                   "sample; eps and step choices are in units of lasat_unit).")
        if self.lasat_unit is not None and self.lasat_unit <= 0:
            raise bad("lasat_unit", self.lasat_unit, "must be > 0, or None for eps / 8.")
        if not 0 < self.lasat_smoothing <= 1:
            raise bad("lasat_smoothing", self.lasat_smoothing,
                      "must lie in (0, 1]: the target probability of the true class (official 0.7; 1 = plain CE).")
        if len(self.lasat_reward) != 3:
            raise bad("lasat_reward", self.lasat_reward, "must be the three weights [a, b, c] of the loss, robust-"
                                                         "accuracy and clean-accuracy rewards (official [1, 1, 1]).")
        if self.robustlt and self.method == "las_at":
            raise bad("robustlt", self.robustlt, "LAS-AT's strategy network picks every sample's eps itself, so "
                      "RobustLT has no eps to set (scaling the picked one would be a new method). Fix: "
                      "robustlt=False with method='las_at'.")

    # ------------------------------------------------------------------ derived values
    def clean_epochs_before(self) -> int:
        """Clean epochs trained before the adversarial budget starts (TAET's stage 1 under equal_adversarial)."""
        return self.stabilization_epochs if self.method == "taet" and self.budget_rule == "equal_adversarial" else 0

    def total_epochs(self) -> int:
        return self.epochs + self.clean_epochs_before()

    def train_eps(self, dataset_default: float) -> float:
        return dataset_default if self.eps is None else self.eps

    def train_step(self, dataset_default: float) -> float:
        return self.train_eps(dataset_default) / 4 if self.step_size is None else self.step_size


def check_class_order(value: str, dataset: str) -> None:
    """label | permutation | permutation:N | a named order registered for `dataset` (data.CLASS_ORDERS)."""
    if value in ("label", "permutation"):
        return
    head, colon, seed = value.partition(":")
    if colon and head == "permutation":
        if not seed.isdigit():
            raise bad("class_order", value, "permutation:N takes a seed N >= 0, e.g. permutation:3.")
        return
    named = REGISTRIES["class_order"]
    check_choice("class_order", value, ["label", "permutation", "permutation:N", *named])
    if dataset not in named[value]:
        raise bad("class_order", value, f"is defined for {sorted(named[value])}, not dataset={dataset!r}; use "
                  "label, permutation or permutation:N there.")


def coerce(name: str, value, hint):
    """Accept a value only if it fits the annotation; ints widen to floats, nothing else converts."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(name, value, arg)
            except ConfigError:
                pass
        raise bad(name, value, f"expected {_type_name(hint)}, got {type(value).__name__}.")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad(name, value, f"expected a list, got {type(value).__name__}.")
        (item,) = typing.get_args(hint)
        return [coerce(name, v, item) for v in value]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    raise bad(name, value, f"expected {_type_name(hint)}, got {type(value).__name__}.")


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def parse_sets(pairs: list[str]) -> dict:
    """`--set key=value`: values are JSON where they parse (numbers, true, null, lists), else strings."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set epochs=5")
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out
