"""Named set-ups: the CPU demo and the papers' GPU configurations.

Each preset is RunConfig overrides plus the sweep it implies (IRs x methods x seeds, with and
without RobustLT), the source of every setting, and the numbers the papers report for it
(../shared/METHODS.md), so a reproduction can be held against them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Registry, check_choice


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
# The rest of TAET's comparison (Fig. 2), each with its loss hyperparameters from its official code
# (RunConfig defaults) and the common protocol above; their own training attacks where they differ.
ZOO_METHODS = ["reat", "robal", "he", "gairat"]
ZOO_OVERRIDES = {
    "reat": {"random_start": "uniform"},
    "robal": {"attack_steps": 5, "random_start": "uniform_pos"},
    "gairat": {"random_start": "uniform"},
}
ZOO_SOURCES = {
    "zoo protocol": "TAET ships no code for its baselines; each runs with the common protocol above (ResNet-18, "
    "100 epochs, 8/255, 2/255) and its own loss and attack settings (METHODS-ZOO.md)",
    "reat": "GuanlinLee/REAT loss_functions.py: BSL (tau 1) + TAIL, PGD-10 from U(-eps, eps); its RBL attack "
    "loss gives the plain-CE iterates (eval-mode BN), so the attack is plain CE",
    "robal": "wutong16/Adversarial_Long-Tail robal_R_train.yaml (= RobustLT's robal_cifar10.yaml): RoBal-R, "
    "CosPlus head, s 10, m 0.1, tau_m 0.3, tau_b 1.5, beta 6; PGD-5 from x + eps U[0,1) (RobustLT: U(-eps, eps))",
    "he": "ShawnXYang/AT_HE CIFAR-10/README.md PGD-AT + HE command: s 10, m 0.2; normalised features and unit "
    "weight rows; PGD-10 on CE(s z) from x + 0.001 N(0, 1), the common protocol's start",
    "gairat": "zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training GAIRAT.py: Tanh weights, lambda -1 "
    "(fixed), GA-PGD-10 from U(-eps, eps); GAIR from epoch 50 of 100 (gairat_begin_epoch=None: half the epochs, "
    "as the official 60 of 120)",
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
    "taet": (74.67, 35.15), "at_bsl": (72.51, 26.57), "pgd_at": (69.00, 25.68), "robal": (73.18, 27.12),
    "reat": (74.56, 24.01), "he": (68.17, 25.66), "gairat": (61.07, 24.8),   # gairat's robustness: about 24.8
}
ROBUSTLT_IR50 = {  # WRN-28-10, balanced test set: natural all / tail, PGD-20 all / tail, %
    "pgd_at": {"base": (58.25, 48.56, 27.28, 13.71), "+robustlt": (61.59, 52.67, 28.97, 16.36)},
    "at_bsl": {"base": (77.09, 72.48, 37.98, 28.60), "+robustlt": (77.61, 73.83, 42.11, 35.98),
               "autoattack all/tail": {"base": (34.57, 24.84), "+robustlt": (37.49, 30.70)}},
    "RoBal": {"base": (72.73, 67.15, 32.29, 22.19), "+robustlt": (74.63, 70.32, 36.08, 29.19)},
}

PRESETS: dict[str, Preset] = Registry("preset")


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
    methods = PAPER_METHODS + (ZOO_METHODS if ir == 10 else [])   # IR 10: TAET's whole comparison
    register(Preset(
        name=f"cifar10_lt_ir{ir}",
        description=f"CIFAR-10-LT IR {ir}, ResNet-18, 100 epochs: TAET (40 CE + 60 HARL), AT-BSL, PGD-AT, TRADES, "
                    "MART" + (", " + ", ".join(ZOO_METHODS) if ir == 10 else "") +
                    ", each with and without RobustLT (GPU)",
        config={"dataset": "cifar10", "model": "resnet18", "eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 10,
                "stabilization_epochs": 40, "random_start": "normal", **PAPER_SCHEDULE},
        sweep={"irs": [ir], "methods": methods, "seeds": [0], "arms": arms(methods)},
        sources={**PAPER_SOURCES, **ZOO_SOURCES} if ir == 10 else PAPER_SOURCES,
        reported=({"taet_tail_classes_lt_test_pgd20": TAET_IR10_TAIL, "taet_figure2_balanced": TAET_IR10_BALANCED}
                  if ir == 10 else {"robustlt_ir50_wrn28_10": ROBUSTLT_IR50} if ir == 50 else {}),
        method_overrides={"taet": {"robustlt_b": 1.0}, **(ZOO_OVERRIDES if ir == 10 else {})},
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
