"""The papers' GPU set-ups: CIFAR-10-LT at IR 10/20/50/100 (TAET's whole comparison at IR 10),
CIFAR-100-LT, RobustLT's released training code, DermaMNIST; the source of every setting and the numbers
the papers report, so a reproduction can be held against them."""
from __future__ import annotations

from ..arms import Arm
from .base import Preset, arms, register
from .shared import FAIRNESS_ARMS, FAIRNESS_SOURCES, TAET_UNIT

__all__ = ["ADT_LASAT_ARMS", "ADT_LASAT_AWP_SOURCES", "COMPARISON_METHODS", "COMPARISON_OVERRIDES",
           "COMPARISON_SOURCES", "MART_OFFICIAL", "PAPER_METHODS", "PAPER_SCHEDULE", "PAPER_SOURCES", "ROBUSTLT_CODE",
           "ROBUSTLT_IR50", "ROBUSTLT_SOURCES", "TAET_IR10_BALANCED", "TAET_IR10_TAIL", "TAET_RELEASED_ATTACK"]

PAPER_SCHEDULE = {"epochs": 100, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                  "lr_milestones": [0.75, 0.9], "lr_gamma": 0.1}
PAPER_SOURCES = {
    "epochs, lr, momentum, weight_decay, batch_size, lr_milestones": "TAET released code: SGD 0.1/0.9/5e-4, "
    "batch 128, lr x0.1 at epochs 75 and 90 of 100",
    "stabilization_epochs": "TAET released code: 40 clean-CE epochs of 100",
    "harl_alpha, harl_beta, harl_gamma": "TAET paper: alpha = beta = gamma = 0.1",
    "harl_absent_classes": "TAET released code: S_C = C, absent class counts as L_c = 0",
    "eps, step_size, attack_steps": "AT-BSL and RobustLT code: 8/255, 2/255, 10 steps, for every arm. "
    "Named difference: TAET's released code trains with 0.031 / 0.003 (10 x 0.003 < eps, a weaker attack); "
    "the arm taet_released_attack runs that",
    "budget_rule": "released: TAET's 40 clean-CE epochs count inside the 100 (what the paper ran), so TAET's "
    "adversarial phase is 60 epochs against the baselines' 100; use --set budget_rule=equal_adversarial for "
    "100 adversarial epochs for every arm, TAET's 40 clean epochs extra",
    "attack BN, start, optimizer": "TAET / AT-BSL code: BatchNorm in eval mode while attacking, 0.001*N(0,1) start, "
    "SGD without Nesterov. RobustLT's code differs (batch-statistic BN, uniform start, Nesterov): presets "
    "*_robustlt_code use those",
    "checkpoint": "the last epoch (TAET, RobustLT); AT-BSL's script picks the best test PGD-20 epoch, which "
    "this workbench never does (select=best_val_pgd picks on a validation split of the training set)",
    "random_start, clamp_start": "each method's released code (random_start='auto'): TAET / AT-BSL / TRADES / MART "
    "0.001 * N(0, 1), not clamped before the first forward",
    "trades_beta, mart_beta": "TRADES and MART papers: beta = 6 (MART's WRN setting); the arm mart_official "
    "runs MART's ResNet-18 script settings: beta 5, lr 0.01, weight decay 3.5e-3 (train_resnet.py)",
    "bsl_tau": "AT-BSL paper: tau = 1",
    "robustlt_a, robustlt_b": "RobustLT code on CIFAR-10-LT: a = 0.3, b = 0.8 (b = 1.0 with TAET)",
    "model": "TAET tables: ResNet-18 on CIFAR-10-LT",
    "test protocol": "TAET tables: long-tailed test set; AT-BSL / RobustLT: balanced test set",
}
PAPER_METHODS = ["taet", "at_bsl", "pgd_at", "trades", "mart"]
# The rest of TAET's comparison (Fig. 2), each with its loss hyperparameters from its official code
# (RunConfig defaults) and the common protocol above; their own training attacks where they differ.
COMPARISON_METHODS = ["reat", "robal", "he", "gairat"]
COMPARISON_OVERRIDES = {"robal": {"attack_steps": 5}}   # each start is the method's own (random_start='auto')
COMPARISON_SOURCES = {
    "comparison protocol": "TAET ships no code for its baselines; each runs with the common protocol above (ResNet-18, "
    "100 epochs, 8/255, 2/255) and its own loss and attack settings (docs/methods.md)",
    "reat": "GuanlinLee/REAT loss_functions.py: BSL (tau 1) + TAIL, PGD-10 from U(-eps, eps) (unclamped); its RBL "
    "attack "
    "loss gives the plain-CE iterates (eval-mode BN), so the attack is plain CE",
    "robal": "wutong16/Adversarial_Long-Tail robal_R_train.yaml (= RobustLT's robal_cifar10.yaml): RoBal-R, "
    "CosPlus head, s 10, m 0.1, tau_m 0.3, tau_b 1.5, beta 6; PGD-5 from x + eps U[0,1) (unclamped; RobustLT: "
    "U(-eps, eps))",
    "he": "ShawnXYang/AT_HE CIFAR-10/README.md PGD-AT + HE command: s 10, m 0.2; normalised features and unit "
    "weight rows; PGD-10 on CE(s z) from x + 0.001 N(0, 1) (unclamped), the common protocol's start",
    "gairat": "zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training GAIRAT.py: Tanh weights, lambda -1 "
    "(fixed), GA-PGD-10 from U(-eps, eps) clamped to [0,1]; GAIR from epoch 50 of 100 (gairat_begin_epoch=None: "
    "half the epochs, "
    "as the official 60 of 120)",
}
# docs/methods.md: ADT (ADT_EXP) and LAS-AT are in TAET's comparison; LAS-AT picks eps itself, so it has no
# RobustLT arm. AWP is not in TAET's table but one of RobustLT's base methods (its table: IR 50).
ADT_LASAT_ARMS = [Arm("adt"), Arm("adt", True), Arm("las_at")]
ADT_LASAT_AWP_SOURCES = {
    "adt_lambda, adt_steps, adt_samples, adt_lr": "ADT code (adt_exp.py): lambda 0.01, 7 steps x 5 samples, "
    "Adam lr 0.3 betas (0, 0)",
    "lasat_*": "LAS-AT code and README (CIFAR-10): eps {3..15}/255, steps {3..14}, step {1..5}/255, strategy "
    "ResNet-18 updated every 20 steps (SGD 1e-4, clip 1), label smoothing 0.7, reward PGD-10 x 2 restarts",
    "awp_gamma, awp_ascent (IR 50)": "RobustLT's AWP (configs/cifar10lf/awp_cifar10.yaml, core/methods/awp.py): "
    "gamma 0.005, ascent by a step of the training optimiser",
    "comparison training protocol": "TAET ships no code for these baselines: each method's own loss settings with this "
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
    "taet": (74.67, 35.15), "at_bsl": (72.51, 26.57), "pgd_at": (69.00, 25.68), "robal": (73.18, 27.12),
    "reat": (74.56, 24.01), "he": (68.17, 25.66), "gairat": (61.07, 24.8),   # gairat's robustness: about 24.8
    "adt": (68.04, 26.13), "las_at": (64.05, 27.79),
}
ROBUSTLT_IR50 = {  # WRN-28-10, balanced test set: natural all / tail, PGD-20 all / tail, %
    "pgd_at": {"base": (58.25, 48.56, 27.28, 13.71), "+robustlt": (61.59, 52.67, 28.97, 16.36)},
    "at_bsl": {"base": (77.09, 72.48, 37.98, 28.60), "+robustlt": (77.61, 73.83, 42.11, 35.98),
               "autoattack all/tail": {"base": (34.57, 24.84), "+robustlt": (37.49, 30.70)}},
    "RoBal": {"base": (72.73, 67.15, 32.29, 22.19), "+robustlt": (74.63, 70.32, 36.08, 29.19)},
    "awp": {"base natural / pgd20, all classes": (59.66, 28.50)},   # RobustLT Table R-1 (docs/methods.md)
}
MART_OFFICIAL = Arm("mart", overrides={"mart_beta": 5.0, "lr": 0.01, "weight_decay": 3.5e-3}, label="mart_official")
TAET_RELEASED_ATTACK = Arm("taet", overrides={"eps": 0.031, "step_size": 0.003}, label="taet_released_attack")

