"""Long-tail objectives: AT-BSL (balanced softmax) and TAET (clean stabilisation, then HARL)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Objective, StepOut, _clean_logits, class_means, register


def harl(per_sample: Tensor, y: Tensor, num_classes: int, absent: str = "zero") -> dict[str, Tensor]:
    """TAET's BCL, HDL and RCEL from per-sample adversarial CE.
    absent='zero' (released code): S_C = C, an absent class has L_c = 0 and enters mean and variance;
    absent='exclude': S_C = classes present, mean and variance over them only."""
    L, present = class_means(per_sample, y, num_classes)
    w = torch.ones_like(L) if absent == "zero" else present.to(L.dtype)
    s_c = w.sum()
    bcl = (w * L).sum() / s_c
    hdl = (w * (L - bcl) ** 2).sum() / s_c
    rcel = ((L / L.sum().clamp(min=torch.finfo(L.dtype).tiny)) ** 2).sum()  # absent L_c = 0 adds 0
    return {"bcl": bcl, "hdl": hdl, "rcel": rcel}



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
        return StepOut(F.cross_entropy(logits + self.shift, y), _clean_logits(self.attack, start_logits), logits)


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
        parts = harl(F.cross_entropy(logits, y, reduction="none"), y, self.num_classes, self.absent)
        loss = sum(w * parts[k] for w, k in zip(self.weights, ("bcl", "hdl", "rcel")))
        return StepOut(loss, _clean_logits(self.attack, start_logits), logits,
                       {k: v.detach() for k, v in parts.items()})


@register("at_bsl")
def _at_bsl(cfg, counts, attack):
    return ATBSL(attack, len(counts), counts, cfg.bsl_tau)


@register("taet")
def _taet(cfg, counts, attack):
    return TAET(attack, len(counts), cfg.stabilization_epochs, cfg.harl_alpha, cfg.harl_beta, cfg.harl_gamma,
                cfg.harl_absent_classes)
