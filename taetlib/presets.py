"""Named set-ups: the CPU demo and the papers' GPU configurations.

Each preset is RunConfig overrides plus the sweep it implies (IRs x methods x seeds, with and
without RobustLT), the source of every setting, and the numbers the papers report for it
(../shared/METHODS.md), so a reproduction can be held against them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import check_choice


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: dict                       # RunConfig overrides
    sweep: dict                        # irs, seeds, arms: list of (method, robustlt) pairs
    sources: dict                      # setting -> where it comes from
    reported: dict = field(default_factory=dict)   # what the papers report for this set-up
    method_overrides: dict = field(default_factory=dict)  # method -> extra RunConfig overrides
    evaluation: dict = field(default_factory=lambda: dict(EVALUATION))  # evaluate() arguments

    def run_config(self, method: str, imbalance_ratio: float, seed: int, robustlt: bool, **extra) -> dict:
        """The override dict of one run of this preset's sweep."""
        return {**self.config, **self.method_overrides.get(method, {}), "method": method,
                "imbalance_ratio": float(imbalance_ratio), "seed": seed, "robustlt": robustlt, **extra}


EVALUATION = {"attacks": ["clean", "fgsm", "pgd20", "cw20"], "protocols": ["balanced", "long_tailed"],
              "per_class": None}
PAPER_SCHEDULE = {"epochs": 100, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                  "lr_milestones": [0.75, 0.9], "lr_gamma": 0.1}
PAPER_SOURCES = {
    "epochs, lr, momentum, weight_decay, batch_size, lr_milestones": "TAET released code: SGD 0.1/0.9/5e-4, "
    "batch 128, lr x0.1 at epochs 75 and 90 of 100",
    "stabilization_epochs": "TAET released code: 40 clean-CE epochs of 100",
    "harl_alpha, harl_beta, harl_gamma": "TAET paper: alpha = beta = gamma = 0.1",
    "harl_absent_classes": "TAET released code: S_C = C, absent class counts as L_c = 0",
    "eps, step_size, attack_steps": "AT-BSL and RobustLT code: 8/255, 2/255, 10 steps "
    "(TAET code: 0.031, 0.003, 10)",
    "random_start": "TAET / AT-BSL code: 0.001 * N(0, 1)",
    "trades_beta, mart_beta": "TRADES and MART papers: beta = 6",
    "bsl_tau": "AT-BSL paper: tau = 1",
    "robustlt_a, robustlt_b": "RobustLT code on CIFAR-10-LT: a = 0.3, b = 0.8 (b = 1.0 with TAET)",
    "model": "TAET tables: ResNet-18 on CIFAR-10-LT",
    "test protocol": "TAET tables: long-tailed test set; AT-BSL / RobustLT: balanced test set",
}
PAPER_METHODS = ["taet", "at_bsl", "pgd_at", "trades", "mart"]
# METHODS-ZOO.md: ADT (ADT_EXP) and LAS-AT are in TAET's comparison; LAS-AT picks eps itself, so it has no
# RobustLT arm. AWP is not in TAET's table but one of RobustLT's base methods (its table: IR 50).
ZOO_TAET_ARMS = [("adt", False), ("adt", True), ("las_at", False)]
ZOO_SOURCES = {
    "adt_lambda, adt_steps, adt_samples, adt_lr": "ADT code (adt_exp.py): lambda 0.01, 7 steps x 5 samples, "
    "Adam lr 0.3 betas (0, 0)",
    "lasat_*": "LAS-AT code and README (CIFAR-10): eps {3..15}/255, steps {3..14}, step {1..5}/255, strategy "
    "ResNet-18 updated every 20 steps (SGD 1e-4, clip 1), label smoothing 0.7, reward PGD-10 x 2 restarts",
    "awp_gamma, awp_ascent (IR 50)": "RobustLT's AWP (configs/cifar10lf/awp_cifar10.yaml, core/methods/awp.py): "
    "gamma 0.005, ascent by a step of the training optimiser",
    "zoo training protocol": "TAET ships no code for these baselines: each method's own loss settings with this "
    "preset's common schedule and attack",
}