for ir in (10, 20, 50, 100):
    methods = PAPER_METHODS + (COMPARISON_METHODS if ir == 10 else [])   # IR 10: TAET's whole comparison
    register(Preset(
        name=f"cifar10_lt_ir{ir}",
        description=f"CIFAR-10-LT IR {ir}, ResNet-18, 100 epochs: TAET (40 CE + 60 HARL), AT-BSL, PGD-AT, TRADES, "
                    "MART" + (", " + ", ".join(COMPARISON_METHODS) if ir == 10 else "") +
                    ", each with and without RobustLT, ADT (with and without), LAS-AT, CFA and DAFA" +
                    (", AWP" if ir == 50 else "") + " (GPU)",
        config={"dataset": "cifar10", "model": "resnet18", "eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 10,
                "stabilization_epochs": 40, "budget_rule": "released", **PAPER_SCHEDULE},
        sweep={"irs": [ir], "seeds": [0], "arms": [*arms(methods), *ADT_LASAT_ARMS, *FAIRNESS_ARMS,
                                                   *(arms(["awp"]) if ir == 50 else []),
                                                   TAET_UNIT, MART_OFFICIAL,
                                                   *([TAET_RELEASED_ATTACK] if ir == 10 else [])]},
        sources={**PAPER_SOURCES, **ADT_LASAT_AWP_SOURCES, **FAIRNESS_SOURCES,
                 **(COMPARISON_SOURCES if ir == 10 else {})},
        reported=({"taet_tail_classes_lt_test_pgd20": TAET_IR10_TAIL, "taet_figure2_balanced": TAET_IR10_BALANCED}
                  if ir == 10 else {"robustlt_ir50_wrn28_10": ROBUSTLT_IR50} if ir == 50 else {}),
        method_overrides={"taet": {"robustlt_b": 1.0}, **(COMPARISON_OVERRIDES if ir == 10 else {}),
                          "awp": {"awp_gamma": 0.005, "awp_ascent": "robustlt"}},
    ))
