"""Arms and sources that presets of more than one file use: the taet_unit control (HARL at CE's gradient
scale) and the class-wise robust-fairness baselines (CFA with its weight average, DAFA)."""
from __future__ import annotations

from ..arms import Arm

__all__ = ["CFA_FAWA", "FAIRNESS_ARMS", "FAIRNESS_METHODS", "FAIRNESS_SOURCES", "TAET_UNIT"]

TAET_UNIT = Arm("taet", overrides={"harl_alpha": 1.0, "harl_beta": 1.0, "harl_gamma": 1.0}, label="taet_unit")
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