TAET_IR10_TAIL = {  # CIFAR-10-LT IR 10, ResNet-18, long-tailed test set, PGD-20: clean / robust %
    "taet": {"dog": (56.11, 23.74), "frog": (79.06, 34.83), "horse": (72.28, 32.53), "ship": (80.60, 36.34),
             "truck": (77, 27)},
    "at_bsl": {"dog": (58.63, 23.02), "frog": (73.48, 26.97), "horse": (70.48, 21.70), "ship": (78.29, 21.70),
               "truck": (66, 19)},
    "trades": {"dog": (53.96, 11.87), "frog": (65.11, 13.20), "horse": (63.25, 16.27), "ship": (47.28, 3.87),
               "truck": (47, 4)},
    "pgd_at": {"dog": (51.07, 14.74), "frog": (62.32, 17.67), "horse": (63.85, 19.27), "ship": (64.34, 17.05),
               "truck": (54, 10)},
    "mart": {"dog": (37.76, 17.62), "frog": (52.09, 19.06), "horse": (58.43, 25.30), "ship": (47.25, 8.52),
             "truck": (41, 9)},
}
TAET_IR10_BALANCED = {  # TAET Figure 2 (about +-0.2): balanced accuracy / balanced robustness, %
    "taet": (74.67, 35.15), "at_bsl": (72.51, 26.57), "pgd_at": (69.00, 25.68), "RoBal": (73.18, 27.12),
    "REAT": (74.56, 24.01), "adt": (68.04, 26.13), "las_at": (64.05, 27.79),
}
ROBUSTLT_IR50 = {  # WRN-28-10, balanced test set: natural all / tail, PGD-20 all / tail, %
    "pgd_at": {"base": (58.25, 48.56, 27.28, 13.71), "+robustlt": (61.59, 52.67, 28.97, 16.36)},
    "at_bsl": {"base": (77.09, 72.48, 37.98, 28.60), "+robustlt": (77.61, 73.83, 42.11, 35.98),
               "autoattack all/tail": {"base": (34.57, 24.84), "+robustlt": (37.49, 30.70)}},
    "RoBal": {"base": (72.73, 67.15, 32.29, 22.19), "+robustlt": (74.63, 70.32, 36.08, 29.19)},
    "awp": {"base natural / pgd20, all classes": (59.66, 28.50)},   # RobustLT Table R-1 (METHODS-ZOO.md 0.2)
}

PRESETS: dict[str, Preset] = {}


def arms(methods, robustlt=(False, True)) -> list[tuple[str, bool]]:
    """Every method, each without and with RobustLT (or as `robustlt` says)."""
    return [(m, r) for m in methods for r in robustlt]


def register(p: Preset) -> Preset:
    PRESETS[p.name] = p
    return p


def get(name: str) -> Preset:
    check_choice("preset", name, PRESETS)
    return PRESETS[name]


# --------------------------------------------------------------------------- CPU: Fashion-MNIST-LT
# Budget: the four demo runs plus evaluation fit 15 minutes on a 2-core CPU (measured, README).
DEMO_SOURCES = {
    "dataset, imbalance_ratio": "Fashion-MNIST-LT, IR 10: the CPU stand-in for CIFAR-10-LT IR 10",
    "model": "small_cnn: sized for 28x28 inputs on a CPU",
    "eps": "0.1: the usual L-inf radius for (Fashion-)MNIST-scale inputs",
    "n_max, epochs, attack_steps, stabilization_epochs": "chosen to fit the 15-minute budget on 2 cores; "
    "stabilisation keeps the paper's 40% share of the epochs",
    "schedule": "papers' SGD 0.1/0.9/5e-4, lr x0.1 at 75% and 90% of the epochs",
}
register(Preset(
    name="fmnist_lt_demo",
    description="make demo: PGD-AT vs AT-BSL vs TAET vs TAET+RobustLT on real Fashion-MNIST-LT IR 10 (CPU, ~15 min)",
    # PGD-20 on the 10,000 test images takes ~145 s a run on 2 cores, so most of the 15 minutes go to
    # evaluation; training gets a 3-step attack (step 0.04) on n_max=800 for 6 epochs (TAET: 2 + 4).
    config={"dataset": "fashion_mnist", "model": "small_cnn", "eps": 0.1, "step_size": 0.04, "attack_steps": 3,
            "n_max": 800, "epochs": 6, "stabilization_epochs": 2, "batch_size": 128, "lr": 0.1,
            "eval_every": 0, "augment": "crop_flip"},
    sweep={"irs": [10], "seeds": [0],
           "arms": [("pgd_at", False), ("at_bsl", False), ("taet", False), ("taet", True)]},
    sources=DEMO_SOURCES,
    method_overrides={"taet": {"robustlt_b": 1.0}},
    # the full test sets under clean, FGSM and PGD-20; the eps curves on 100 images per class
    evaluation={"attacks": ["clean", "fgsm", "pgd20"], "protocols": ["balanced", "long_tailed"],
                "per_class": None, "curve_per_class": 50, "eps_sweep": []},
))
register(Preset(
    name="fmnist_lt_cpu",
    description="Fuller CPU run: full Fashion-MNIST-LT training set (IR 10), 30 epochs, 10-step PGD",
    config={"dataset": "fashion_mnist", "model": "small_cnn", "eps": 0.1, "step_size": 0.025, "attack_steps": 10,
            "epochs": 30, "stabilization_epochs": 12, "eval_every": 5},
    sweep={"irs": [10], "seeds": [0], "arms": arms(["pgd_at", "at_bsl", "taet", "trades", "mart"])},
    sources=DEMO_SOURCES,
    method_overrides={"taet": {"robustlt_b": 1.0}},
))

