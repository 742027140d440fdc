"""Run configuration: one flat dataclass whose fields are the notebooks' parameters and the CLI's flags.

Flat on purpose: a papermill `parameters` cell, a sweep's override dict and a saved config.json
all map 1:1 onto it. Validation names the bad field, the value and the fix. Names (dataset, model,
method, augment) are checked against the registries filed in errors.REGISTRIES. The one mapping is
`method_args`, the method's own hyperparameters, checked against its MethodSpec (method_spec.py).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from . import numerics
from .errors import REGISTRIES, ConfigError, bad, check_choice
from .fawa import CLASS_ACC
from .plugins import PluginNotFound, load_plugins

__all__ = ["BUDGET_RULES", "RunConfig", "SELECT", "build_args", "check_class_order", "check_device_name", "coerce",
           "legacy_numerics", "parse_sets"]

BUDGET_RULES = ("equal_adversarial", "released")
SELECT = ("last", "best_val_pgd", "fawa")   # which weights model.pt holds (selection.py, fawa.py)


@dataclass(init=False)   # __init__ below also maps a method's own settings into method_args
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
    method_args: dict = field(default_factory=dict)   # the method's own hyperparameters (its MethodSpec.args)
    # equal_adversarial: `epochs` are adversarial epochs for every method, and a method's clean stage (TAET's
    # stage 1) comes before them, extra, at the initial lr; released: stage 1 is part of `epochs` (TAET's 40 + 60)
    budget_rule: str = "equal_adversarial"
    robustlt: bool = False                 # wrap the objective in RobustLT (CPB + AIW)
    robustlt_a: float = 0.3
    robustlt_b: float = 0.8
    # --- training attack (None = the dataset's default radius; step = eps / 4)
    eps: float | None = None
    step_size: float | None = None
    attack_steps: int = 10
    random_start: str = "auto"             # auto (the method's released code) | normal | uniform | uniform_pos | none
    clamp_start: bool | None = None        # clamp x_0 into ball and [0,1] before the 1st forward; None = method's
    attack_bn: str = "eval"                # training attack BatchNorm: eval (TAET/AT-BSL code) | batch (RobustLT)
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
    # fawa: CFA's fairness-aware weight average (fawa.py): an EMA of the weights, updated after each epoch whose
    # worst validation class reaches fawa_threshold
    select: str = "last"
    val_fraction: float = 0.1              # share of each class held out for select=best_val_pgd or fawa
    fawa_decay: float = 0.88               # the average's decay (CFA train.py --decay-rate, CIFAR-10)
    fawa_threshold: float = 0.24           # worst class's validation PGD accuracy that lets it update (--threshold)
    fawa_class_acc: str = "official"       # that accuracy as CFA's logger counts it (C*correct_c/N) | recall
    # --- hardware
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    # numerics (numerics.py): auto = bf16 + channels_last where the hardware runs bf16 natively, else fp32.
    # precision stays fp32 by default until paired runs show bf16 keeps the numbers (docs/speed.md)
    precision: str = "fp32"                # auto | fp32 | bf16: training forward, backward and attack
    memory_format: str = "auto"            # auto | contiguous | channels_last (training and evaluation)
    compile: bool = False
    eval_precision: str = "fp32"           # fp32 | bf16 (a weaker attack: evaluate() marks its tables)
    resume_other_numerics: bool = False    # resume a run whose recorded numerics resolve differently now
    sync_bn: bool = False                  # SyncBatchNorm across DDP ranks (GPUs; torchrun runs only)
    seed: int = 0
    # --- plugins: modules or .py files imported before anything else is read (they register methods, models,
    # datasets); recorded here so every notebook kernel and cluster job of the run imports them too
    plugins: list[str] = field(default_factory=list)

    def __init__(self, **settings):
        """Settings by field name. A method's own hyperparameters go in `method_args`, or one by one as
        `method_args.<name>` (the config's method), `<method>.<name>` (any method: applied when it is the
        config's, checked and left out otherwise, so one shared sweep config can hold several methods'), or
        under their RunConfig names of taetlib 0.1 (harl_alpha, stabilization_epochs: MethodSpec.aliases).
        The one-by-one forms override `method_args`; among them the later key wins."""
        plugins = coerce("plugins", settings.get("plugins", []), list[str])
        try:   # first: a plugin may register the method
            settings = {**settings, "plugins": load_plugins(plugins)}
        except PluginNotFound as e:
            raise bad("plugins", plugins, str(e)) from None
        settings = legacy_numerics(settings)
        known = {f.name: f for f in dataclasses.fields(self)}
        settings, given_as = _gather_method_args(settings, known)
        unknown = [k for k in settings if k not in known]
        if unknown:
            k = unknown[0]
            names = [*known, *_method_keys(settings.get("method", self.method))]
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            shown_k = k if isinstance(k, str) and k.isidentifier() else repr(k)   # keeps the message one line
            raise bad(shown_k, settings[k], f"unknown parameter.{hint} Known: {sorted(known)}, and a method's own "
                                      "settings as method_args.<name> or <method>.<name>.")
        for name, f in known.items():
            if name in settings:
                value = settings[name]
            else:
                value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            setattr(self, name, value)
        try:
            self.__post_init__()
        except ConfigError as e:   # name a method setting as it was given (harl_alpha, not method_args.alpha)
            field_name, eq, rest = str(e).partition("=")
            name = field_name.removeprefix("method_args.")
            if eq and name in given_as and field_name != name:
                raise ConfigError(f"{given_as[name]}={rest}") from None
            raise

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # types first, so range checks never compare a str with 1
            setattr(self, f.name, coerce(f.name, getattr(self, f.name), hints[f.name]))
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Build from a plain dict (config.json, a sweep's overrides), refusing unknown names and values of
        the wrong type; keys of taetlib 0.1 map onto method_args (see __init__)."""
        return cls(**d)

    def replace(self, **changes) -> RunConfig:
        """A copy with `changes`; a new method starts from its own defaults unless method_args is given."""
        base = self.to_dict()
        if changes.get("method", self.method) != self.method:
            base.pop("method_args")
        return RunConfig.from_dict({**base, **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            d = json.loads(Path(path).read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad("config", str(path), f"is not a JSON file ({e}). Fix: restore it, or write it again.") from None
        if not isinstance(d, dict):
            raise bad("config", str(path), f"holds a {type(d).__name__}, not the JSON object of a RunConfig.")
        d.pop(numerics.RESOLVED_KEY, None)   # fit()'s record of what `auto` resolved to, not a setting
        return cls.from_dict(d)

    @property
    def hparams(self):
        """The method's hyperparameters as its frozen MethodArgs dataclass."""
        return build_args(REGISTRIES["method"][self.method], self.method_args)

    # ------------------------------------------------------------------ validation
    def validate(self) -> RunConfig:
        # registries live beside what they register; taetlib/__init__.py imports those modules
        for name in ("dataset", "model", "method", "augment"):
            REGISTRIES[name].check(getattr(self, name))
        check_class_order(self.class_order, self.dataset)
        check_choice("random_start", self.random_start, ("auto", "normal", "uniform", "uniform_pos", "none"))
        check_choice("head", self.head, ("auto", *REGISTRIES["head"]))
        spec = REGISTRIES["method"][self.method]
        if self.head not in ("auto", spec.head):
            raise bad("head", self.head, f"method={self.method!r} trains the {spec.head!r} head; use head='auto' "
                                         f"(the method's own) or head={spec.head!r}.")
        args = build_args(spec, self.method_args)
        self.method_args = dataclasses.asdict(args)   # every setting, defaults filled: config.json says all
        args.check(self)
        check_choice("attack_bn", self.attack_bn, ("eval", "batch"))
        check_choice("precision", self.precision, numerics.PRECISIONS)
        check_choice("memory_format", self.memory_format, numerics.MEMORY_FORMATS)
        check_choice("eval_precision", self.eval_precision, numerics.EVAL_PRECISIONS)
        check_choice("select", self.select, SELECT)
        if self.select != "last" and not 0 < self.val_fraction < 1:
            raise bad("val_fraction", self.val_fraction,
                      "must lie in (0, 1): the share of each class held out for selection.")
        if self.select == "best_val_pgd" and self.eval_every == 0:
            raise bad("select", self.select, "selects among validated epochs; set eval_every > 0 (e.g. 5), or "
                                             "select='fawa' (it validates every epoch).")
        check_choice("fawa_class_acc", self.fawa_class_acc, CLASS_ACC)
        if not 0 <= self.fawa_decay < 1:
            raise bad("fawa_decay", self.fawa_decay, "must lie in [0, 1) (CFA's official 0.88; 0 keeps the last "
                                                     "epoch that reached the threshold).")
        if self.fawa_threshold < 0:
            raise bad("fawa_threshold", self.fawa_threshold, "must be >= 0 (CFA's official 0.24 on CIFAR-10).")
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
        if not 0 <= self.robustlt_a <= 1:
            raise bad("robustlt_a", self.robustlt_a, "must lie in [0, 1] (0 = no class-wise balancing).")
        if self.robustlt_b <= 0:
            raise bad("robustlt_b", self.robustlt_b, "must be > 0 (fraction of epochs the eps ramp takes).")
        if any(not 0 < m <= 1 for m in self.lr_milestones):
            raise bad("lr_milestones", self.lr_milestones, "must be fractions of the epochs in (0, 1].")
        if self.eval_every < 0:
            raise bad("eval_every", self.eval_every, "must be >= 0 (0 turns in-training evaluation off).")
        check_device_name(self.device)
        return self

    # ------------------------------------------------------------------ derived values
    def clean_stage_epochs(self) -> int:
        """The clean epochs the method trains before its attack (TAET's stage 1); 0 for most methods."""
        stage = REGISTRIES["method"][self.method].clean_stage
        return self.method_args[stage] if stage else 0

    def clean_epochs_before(self) -> int:
        """Clean epochs trained before the adversarial budget starts (TAET's stage 1 under equal_adversarial)."""
        return self.clean_stage_epochs() if self.budget_rule == "equal_adversarial" else 0

    def total_epochs(self) -> int:
        return self.epochs + self.clean_epochs_before()

    def train_eps(self, dataset_default: float) -> float:
        return dataset_default if self.eps is None else self.eps

    def train_step(self, dataset_default: float) -> float:
        return self.train_eps(dataset_default) / 4 if self.step_size is None else self.step_size


def check_device_name(device: str) -> None:
    """The device's spelling; whether this machine has it is distributed.resolve_device's to say."""
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,4})?", device):
        raise bad("device", device, "use 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index, e.g. cuda:0).")
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


def legacy_numerics(d: dict) -> dict:
    """Configs written before precision / memory_format: their bf16 / channels_last flags say what ran."""
    if "bf16" not in d and "channels_last" not in d:
        return d
    d = dict(d)
    if "bf16" in d:
        d.setdefault("precision", "bf16" if d.pop("bf16") else "fp32")
    if "channels_last" in d:
        d.setdefault("memory_format", "channels_last" if d.pop("channels_last") else "contiguous")
    return d


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
        number = float(value) if not isinstance(value, int) or abs(value) < 2**1023 else math.inf
        if not math.isfinite(number):   # NaN passes every range check (each comparison is False)
            raise bad(name, value, "expected a finite number, got NaN or infinity (or an int beyond a float).")
        return number
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 2**63:   # beyond torch's int64, and past 4300 digits not even JSON can write it
            raise bad(name, value, "expected a whole number of magnitude below 2**63.")
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    if hint is dict and isinstance(value, dict):
        return dict(value)
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
        except ValueError:   # not JSON (or an int past Python's digit limit): the string itself
            out[k] = v
    return out


# ------------------------------------------------------------------ a method's own settings
def build_args(spec, raw: dict):
    """spec.args from a mapping: unknown names refused with the method's own listed, types as RunConfig's."""
    names = spec.field_names()
    for k, v in raw.items():
        if k not in names:
            close = difflib.get_close_matches(k, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise bad(f"method_args.{k}", v, f"not a setting of method {spec.name!r}, which takes "
                                             f"{names or 'none'}.{hint}")
    hints = typing.get_type_hints(spec.args)
    return spec.args(**{k: coerce(f"method_args.{k}", v, hints[k]) for k, v in raw.items()})


def _method_keys(method: object) -> list[str]:
    spec = REGISTRIES["method"].get(method) if isinstance(method, str) else None   # a wrong type is refused later
    return [f"method_args.{n}" for n in spec.field_names()] + list(spec.aliases) if spec else []


def _one_by_one(key: str, method: str) -> tuple[str, str] | None:
    """(method, args field) a settings key names one by one, or None for any other key."""
    if key.startswith("method_args."):
        return method, key.removeprefix("method_args.")
    owner, dot, name = key.partition(".")
    if dot and owner in REGISTRIES["method"]:
        return owner, name
    for spec in REGISTRIES["method"].values():
        if key in spec.aliases:
            return spec.name, spec.aliases[key]
    return None


def _gather_method_args(settings: dict, fields: dict) -> tuple[dict, dict]:
    """settings with the method's own settings gathered into method_args, and {args field: the key it was
    given as}; those of other methods are checked against their spec (a shared sweep config holds several
    methods') and left out."""
    method = settings.get("method", RunConfig.method)
    mine = dict(coerce("method_args", settings.get("method_args", {}), dict))
    others: dict[str, dict] = {}
    out, given_as = {}, {}
    for key, value in settings.items():
        where = None if key in fields else _one_by_one(key, method)
        if where is None:
            out[key] = value
        elif where[0] == method:
            mine[where[1]], given_as[where[1]] = value, key
        else:
            others.setdefault(where[0], {})[where[1]] = (key, value)
    for owner, given in others.items():
        try:
            build_args(REGISTRIES["method"][owner], {name: v for name, (_, v) in given.items()})
        except ConfigError as e:
            keys = [k for k, _ in given.values()]
            raise ConfigError(f"{e} (given as {keys}, settings of method {owner!r})") from None
    if mine or "method_args" in settings:
        out["method_args"] = mine
    return out, given_as
