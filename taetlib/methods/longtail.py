"""Long-tail objectives: AT-BSL (balanced softmax) and TAET (clean stabilisation, then HARL)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Objective, StepOut, class_means, register, start_logits_if_clean

__all__ = ["ATBSL", "TAET", "harl", "harl_class_weights", "harl_terms"]


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


class ATBSL(Objective):
    """Balanced softmax on x_adv: CE(z(x_adv) + tau * log n_c, y); attack with plain CE;
    predictions (and so train accuracy) use the raw logits."""
    name = "at_bsl"

    def __init__(self, attack, num_classes, counts: list[int], tau: float):
        super().__init__(attack, num_classes)
        self.shift = tau * torch.log(torch.tensor(counts, dtype=torch.float32))

    def loss(self, model, x, y, epoch):
        x_adv, start_logits = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        if self.shift.device != logits.device:
            self.shift = self.shift.to(logits.device)
        loss = F.cross_entropy(logits + self.shift, y)
        return StepOut(loss, start_logits_if_clean(self.attack, start_logits), logits)


class TAET(Objective):
    """Stage 1 (epochs <= clean_epochs): clean CE. Stage 2: HARL on x_adv,
    alpha * BCL + beta * HDL + gamma * RCEL."""
    name = "taet"

    def __init__(self, attack, num_classes, clean_epochs, alpha, beta, gamma, absent):
        super().__init__(attack, num_classes, clean_epochs)
        self.weights, self.absent = (alpha, beta, gamma), absent

    def loss(self, model, x, y, epoch):
        x_adv, start_logits = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        # HARL's class means over the global batch under DDP (per rank they would not be 1-GPU TAET)
        L, present = class_means(F.cross_entropy(logits, y, reduction="none"), y, self.num_classes, global_batch=True)
        parts = harl_terms(L, present, self.absent)
        loss = sum(w * parts[k] for w, k in zip(self.weights, ("bcl", "hdl", "rcel")))
        w_c = harl_class_weights(L.detach(), present, *self.weights, self.absent)
        return StepOut(loss, start_logits_if_clean(self.attack, start_logits), logits,
                       {k: v.detach() for k, v in parts.items()}, class_weights=w_c)


@register("at_bsl")
def _at_bsl(cfg, counts, attack):
    return ATBSL(attack, len(counts), counts, cfg.bsl_tau)


@register("taet")
def _taet(cfg, counts, attack):
    return TAET(attack, len(counts), cfg.stabilization_epochs, cfg.harl_alpha, cfg.harl_beta, cfg.harl_gamma,
                cfg.harl_absent_classes)
