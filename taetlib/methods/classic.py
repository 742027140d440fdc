"""The balanced-data baselines: PGD-AT (Madry), TRADES and MART.

Training attack start, as the released loops have it (the default, random_start='auto'): x + 0.001 N(0,1),
fed to the first forward unclamped and projected only after each step: TRADES trades.py L31-41, MART
mart.py L20-30, and the common protocol PGD-AT trains under here (TAET code/HARL.py L37-45, AT-BSL
at_bsl_loss.py L23-31). Madry's own uniform start is random_start='uniform', clamp_start=True.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attacks import bn_eval
from ..method_spec import MethodArgs, arg_error, register
from .base import Objective, StepOut, kl, start_logits_if_clean

__all__ = ["BetaArgs", "MART", "PGDAT", "TRADES"]


class PGDAT(Objective):
    """Madry: CE on x_adv."""
    name = "pgd_at"

    def loss(self, model, x, y, epoch):
        x_adv, start_logits, _ = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        return StepOut(F.cross_entropy(logits, y), start_logits_if_clean(self.attack, start_logits), logits)


class TRADES(Objective):
    """CE(f(x), y) + beta * KL(f(x) || f(x_adv)); x_adv maximises the KL to the eval-mode f(x)."""
    name = "trades"
    attack_loss_name = "kl"

    def __init__(self, attack, num_classes, beta: float):
        super().__init__(attack, num_classes)
        self.beta = beta

    def loss(self, model, x, y, epoch):
        with bn_eval(model), torch.no_grad():
            target = model(x)   # the attack's fixed reference distribution
        x_adv, _, _ = self.attack(model, x, y, epoch, loss=lambda z, _y: kl(target, z))
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
        x_adv, _, _ = self.attack(model, x, y, epoch)
        logits, logits_adv = model(x), model(x_adv)
        p_adv = F.softmax(logits_adv, 1)
        top_wrong = p_adv.scatter(1, y[:, None], 0.0).amax(1)
        bce = F.cross_entropy(logits_adv, y) - torch.log1p(-top_wrong.clamp(max=1 - 1e-6)).mean()
        p_true = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        weighted_kl = (kl(logits, logits_adv) * (1 - p_true)).mean()
        return StepOut(bce + self.beta * weighted_kl, logits, logits_adv,
                       {"bce": bce.detach(), "kl": weighted_kl.detach()})


@dataclass(frozen=True)
class BetaArgs(MethodArgs):
    beta: float = 6.0   # weight of the KL term (TRADES paper; MART's WRN setting)

    def __post_init__(self):
        if self.beta < 0:
            raise arg_error("beta", self.beta, "must be >= 0 (the KL term's weight; the papers use 6).")


@register("pgd_at")
def _pgd_at(args, cfg, counts, attack):
    """PGD-AT (Madry et al.): cross-entropy on PGD examples."""
    return PGDAT(attack, len(counts))


# the attack maximises KL to the batch's clean prediction, a loss TRADES builds per batch: attack_loss=None
@register("trades", args=BetaArgs, attack_loss=None, aliases={"trades_beta": "beta"})
def _trades(args, cfg, counts, attack):
    """TRADES (Zhang et al.): clean CE + beta KL(clean || adversarial)."""
    return TRADES(attack, len(counts), args.beta)


@register("mart", args=BetaArgs, aliases={"mart_beta": "beta"})
def _mart(args, cfg, counts, attack):
    """MART (Wang et al.): boosted CE on PGD examples + beta KL weighted by misclassification."""
    return MART(attack, len(counts), args.beta)
