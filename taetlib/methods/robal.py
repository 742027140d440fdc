"""RoBal (Wu et al., CVPR 2021), as its official code and RobustLT compute it (docs/methods.md §1):
a CosPlus cosine head (scale 1), and on its logits z

    u_j = s (z_j(x') - m_y [j = y]) + b_j,  m_c = m + tau_m ln(n_c / n_min) / s,  b_c = tau_b ln(n_c / N)
    L = CE(u, y) + beta * mean_i KL(softmax z(x_i) || softmax z(x'_i))       (beta_adv = 1, beta_nat = 0)

The attack maximises plain CE on the raw scale-1 logits: no s, margin or prior. RoBal-R (default,
RobustLT's) evaluates the trained model as it is. RoBal-N trains with tau_m = 0, tau_b = 1.2 and is
evaluated through post-hoc logits z = s cos - tau_p ln pi (load_model, so evaluate_run and notebook 04,
applies them; fit's in-training test accuracy is of the training head).
The official training attack starts one-sided, x + eps U[0,1) (random_start='uniform_pos', the
presets' choice); RobustLT's starts from U(-eps, eps) (random_start='uniform').
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import bad, check_choice
from ..models import CosPlus
from .base import Objective, StepOut, field_check, kl, register

__all__ = ["RoBal", "VARIANTS", "eval_setup", "margins_and_bias", "taus"]

VARIANTS = {"R": {"tau_m": 0.3, "tau_b": 1.5}, "N": {"tau_m": 0.0, "tau_b": 1.2}}   # the official configs


def margins_and_bias(counts: list[int], s: float, m: float, tau_m: float, tau_b: float):
    """(m_c, b_c) per class: the class-aware margin (largest for the head class) and the prior bias."""
    n = torch.tensor(counts, dtype=torch.float64).clamp(min=1)   # an empty class: no -inf (fit refuses them)
    return (m + tau_m * torch.log(n / n.min()) / s).float(), (tau_b * torch.log(n / n.sum())).float()


class RoBal(Objective):
    """Margin CE with prior bias on x_adv + beta * TRADES-KL(clean || adv), both on the cosine logits."""
    name = "robal"

    def __init__(self, attack, num_classes, counts: list[int], s: float, m: float, tau_m: float, tau_b: float,
                 beta: float, beta_adv: float = 1.0):
        super().__init__(attack, num_classes)
        self.s, self.beta, self.beta_adv = s, beta, beta_adv
        self.margins, self.bias = margins_and_bias(counts, s, m, tau_m, tau_b)

    def margin_ce(self, logits_adv, y):
        u = self.s * (logits_adv - self.margins[y][:, None] * F.one_hot(y, self.num_classes)) + self.bias
        return F.cross_entropy(u, y)

    def loss(self, model, x, y, epoch):
        x_adv, _ = self.attack(model, x, y, epoch)      # plain CE on the raw logits
        logits, logits_adv = model(x), model(x_adv)
        if self.margins.device != logits.device:       # moved once, then cached
            self.margins, self.bias = self.margins.to(logits.device), self.bias.to(logits.device)
        margin = self.margin_ce(logits_adv, y)
        robust = kl(logits, logits_adv).mean()
        return StepOut(self.beta_adv * margin + self.beta * robust, logits, logits_adv,
                       {"margin": margin.detach(), "kl": robust.detach()})


def taus(cfg) -> tuple[float, float]:
    """(tau_m, tau_b): the config's, or where None the variant's official value."""
    v = VARIANTS[cfg.robal_variant]
    return (v["tau_m"] if cfg.robal_tau_m is None else cfg.robal_tau_m,
            v["tau_b"] if cfg.robal_tau_b is None else cfg.robal_tau_b)


def eval_setup(model, cfg) -> None:
    """RoBal-N is evaluated through the official PostProc classifier: s * cos - tau_p * ln pi."""
    if cfg.robal_variant == "N":
        for head in model.modules():
            if isinstance(head, CosPlus):
                head.posthoc(cfg.robal_s, cfg.robal_tau_p)


@field_check
def _check(cfg) -> None:
    check_choice("robal_variant", cfg.robal_variant, VARIANTS)
    if cfg.robal_s <= 0:
        raise bad("robal_s", cfg.robal_s, "must be > 0 (the margin CE's logit scale; official 10).")
    for name, official in (("robal_m", 0.1), ("robal_tau_m", "0.3 (R) / 0 (N)"), ("robal_tau_b", "1.5 (R) / 1.2 (N)"),
                           ("robal_beta", 6.0), ("robal_tau_p", 0.1)):
        v = getattr(cfg, name)
        if v is not None and v < 0:
            raise bad(name, v, f"must be >= 0 (official {official}).")


@register("robal", head="cosplus", eval_setup=eval_setup)
def _robal(cfg, counts, attack):
    tau_m, tau_b = taus(cfg)
    return RoBal(attack, len(counts), counts, cfg.robal_s, cfg.robal_m, tau_m, tau_b, cfg.robal_beta)