for ir in (10, 50):
    register(Preset(
        name=f"cifar100_lt_ir{ir}",
        description=f"CIFAR-100-LT IR {ir}, ResNet-18, 100 epochs, the paper methods with and without RobustLT (GPU)",
        config={"dataset": "cifar100", "model": "resnet18", "eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 10,
                "stabilization_epochs": 40, "budget_rule": "released", "robustlt_a": 0.4, "robustlt_b": 0.6,
                **PAPER_SCHEDULE},
        sweep={"irs": [ir], "seeds": [0], "arms": [*arms(PAPER_METHODS), TAET_UNIT]},
        sources={**PAPER_SOURCES, "robustlt_a, robustlt_b": "RobustLT configs on CIFAR-100: a = 0.4, b = 0.6 for "
                 "every method, TAET included"},
    ))
# RobustLT's own code, as released: WRN-28-10, batch-statistic BN and a uniform start in the attack,
# Nesterov SGD, AutoAugment (CIFAR10 policy) for AT-BSL, three seeds; a/b per its configs
ROBUSTLT_CODE = {"model": "wrn_28_10", "attack_bn": "batch", "random_start": "uniform", "clamp_start": True,
                 "nesterov": True}
ROBUSTLT_SOURCES = {
    **PAPER_SOURCES,
    "model, attack_bn, random_start, clamp_start, nesterov": "RobustLT code: WRN-28-10; core/methods/utils.py "
    "attacks with train-mode BN (running stats frozen) from U(-eps, eps) clamped to [0,1] before the first forward "
    "(L114-119); core/trainer/parser.py: Nesterov momentum",
    "augment (at_bsl)": "RobustLT configs atbsl_*.yaml: augment aua (AutoAugment, CIFAR10 policy)",
    "robustlt_a, robustlt_b": "RobustLT configs: a = 0.3, b = 0.8 on CIFAR-10 (b = 1.0 with TAET); a = 0.4, "
    "b = 0.6 for every method on CIFAR-100",
    "seeds": "RobustLT averages three seeds",
}
for dataset, ir, ab in (("cifar10", 50, {"robustlt_a": 0.3, "robustlt_b": 0.8}),
                        ("cifar100", 50, {"robustlt_a": 0.4, "robustlt_b": 0.6})):
    register(Preset(
        name=f"{dataset}_lt_ir{ir}_robustlt_code",
        description=f"{dataset.upper()}-LT IR {ir} as RobustLT's released code trains it (WRN-28-10, batch-stat BN "
                    "attack, uniform start, Nesterov, 3 seeds), each method with and without RobustLT (GPU)",
        config={"dataset": dataset, "eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 10,
                "stabilization_epochs": 40, "budget_rule": "released", **PAPER_SCHEDULE, **ROBUSTLT_CODE, **ab},
        sweep={"irs": [ir], "seeds": [0, 1, 2], "arms": arms(PAPER_METHODS)},
        sources=ROBUSTLT_SOURCES,
        reported={"robustlt_ir50_wrn28_10": ROBUSTLT_IR50} if dataset == "cifar10" else {},
        method_overrides={"at_bsl": {"augment": "autoaugment"},
                          **({"taet": {"robustlt_b": 1.0}} if dataset == "cifar10" else {})},
    ))
register(Preset(
    name="dermamnist",
    description="DermaMNIST (natural imbalance, 7 classes, 28x28x3), ResNet-18, 100 epochs (GPU)",
    config={"dataset": "dermamnist", "model": "resnet18", "eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 10,
            "stabilization_epochs": 40, "budget_rule": "released", **PAPER_SCHEDULE},
    sweep={"irs": [1], "seeds": [0], "arms": arms(PAPER_METHODS)},
    sources={**PAPER_SOURCES, "imbalance_ratio": "DermaMNIST keeps its natural imbalance (the profile is not "
             "applied); the IR axis is a single placeholder value"},
    method_overrides={"taet": {"robustlt_b": 1.0}},
))
