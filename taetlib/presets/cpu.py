"""The CPU set-ups on real Fashion-MNIST-LT: `make demo`, a fuller CPU run, and every method at a short
budget (the arms of Study C)."""
from __future__ import annotations

from ..arms import Arm
from .base import Preset, arms, register, taet_claims, taet_stage1
from .shared import FAIRNESS_ARMS, TAET_UNIT

__all__ = ["DEMO_ARMS", "DEMO_CONFIG", "DEMO_SOURCES", "ZOO_ARMS", "ZOO_METHODS"]

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

# Every landed method, with and without RobustLT where it composes (LAS-AT picks its own eps), and the taet_unit
# control, at IR 10 and 100, 3 seeds, about 100 SGD steps each: a quick look across the zoo, untuned and not
# converged, so it settles nothing. It was the first published table; Study C runs these arms on the studies' rules.
ZOO_METHODS = ["pgd_at", "trades", "mart", "at_bsl", "reat", "robal", "he", "gairat", "awp", "adt", "taet"]
ZOO_ARMS = [*arms(ZOO_METHODS), Arm("las_at"), *FAIRNESS_ARMS, TAET_UNIT]
register(Preset(
    name="fmnist_lt_zoo_short",
    description="every landed method (with and without RobustLT where it composes) and taet_unit on real "
                "Fashion-MNIST-LT IR 10 and 100, 3 seeds, equal adversarial budgets of about 100 SGD steps, untuned: "
                "a quick look that settles no claim (CPU, ~85 min at --jobs 2)",
    config={**DEMO_CONFIG, "n_max": 500, "epochs": 6, "stabilization_epochs": 3, "test_per_class": 200,
            "robustlt_b": 0.5, "adt_steps": 3, "adt_samples": 1, "lasat_iter_choices": [1, 2, 3, 4, 5],
            "lasat_reward_steps": 3, "lasat_strategy_model": "small_cnn", "cfa_begin": 1},
    sweep={"irs": [10, 100], "seeds": [0, 1, 2], "arms": ZOO_ARMS},
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
