"""Named set-ups: the CPU demo and the papers' GPU configurations.

Each preset is RunConfig overrides plus the sweep it implies (IRs x arms x seeds; an arm is a
method, with or without RobustLT, with its own overrides and label: arms.Arm), the source of every
setting, the budget rule it uses and why, and the numbers the papers report for it
(docs/methods.md), so a reproduction can be held against them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .arms import Arm
from .errors import Registry, check_choice

__all__ = ["ADT_LASAT_ARMS", "ADT_LASAT_AWP_SOURCES", "CFA_FAWA", "COMPARISON_METHODS", "COMPARISON_OVERRIDES",
           "COMPARISON_SOURCES", "DEMO_ARMS", "DEMO_CONFIG", "DEMO_SOURCES", "EVALUATION", "FAIRNESS_ARMS",
           "FAIRNESS_METHODS", "FAIRNESS_SOURCES", "HARD_RAREST", "MART_OFFICIAL", "PAPER_METHODS", "PAPER_SCHEDULE",
           "PAPER_SOURCES", "PRESETS", "Preset", "RESULTS_ARMS", "RESULTS_METHODS", "ROBUSTLT_CODE", "ROBUSTLT_IR50",
           "ROBUSTLT_SOURCES", "STAGE1_SHARE", "STUDY_A_ARMS", "STUDY_A_PRIMARY", "STUDY_B_ARMS", "STUDY_B_PRIMARY",
           "STUDY_CONFIG", "STUDY_C_ARMS", "STUDY_C_ZOO", "STUDY_EPOCHS", "STUDY_EVALUATION", "STUDY_SOURCES",
           "STUDY_TUNING", "TAET_IR10_BALANCED", "TAET_IR10_TAIL", "TAET_RELEASED_ATTACK", "TAET_UNIT", "arms",
           "describe", "get", "register", "taet_claims", "taet_stage1"]


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
STAGE1_SHARE = 2 / 3   # TAET's 40 clean-CE epochs to its 60 adversarial ones


def taet_stage1(adversarial_epochs: int) -> int:
    """TAET's clean-CE epochs in the paper's proportion 40 : 60 to `adversarial_epochs` (budget_rule
    equal_adversarial), the rule for every preset that does not say otherwise in its sources."""
    return round(adversarial_epochs * STAGE1_SHARE)
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
# The class-wise robust-fairness baselines, TAET's natural opponents on the weak classes. Each sets every class's
# radius itself (CFA's margins, DAFA's weights), so neither has a RobustLT arm.
FAIRNESS_METHODS = ["cfa", "dafa"]
CFA_FAWA = {"select": "fawa", "fawa_decay": 0.88, "fawa_threshold": 0.24}   # PKU-ML/CFA train.py's defaults
FAIRNESS_ARMS = [Arm("cfa", overrides=CFA_FAWA), Arm("dafa")]
FAIRNESS_SOURCES = {
    "cfa_*": "CFA code (PKU-ML/CFA train.py, attack.py) on CIFAR-10: TRADES mode (the code's default) with CCM "
    "and CCR, lambda_1 = lambda_2 = 0.5 (README command), calibration from epoch 10, beta 6; class accuracy as its "
    "logger computes it (C * correct_c / N)",
    "select, fawa_decay, fawa_threshold (cfa)": "CFA code (train.py L243-258, utils.weight_average): model.pt is "
    "the fairness-aware weight average (FAWA, the model CFA's framework returns), decay 0.88, updated after each "
    "epoch whose worst validation class reaches 0.24 as the logger counts it (C * correct_c / N; fawa_class_acc="
    "'recall' reads per-class recall). The code holds out 100 images of each CIFAR-10 class; here val_fraction "
    "(0.1) of each class, so CFA trains on 90 % of the images the other arms see. On a long-tailed split the "
    "logger's count scales each class by its share, so the tail may never reach 0.24: then model.pt keeps the last "
    "epoch's weights and history.jsonl records fawa_updates 0",
    "dafa_*": "DAFA code (rucy74/DAFA scripts/trades_dafa.sh, arguments.py) on CIFAR-10: TRADES base, lambda 1.0, "
    "warm-up 70 of 110 epochs (dafa_warmup=None keeps that ratio: 64 of 100), beta 6",
    "fairness protocol": "both train with the common schedule and attack above (8/255, 2/255, 10 steps); their own "
    "code: CFA PreActResNet-18, 200 epochs, 2/255; DAFA 110 epochs, 0.031 / 0.007",
}
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


TAET_UNIT = Arm("taet", overrides={"harl_alpha": 1.0, "harl_beta": 1.0, "harl_gamma": 1.0}, label="taet_unit")
MART_OFFICIAL = Arm("mart", overrides={"mart_beta": 5.0, "lr": 0.01, "weight_decay": 3.5e-3}, label="mart_official")
TAET_RELEASED_ATTACK = Arm("taet", overrides={"eps": 0.031, "step_size": 0.003}, label="taet_released_attack")


def register(p: Preset) -> Preset:
    PRESETS[p.name] = p
    return p


def get(name: str) -> Preset:
    check_choice("preset", name, PRESETS)
    return PRESETS[name]


# --------------------------------------------------------------------------- CPU: Fashion-MNIST-LT
DEMO_SOURCES = {
    "dataset, imbalance_ratio": "Fashion-MNIST-LT, IR 10: the CPU stand-in for CIFAR-10-LT IR 10",
    "model": "small_cnn: sized for 28x28 inputs on a CPU",
    "eps": "0.1: the usual L-inf radius for (Fashion-)MNIST-scale inputs",
    "n_max, epochs, attack_steps, stabilization_epochs": "chosen to fit the 15-minute budget on 2 cores",
    "budget_rule": "equal_adversarial: every arm gets the same 10 adversarial epochs on the same lr sequence; "
    "TAET's clean epochs come before them, extra (a comparison of losses, not of schedules)",
    "stabilization_epochs": "4 clean epochs before TAET's 10 adversarial ones: shorter than the paper's "
    "proportion 40 : 60 (which would be 7 : 10), to fit the 15-minute budget",
    "taet_unit": "TAET with alpha = beta = gamma = 1: HARL's structure at CE's gradient scale (HARL's 0.1 weights "
    "scale its gradient by about 0.1); ten times the loss scale is also ten times the effective learning rate, so "
    "a difference between taet and taet_unit does not isolate the scale",
    "robustlt_b": "0.5: the AIW ramp reaches the full radius at adversarial epoch 6 of 10; RobustLT's b = 0.8-1.0 "
    "assume 100 epochs, and b = 1.0 never reaches the radius within the run",
    "test_per_class": "300 test images per class (seeded, stratified; the long-tailed protocol is drawn inside "
    "them with its profile): PGD-20 on all 10,000 would take most of the 15 minutes; the time goes to training",
    "schedule": "papers' SGD 0.1/0.9/5e-4, lr x0.1 at 75% and 90% of the adversarial epochs",
    "split_seed": "follows seed (the sweep's default): each seed draws its own training subsample and test images, "
    "so the interval over seeds holds the data draw too",
    "primary": "TAET - AT-BSL balanced robustness and TAET-tail robustness on the balanced test set: TAET's two "
    "claims, Holm-adjusted; every other comparison is descriptive",
    "health": "margin 0.05: a run whose balanced accuracy's lower bound is not 5 points above chance did not train",
}
DEMO_ARMS = [Arm("pgd_at"), Arm("at_bsl"), Arm("taet"), Arm("taet", True), TAET_UNIT]
DEMO_CONFIG = {"dataset": "fashion_mnist", "model": "small_cnn", "eps": 0.1, "step_size": 0.04, "attack_steps": 3,
               "n_max": 800, "epochs": 10, "stabilization_epochs": 4, "budget_rule": "equal_adversarial",
               "batch_size": 128, "lr": 0.1, "eval_every": 0, "augment": "crop_flip", "test_per_class": 300}
register(Preset(
    name="fmnist_lt_demo",
    description="make demo: PGD-AT, AT-BSL, TAET, TAET+RobustLT and the taet_unit control on real Fashion-MNIST-LT "
                "IR 10 under an equal adversarial budget (CPU, ~15 min)",
    config=DEMO_CONFIG,
    sweep={"irs": [10], "seeds": [0], "arms": DEMO_ARMS},
    sources=DEMO_SOURCES,
    method_overrides={"taet": {"robustlt_b": 0.5}},
    evaluation={"attacks": ["clean", "fgsm", "pgd20"], "protocols": ["balanced", "long_tailed"],
                "per_class": None, "curve_per_class": 50, "eps_sweep": []},
    primary=taet_claims([10], "balanced"),
    health={"margin": 0.05},
))
register(Preset(
    name="fmnist_lt_cpu",
    description="Fuller CPU run: full Fashion-MNIST-LT training set (IR 10), 30 adversarial epochs, 10-step PGD",
    config={"dataset": "fashion_mnist", "model": "small_cnn", "eps": 0.1, "step_size": 0.025, "attack_steps": 10,
            "epochs": 30, "stabilization_epochs": taet_stage1(30), "budget_rule": "equal_adversarial", "eval_every": 5},
    sweep={"irs": [10], "seeds": [0, 1, 2], "arms": [*arms(["pgd_at", "at_bsl", "taet", "trades", "mart"]), TAET_UNIT]},
    sources={**DEMO_SOURCES, "robustlt_b": "0.8: the ramp reaches the full radius at epoch 25 of 30",
             "stabilization_epochs": "20 clean epochs before TAET's 30 adversarial ones: the paper's 40 : 60"},
    method_overrides={"taet": {"robustlt_b": 0.8}},
))

# The published CPU table (results/fmnist_lt/, `make results`): every landed method, with and without
# RobustLT where it composes (LAS-AT picks its own eps), and the taet_unit control, at IR 10 and 100, 3 seeds.
RESULTS_METHODS = ["pgd_at", "trades", "mart", "at_bsl", "reat", "robal", "he", "gairat", "awp", "adt", "taet"]
RESULTS_ARMS = [*arms(RESULTS_METHODS), Arm("las_at"), *FAIRNESS_ARMS, TAET_UNIT]
register(Preset(
    name="fmnist_lt_results",
    description="make results: every landed method (with and without RobustLT where it composes) and taet_unit on "
                "real Fashion-MNIST-LT IR 10 and 100, 3 seeds, equal adversarial budgets (CPU, ~85 min at --jobs 2)",
    config={**DEMO_CONFIG, "n_max": 500, "epochs": 6, "stabilization_epochs": 3, "test_per_class": 200,
            "robustlt_b": 0.5, "adt_steps": 3, "adt_samples": 1, "lasat_iter_choices": [1, 2, 3, 4, 5],
            "lasat_reward_steps": 3, "lasat_strategy_model": "small_cnn", "cfa_begin": 1},
    sweep={"irs": [10, 100], "seeds": [0, 1, 2], "arms": RESULTS_ARMS},
    ir_overrides={100: {"epochs": 12, "stabilization_epochs": 6}},
    sources={
        **DEMO_SOURCES,
        "n_max, epochs, stabilization_epochs, test_per_class": "sized so that 24 arms x 2 IRs x 3 seeds finish within "
        "90 minutes on 2 cores (--jobs 2): 500 head-class images, 6 adversarial epochs at IR 10 (TAET's 3 clean "
        "epochs before them), 200 test images per class",
        "stabilization_epochs": "3 : 6 at IR 10 and 6 : 12 at IR 100, half the adversarial epochs: shorter than the "
        "paper's 40 : 60 (4 : 6, 8 : 12), to fit the time",
        "ir_overrides": "IR 100: 12 adversarial epochs (TAET: 6 clean before): its 1,236 training images (IR 10: "
        "2,040) make an epoch shorter, and at 6 epochs (48 SGD steps) most arms stayed near chance; about the "
        "same SGD steps and time as IR 10. Every arm of an IR gets the same budget",
        "attack_steps": "3 attack passes per training step for every arm; ADT (adt_steps 3 x adt_samples 1) and "
        "LAS-AT (iterations chosen from 1..5, mean 3, as its 3..14 bracket the baselines' 10 on CIFAR) pay the same",
        "lasat_strategy_model": "small_cnn: the strategy network on the target's trunk, as LAS-AT's code does with "
        "ResNet-18 on CIFAR",
        "robustlt_b": "0.5 for every RobustLT arm: the AIW ramp reaches the full radius at adversarial epoch 4 of 6",
        "cfa_begin": "1: CFA calibrates from epoch 2 (its official 10 of 200 would never start within 6 epochs); "
        "DAFA's warm-up keeps its official share, 70/110 of the epochs (4 of 6, 8 of 12)",
        "select, fawa_decay, fawa_threshold (cfa)": "CFA keeps its fairness-aware weight average with the code's "
        "CIFAR-10 decay 0.88 and threshold 0.24, on 10 % of each class held out of its training set",
        "evaluation": "clean, FGSM and PGD-20 with the any-iterate reading (an image is broken once any iterate is "
        "misclassified; never weaker than last-iterate, about half its cost here: benchmarks/eval_cost.py)",
    },
    evaluation={"attacks": ["clean", "fgsm", "pgd20"], "protocols": ["balanced", "long_tailed"], "per_class": None,
                "curve_per_class": 30, "eps_sweep": [], "attack_params": {"pgd20": {"iterate": "any"}}},
    primary=taet_claims([10, 100], "balanced"),
    health={"margin": 0.05},
))

# --------------------------------------------------------------------------- CPU: the study (issue: a study
# that can settle TAET's claims). Every arm tunes its lr (TAET its loss scale: alpha, beta, gamma together)
# over 4 values on a validation split of one seed; TAET's stage 1 in the paper's 40 : 60.
STUDY_EPOCHS = 30   # adversarial epochs: 4,084 images at IR 10 in batches of 128 = 32 steps each, 960 in all
STUDY_CONFIG = {"dataset": "fashion_mnist", "model": "small_cnn", "eps": 0.1, "step_size": 0.04, "attack_steps": 5,
                "n_max": 1000, "test_per_class": 200, "epochs": STUDY_EPOCHS,
                "stabilization_epochs": taet_stage1(STUDY_EPOCHS), "budget_rule": "equal_adversarial",
                "batch_size": 128, "lr": 0.1, "eval_every": 3, "augment": "crop_flip", "robustlt_b": 0.8}
STUDY_TUNING = {"factors": {"lr": [0.25, 0.5, 1.0, 2.0], "loss_scale": [1.0, 2.5, 5.0, 10.0]},
                "params": {"taet": "loss_scale"}, "attack": "pgd20", "val_fraction": 0.2}
STUDY_EVALUATION = {"attacks": ["clean", "pgd20", "apgd_ce", "apgd_t"], "worst_case": ["pgd20", "apgd_ce", "apgd_t"],
                    "protocols": ["balanced", "long_tailed"], "per_class": None, "curve_per_class": 50,
                    "eps_sweep": [0.05, 0.1, 0.15, 0.2], "attack_params": {"pgd20": {"iterate": "any"}}}
STUDY_SOURCES = {
    "dataset, imbalance_ratio, n_max, class_order": "Fashion-MNIST-LT at IR 10, 1,000 head-class images, label "
    "order (the papers'); every seed draws its own subsample",
    "epochs": f"{STUDY_EPOCHS} adversarial epochs, about 960 SGD steps, for the validation curves to level off "
    "(eval_every 3 gives the health gate its curve)",
    "stabilization_epochs": f"{taet_stage1(STUDY_EPOCHS)} clean-CE epochs before TAET's {STUDY_EPOCHS} adversarial "
    "ones: the paper's 40 : 60",
    "attack_steps, step_size": "5-step PGD in training, step 0.04 at eps 0.1, for every arm",
    "tuning": "equal tuning budget: 4 lr values (x0.25, x0.5, x1, x2 of 0.1) per arm; TAET tunes its loss scale "
    "instead (alpha = beta = gamma in 0.1, 0.25, 0.5, 1: HARL's 0.1 weights scale its gradient about tenfold "
    "down), which keeps HARL's alpha / (2 beta); chosen once, on the first seed, by balanced PGD-20 robustness on "
    "20 % of each class held out of the training set; `python -m taetlib tune --preset NAME` before the sweep",
    "robustlt_b": "0.8: RobustLT's CIFAR-10 value; the AIW ramp reaches the full radius at epoch 24 of 30",
    "test_per_class": "2,000 balanced test images (200 per class); the long-tailed protocol is drawn inside them",
    "evaluation": "PGD-20 (any-iterate), APGD-CE and APGD-T (pyautoattack) on the same images; the claims read the "
    "worst case per image (robust only if robust to all three), as AutoAttack counts; PGD-20 radius sweep "
    "0.05-0.2 on 50 images per class",
}
STUDY_A_ARMS = [Arm("pgd_at"), Arm("at_bsl"), Arm("taet"), Arm("taet", True)]
# the primary endpoints, declared before any run: only these are read as claims, with Holm over them
STUDY_A_PRIMARY = taet_claims([10], "balanced")   # TAET - AT-BSL: balanced robustness, TAET's tail
register(Preset(
    name="fmnist_lt_study_a",
    description="Study A, TAET's two claims: PGD-AT, AT-BSL, TAET and TAET+RobustLT on Fashion-MNIST-LT IR 10, "
                "each tuned on a validation split with the same budget, 960 SGD steps, 8 seeds, read on the worst "
                "case of PGD-20, APGD-CE and APGD-T (CPU, hours)",
    config=STUDY_CONFIG,
    sweep={"irs": [10], "seeds": list(range(8)), "arms": STUDY_A_ARMS},
    sources={**STUDY_SOURCES, "seeds": "8 seeds. Smallest effect detectable with 80 % power (paired t, Holm's "
             "first level 0.025, with the seed spread of the paired differences seen in results/fmnist_lt at "
             "about 100 steps: 3.9 points for claim 1, 5.5-7.4 for claim 2): about 5.2 points for claim 1 "
             "(the paper: +8.6, within reach) and 7.4-9.9 for claim 2 (the paper: +8.4, at the edge); 6 seeds "
             "would give 6.7 and 9.4-12.6"},
    evaluation=STUDY_EVALUATION, tuning=STUDY_TUNING, robust_attack="worst_case", primary=STUDY_A_PRIMARY,
))
HARD_RAREST = {"class_order": "hard_rarest"}
STUDY_B_ARMS = [Arm("at_bsl"), Arm("taet"), Arm("taet", overrides={"harl_beta": 0.01}, label="taet_beta0.01"),
                Arm("at_bsl", overrides=HARD_RAREST, label="at_bsl-hard_rarest"),
                Arm("taet", overrides=HARD_RAREST, label="taet-hard_rarest"),
                Arm("taet", overrides={**HARD_RAREST, "harl_beta": 0.01}, label="taet_beta0.01-hard_rarest")]
STUDY_B_PRIMARY = (
    # hard classes rarest: TAET - AT-BSL on the rarest third; HARL's negative class weights: TAET (beta 0.01) - TAET
    {"a": "taet-hard_rarest", "b": "at_bsl-hard_rarest", "metric": "tail_robustness", "imbalance_ratio": 10.0,
     "protocol": "balanced", "claimed": None},
    {"a": "taet_beta0.01", "b": "taet", "metric": "balanced_robustness", "imbalance_ratio": 10.0,
     "protocol": "balanced", "claimed": None},
)
register(Preset(
    name="fmnist_lt_study_b",
    description="Study B, rarity or difficulty: AT-BSL, TAET and TAET with beta 0.01 under label order and with "
                "Shirt, Pullover, Coat and T-shirt the rarest classes, Fashion-MNIST-LT IR 10, tuned, 4 seeds (CPU)",
    config=STUDY_CONFIG,
    sweep={"irs": [10], "seeds": list(range(4)), "arms": STUDY_B_ARMS},
    sources={**STUDY_SOURCES,
             "class_order": "label order against hard_rarest (Shirt rarest, then Pullover, Coat, T-shirt; the other "
             "classes keep label order at the head), the same profile and images otherwise",
             "harl_beta (taet_beta0.01)": "beta 0.01 keeps HARL's scale and moves the loss at which a class weight "
             "turns negative, alpha / (2 beta), from 0.5 to 5 nats; the loss-scale tuning multiplies alpha, beta "
             "and gamma together, so that threshold stays",
             "seeds": "4 seeds; the analysis fits per-class robust recall against log training count with class as "
             "a fixed effect, and reads the share of class-epochs with a negative HARL weight from class_weight"},
    evaluation=STUDY_EVALUATION, tuning=STUDY_TUNING, robust_attack="worst_case", primary=STUDY_B_PRIMARY,
))
# Study C: the whole zoo on the study's budget, descriptive (no primary endpoint: nothing is claimed, arms that
# did not train are named and not ranked). About 170 runs with the tuning: CPU-days on 2 cores; run it if the
# budget allows, after A and B.
STUDY_C_ARMS = RESULTS_ARMS
STUDY_C_ZOO = {"adt_steps": 5, "adt_samples": 1, "lasat_iter_choices": [3, 4, 5, 6, 7], "lasat_reward_steps": 5,
               "lasat_strategy_model": "small_cnn", "cfa_begin": 2}
register(Preset(
    name="fmnist_lt_study_c",
    description="Study C, the whole zoo (descriptive): every registered method with and without RobustLT where it "
                "composes, LAS-AT, CFA, DAFA and taet_unit on Fashion-MNIST-LT IR 10, each tuned, the study's "
                "budget, 3 seeds (CPU-days)",
    config={**STUDY_CONFIG, **STUDY_C_ZOO},
    sweep={"irs": [10], "seeds": [0, 1, 2], "arms": STUDY_C_ARMS},
    sources={**STUDY_SOURCES, **FAIRNESS_SOURCES,
             "adt_steps, adt_samples, lasat_iter_choices, lasat_reward_steps": "5 attack passes per training step "
             "for every arm: ADT 5 steps x 1 sample; LAS-AT picks 3..7 iterations (mean 5), as its 3..14 bracket "
             "the baselines' 10 on CIFAR; its reward PGD takes 5 steps",
             "lasat_strategy_model": "small_cnn: the strategy network on the target's trunk, as LAS-AT's code does "
             "with ResNet-18 on CIFAR",
             "cfa_begin": "2: CFA calibrates from epoch 3 of 30, its official 10 of 200 in proportion",
             "seeds": "3 seeds; descriptive: no primary endpoint, so no verdict; rankings are Holm-adjusted paired "
             "differences against the best arm"},
    evaluation=STUDY_EVALUATION, tuning=STUDY_TUNING, robust_attack="worst_case", primary=(),
))

# --------------------------------------------------------------------------- GPU: the papers
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


def describe() -> str:
    lines = []
    for p in PRESETS.values():
        s = p.sweep
        names = ", ".join(a.name for a in s["arms"])
        lines.append(f"{p.name:18s} {p.description}\n{'':18s} irs={s['irs']} seeds={s['seeds']} runs: {names}")
    return "\n".join(lines)
