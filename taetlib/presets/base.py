"""The preset's shape (Preset), the registry every presets file registers into, and the helpers those
files share: the paper's stage-1 proportion, TAET's two claims as primary endpoints, arms per method."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..arms import Arm
from ..errors import Registry, check_choice

__all__ = ["EVALUATION", "PRESETS", "Preset", "STAGE1_SHARE", "arms", "describe", "get", "register", "taet_claims",
           "taet_stage1"]

@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: dict                       # RunConfig overrides
    sweep: dict                        # irs, seeds, arms: list of arms.Arm
    sources: dict                      # setting -> where it comes from
    reported: dict = field(default_factory=dict)   # what the papers report for this set-up
    method_overrides: dict = field(default_factory=dict)  # method -> extra RunConfig overrides
    evaluation: dict = field(default_factory=lambda: dict(EVALUATION))  # evaluate() arguments
    ir_overrides: dict = field(default_factory=dict)   # IR -> RunConfig overrides (the same for every arm)
    # pre-declared primary comparisons (a - b of a metric at an IR and protocol, with the paper's claimed
    # effect): only these are Holm-adjusted and can hold or be contradicted; every other reading is descriptive
    primary: tuple = ()
    health: dict = field(default_factory=dict)   # health.Rules overrides: margin above chance, plateau, window
    tuning: dict | None = None   # the equal tuning budget every arm gets (tuning.TuningSpec's fields); None: none
    robust_attack: str | None = None   # the attack the metrics and claims read (None: pgd20, else the first)

    def run_config(self, arm: Arm, imbalance_ratio: float, seed: int, **extra) -> dict:
        """The override dict of one run of this preset's sweep."""
        arm = Arm.of(arm)
        out = {**self.config, **self.ir_overrides.get(imbalance_ratio, {}), **self.method_overrides.get(arm.method, {}),
               **arm.overrides, "method": arm.method,
               "imbalance_ratio": float(imbalance_ratio), "seed": seed, "robustlt": arm.robustlt, **extra}
        return {"split_seed": seed, **out}   # each seed draws its own data unless the preset fixes the split


# TAET reports PGD-20/100 (and an L2 C&W); AT-BSL and RobustLT report AutoAttack: every paper preset runs all
EVALUATION: dict = {"attacks": ["clean", "fgsm", "pgd20", "pgd100", "cw20", "autoattack"],
              "protocols": ["balanced", "long_tailed"], "per_class": None}
STAGE1_SHARE = 2 / 3   # TAET's 40 clean-CE epochs to its 60 adversarial ones


def taet_stage1(adversarial_epochs: int) -> int:
    """TAET's clean-CE epochs in the paper's proportion 40 : 60 to `adversarial_epochs` (budget_rule
    equal_adversarial), the rule for every preset that does not say otherwise in its sources."""
    return round(adversarial_epochs * STAGE1_SHARE)


PRESETS: dict[str, Preset] = Registry("preset")


def taet_claims(irs, protocol: str) -> tuple:
    """TAET's two claims as primary endpoints: TAET - AT-BSL balanced robustness (the paper: +8.6 points,
    Figure 2, IR 10) and on TAET's tail, the rarer half of the classes (+8.4: its tail-class table)."""
    return tuple({"a": "taet", "b": "at_bsl", "metric": m, "imbalance_ratio": float(ir), "protocol": protocol,
                  "claimed": c} for ir in irs for m, c in (("balanced_robustness", 0.086),
                                                            ("taet_tail_robustness", 0.084)))


def arms(methods, robustlt=(False, True)) -> list[Arm]:
    """Every method, each without and with RobustLT (or as `robustlt` says)."""
    return [Arm(m, r) for m in methods for r in robustlt]


def register(p: Preset) -> Preset:
    PRESETS[p.name] = p
    return p


def get(name: str) -> Preset:
    check_choice("preset", name, PRESETS)
    return PRESETS[name]


def describe() -> str:
    lines = []
    for p in PRESETS.values():
        s = p.sweep
        names = ", ".join(a.name for a in s["arms"])
        lines.append(f"{p.name:18s} {p.description}\n{'':18s} irs={s['irs']} seeds={s['seeds']} runs: {names}")
    return "\n".join(lines)
