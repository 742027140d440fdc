"""TAET (CVPR 2025): a clean stabilisation stage, then HARL on adversarial examples,

    alpha * BCL + beta * HDL + gamma * RCEL  on the per-class mean adversarial CE L_c of the batch,

BCL their balanced mean, HDL their variance around it, RCEL the sum of squared shares L_c / sum_j L_j
. Stage 1 is `stabilization_epochs` of clean CE; budget_rule decides whether it counts
inside `epochs` (released) or comes before them (equal_adversarial).

Training attack start, as the released loop has it (the default): x + 0.001 N(0,1), fed to the first
forward unclamped, projected only after each step (TAET code/HARL.py L37-45).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import check_choice
from ..method_spec import MethodArgs, arg_error, register
from .base import Objective, StepOut, class_means, start_logits_if_clean

__all__ = ["ABSENT", "TAET", "TAETArgs", "harl", "harl_class_weights", "harl_terms"]

ABSENT = ("zero", "exclude")


def harl(per_sample: Tensor, y: Tensor, num_classes: int, absent: str = "zero") -> dict[str, Tensor]:
    """TAET's BCL, HDL and RCEL from per-sample adversarial CE.
    absent='zero' (released code): S_C = C, an absent class has L_c = 0 and enters mean and variance;
    absent='exclude': S_C = classes present, mean and variance over them only."""
    return harl_terms(*class_means(per_sample, y, num_classes), absent)


def _bcl(L: Tensor, present: Tensor, absent: str) -> tuple[Tensor, Tensor, Tensor]:
    """(m, S_C, BCL): m_c = 1 for the classes the means run over (all under 'zero', present ones under
    'exclude'), their number S_C, and BCL = sum_c m_c L_c / S_C."""
    m = torch.ones_like(L) if absent == "zero" else present.to(L.dtype)
    s_c = m.sum()
    return m, s_c, (m * L).sum() / s_c


def harl_terms(L: Tensor, present: Tensor, absent: str = "zero") -> dict[str, Tensor]:
    """BCL, HDL and RCEL from the class means L_c (0 where absent) and the presence mask."""
    w, s_c, bcl = _bcl(L, present, absent)
    hdl = (w * (L - bcl) ** 2).sum() / s_c
    rcel = ((L / L.sum().clamp(min=torch.finfo(L.dtype).tiny)) ** 2).sum()  # absent L_c = 0 adds 0
    return {"bcl": bcl, "hdl": hdl, "rcel": rcel}


def harl_class_weights(L: Tensor, present: Tensor, alpha: float, beta: float, gamma: float,
                       absent: str = "zero") -> Tensor:
    """w_c = d(alpha BCL + beta HDL + gamma RCEL) / dL_c, in closed form (no autograd call in the step):
    alpha m_c/S + 2 beta m_c (L_c - BCL)/S + gamma (2 L_c/T^2 - 2 sum_j L_j^2/T^3), with m the classes
    counted (all under 'zero', present ones under 'exclude'), S = sum m and T = sum_j L_j. A class's
    samples are pushed down (descent) when w_c > 0 and up (ascent) when w_c < 0, which happens once
    BCL - L_c > alpha / (2 beta). NaN for a class absent from the batch: its weight multiplies nothing."""
    m, s_c, bcl = _bcl(L, present, absent)
    t = L.sum().clamp(min=torch.finfo(L.dtype).tiny)
    w = alpha * m / s_c + 2 * beta * m * (L - bcl) / s_c + gamma * (2 * L / t**2 - 2 * (L**2).sum() / t**3)
    return torch.where(present, w, torch.full_like(w, float("nan")))


class TAET(Objective):
    """Stage 1 (epochs <= clean_epochs): clean CE. Stage 2: HARL on x_adv,
    alpha * BCL + beta * HDL + gamma * RCEL."""
    name = "taet"

    def __init__(self, attack, num_classes, clean_epochs, alpha, beta, gamma, absent):
        super().__init__(attack, num_classes, clean_epochs)
        self.weights, self.absent = (alpha, beta, gamma), absent

    def loss(self, model, x, y, epoch):
        x_adv, start_logits, _ = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        # HARL's class means over the global batch under DDP (per rank they would not be 1-GPU TAET)
        L, present = class_means(F.cross_entropy(logits, y, reduction="none"), y, self.num_classes, global_batch=True)
        parts = harl_terms(L, present, self.absent)
        loss = sum(w * parts[k] for w, k in zip(self.weights, ("bcl", "hdl", "rcel")))
        w_c = harl_class_weights(L.detach(), present, *self.weights, self.absent)
        return StepOut(loss, start_logits_if_clean(self.attack, start_logits), logits,
                       {k: v.detach() for k, v in parts.items()}, class_weights=w_c)


@dataclass(frozen=True)
class TAETArgs(MethodArgs):
    stabilization_epochs: int = 40   # stage 1, clean CE (released code: 40 of 100)
    alpha: float = 0.1               # BCL weight (paper: alpha = beta = gamma = 0.1)
    beta: float = 0.1                # HDL weight
    gamma: float = 0.1               # RCEL weight
    absent_classes: str = "zero"     # zero (released code: S_C = C) | exclude (S_C = classes present)

    def __post_init__(self):
        check_choice("method_args.absent_classes", self.absent_classes, ABSENT)
        if self.stabilization_epochs < 0:
            raise arg_error("stabilization_epochs", self.stabilization_epochs, "must be >= 0 (0: no clean stage).")
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) < 0:
                raise arg_error(name, getattr(self, name), "must be >= 0 (a weight of HARL's terms; paper 0.1).")

    def check(self, cfg) -> None:
        if cfg.budget_rule == "released" and self.stabilization_epochs > cfg.epochs:
            raise arg_error("stabilization_epochs", self.stabilization_epochs,
                            f"must lie in [0, epochs={cfg.epochs}] (budget_rule='released' counts stage 1 inside "
                            "epochs).")


@register("taet", args=TAETArgs, clean_stage="stabilization_epochs",
          aliases={"stabilization_epochs": "stabilization_epochs", "harl_alpha": "alpha", "harl_beta": "beta",
                   "harl_gamma": "gamma", "harl_absent_classes": "absent_classes"})
def _taet(args, cfg, counts, attack):
    """TAET: clean stabilisation, then HARL (alpha BCL + beta HDL + gamma RCEL) on PGD examples."""
    return TAET(attack, len(counts), cfg.clean_stage_epochs(), args.alpha, args.beta, args.gamma,
                args.absent_classes)
