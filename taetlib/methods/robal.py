"""RoBal (Wu et al., CVPR 2021), as its official code and RobustLT compute it (docs/methods.md §1):
a CosPlus cosine head (scale 1), and on its logits z

    u_j = s (z_j(x') - m_y [j = y]) + b_j,  m_c = m + tau_m ln(n_c / n_min) / s,  b_c = tau_b ln(n_c / N)
    L = CE(u, y) + beta * mean_i KL(softmax z(x_i) || softmax z(x'_i))       (beta_adv = 1, beta_nat = 0)

The attack maximises plain CE on the raw scale-1 logits: no s, margin or prior. RoBal-R (default,
RobustLT's) evaluates the trained model as it is. RoBal-N trains with tau_m = 0, tau_b = 1.2 and is
evaluated through post-hoc logits z = s cos - tau_p ln pi (load_model, so evaluate_run and notebook 04,
applies them; fit's in-training test accuracy is of the training head).
The official training attack starts one-sided, x + eps U[0,1), and feeds that start to the first forward
unclamped (methods/train_modes.py add_reg_train, L204-214: projected only after each step): the default.
RobustLT's starts from U(-eps, eps) clamped to [0,1] (random_start='uniform', clamp_start=True).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import check_choice
from ..method_spec import MethodArgs, arg_error, register
from ..models import CosPlus
from .base import Objective, StepOut, kl

__all__ = ["RoBal", "RoBalArgs", "VARIANTS", "eval_setup", "margins_and_bias"]

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
        x_adv, _, _ = self.attack(model, x, y, epoch)      # plain CE on the raw logits
        logits, logits_adv = model(x), model(x_adv)
        if self.margins.device != logits.device:       # moved once, then cached
            self.margins, self.bias = self.margins.to(logits.device), self.bias.to(logits.device)
        margin = self.margin_ce(logits_adv, y)
        robust = kl(logits, logits_adv).mean()
        return StepOut(self.beta_adv * margin + self.beta * robust, logits, logits_adv,
                       {"margin": margin.detach(), "kl": robust.detach()})


@dataclass(frozen=True)
class RoBalArgs(MethodArgs):
    variant: str = "R"            # R (RoBal-R, RobustLT's) | N (RoBal-N: post-hoc logits at evaluation)
    s: float = 10.0               # margin-CE scale s (also RoBal-N's evaluation scale)
    m: float = 0.1                # base margin m
    tau_m: float | None = None    # class-aware margin; None = the variant's (R 0.3, N 0)
    tau_b: float | None = None    # prior bias; None = the variant's (R 1.5, N 1.2)
    beta: float = 6.0             # TRADES-KL weight
    tau_p: float = 0.1            # RoBal-N evaluation: z = s * cos - tau_p * ln pi

    def __post_init__(self):
        check_choice("method_args.variant", self.variant, VARIANTS)
        if self.s <= 0:
            raise arg_error("s", self.s, "must be > 0 (the margin CE's logit scale; official 10).")
        for name, official in (("m", 0.1), ("tau_m", "0.3 (R) / 0 (N)"), ("tau_b", "1.5 (R) / 1.2 (N)"),
                               ("beta", 6.0), ("tau_p", 0.1)):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise arg_error(name, v, f"must be >= 0 (official {official}).")

    def taus(self) -> tuple[float, float]:
        """(tau_m, tau_b): the given ones, or where None the variant's official value."""
        v = VARIANTS[self.variant]
        return (v["tau_m"] if self.tau_m is None else self.tau_m, v["tau_b"] if self.tau_b is None else self.tau_b)


def eval_setup(model, args: RoBalArgs) -> None:
    """RoBal-N is evaluated through the official PostProc classifier: s * cos - tau_p * ln pi."""
    if args.variant == "N":
        for head in model.modules():
            if isinstance(head, CosPlus):
                head.posthoc(args.s, args.tau_p)


@register("robal", args=RoBalArgs, head="cosplus", eval_setup=eval_setup, start=("uniform_pos", False),
          aliases={f"robal_{n}": n for n in ("variant", "s", "m", "tau_m", "tau_b", "beta", "tau_p")})
def _robal(args, cfg, counts, attack):
    """RoBal (Wu et al.): margin CE with a prior bias on a cosine head + TRADES-KL, on PGD examples."""
    tau_m, tau_b = args.taus()
    return RoBal(attack, len(counts), counts, args.s, args.m, tau_m, tau_b, args.beta)