# --------------------------------------------------------------------------- GPU: the papers
for ir in (10, 20, 50, 100):
    register(Preset(
        name=f"cifar10_lt_ir{ir}",
        description=f"CIFAR-10-LT IR {ir}, ResNet-18, 100 epochs: TAET (40 CE + 60 HARL), AT-BSL, PGD-AT, TRADES, "
                    "MART, ADT, each with and without RobustLT, and LAS-AT" + (", AWP" if ir == 50 else "") + " (GPU)",
        config={"dataset": "cifar10", "model": "resnet18", "eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 10,
                "stabilization_epochs": 40, "random_start": "normal", **PAPER_SCHEDULE},
        sweep={"irs": [ir], "methods": PAPER_METHODS + ["adt", "las_at"] + (["awp"] if ir == 50 else []),
               "seeds": [0],
               "arms": arms(PAPER_METHODS) + ZOO_TAET_ARMS + (arms(["awp"]) if ir == 50 else [])},
        sources={**PAPER_SOURCES, **ZOO_SOURCES},
        reported=({"taet_tail_classes_lt_test_pgd20": TAET_IR10_TAIL, "taet_figure2_balanced": TAET_IR10_BALANCED}
                  if ir == 10 else {"robustlt_ir50_wrn28_10": ROBUSTLT_IR50} if ir == 50 else {}),
        method_overrides={"taet": {"robustlt_b": 1.0}, "awp": {"awp_gamma": 0.005, "awp_ascent": "robustlt"}},
    ))
for ir in (10, 50):
    register(Preset(
        name=f"cifar100_lt_ir{ir}",
        description=f"CIFAR-100-LT IR {ir}, ResNet-18, 100 epochs, the paper methods with and without RobustLT (GPU)",
        config={"dataset": "cifar100", "model": "resnet18", "eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 10,
                "stabilization_epochs": 40, **PAPER_SCHEDULE},
        sweep={"irs": [ir], "methods": PAPER_METHODS, "seeds": [0], "arms": arms(PAPER_METHODS)},
        sources=PAPER_SOURCES,
        method_overrides={"taet": {"robustlt_b": 1.0}},
    ))
register(Preset(
    name="dermamnist",
    description="DermaMNIST (natural imbalance, 7 classes, 28x28x3), ResNet-18, 100 epochs (GPU)",
    config={"dataset": "dermamnist", "model": "resnet18", "eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 10,
            "stabilization_epochs": 40, **PAPER_SCHEDULE},
    sweep={"irs": [1], "methods": PAPER_METHODS, "seeds": [0], "arms": arms(PAPER_METHODS)},
    sources={**PAPER_SOURCES, "imbalance_ratio": "DermaMNIST keeps its natural imbalance (the profile is not "
             "applied); the IR axis is a single placeholder value"},
    method_overrides={"taet": {"robustlt_b": 1.0}},
))


def describe() -> str:
    lines = []
    for p in PRESETS.values():
        s = p.sweep
        names = ", ".join(m + ("+robustlt" if r else "") for m, r in s["arms"])
        lines.append(f"{p.name:18s} {p.description}\n{'':18s} irs={s['irs']} seeds={s['seeds']} runs: {names}")
    return "\n".join(lines)
