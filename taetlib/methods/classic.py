"""The balanced-data baselines: PGD-AT (Madry), TRADES and MART."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks import bn_eval
from .base import Objective, StepOut, kl, register, start_logits_if_clean

__all__ = ["MART", "PGDAT", "TRADES"]


class PGDAT(Objective):
    """Madry: CE on x_adv."""
    name = "pgd_at"

    def loss(self, model, x, y, epoch):
        x_adv, start_logits = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        return StepOut(F.cross_entropy(logits, y), start_logits_if_clean(self.attack, start_logits), logits)


class TRADES(Objective):
    """CE(f(x), y) + beta * KL(f(x) || f(x_adv)); x_adv maximises the KL to the eval-mode f(x)."""
    name = "trades"

    def __init__(self, attack, num_classes, beta: float):
        super().__init__(attack, num_classes)
        self.beta = beta

    def loss(self, model, x, y, epoch):
        with bn_eval(model), torch.no_grad():
            target = model(x)   # the attack's fixed reference distribution
        x_adv, _ = self.attack(model, x, y, epoch, loss=lambda z, _y: kl(target, z))
        logits, logits_adv = model(x), model(x_adv)
        natural, robust = F.cross_entropy(logits, y), kl(logits, logits_adv).mean()
        return StepOut(natural + self.beta * robust, logits, logits_adv,
                       {"natural": natural.detach(), "robust": robust.detach()})


class MART(Objective):
    """BCE(p(x_adv), y) + beta * KL(p(x) || p(x_adv)) * (1 - p_y(x)), where
    BCE(p, y) = -log p_y - log(1 - max_{k != y} p_k)."""
    name = "mart"

    def __init__(self, attack, num_classes, beta: float):
        super().__init__(attack, num_classes)
        self.beta = beta

    def loss(self, model, x, y, epoch):
        x_adv, _ = self.attack(model, x, y, epoch)
        logits, logits_adv = model(x), model(x_adv)
        p_adv = F.softmax(logits_adv, 1)
        top_wrong = p_adv.scatter(1, y[:, None], 0.0).amax(1)
        bce = F.cross_entropy(logits_adv, y) - torch.log1p(-top_wrong.clamp(max=1 - 1e-6)).mean()
        p_true = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        weighted_kl = (kl(logits, logits_adv) * (1 - p_true)).mean()
        return StepOut(bce + self.beta * weighted_kl, logits, logits_adv,
                       {"bce": bce.detach(), "kl": weighted_kl.detach()})


@register("pgd_at")
def _pgd_at(cfg, counts, attack):
    return PGDAT(attack, len(counts))


@register("trades", attack_loss="kl")
def _trades(cfg, counts, attack):
    return TRADES(attack, len(counts), cfg.trades_beta)


@register("mart")
def _mart(cfg, counts, attack):
    return MART(attack, len(counts), cfg.mart_beta)
