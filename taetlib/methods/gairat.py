"""GAIRAT (Zhang et al., ICLR 2021), as its official code computes it (docs/methods.md §4):
PGD-AT whose per-sample CE is reweighted by the geometry value kappa_i, the number of PGD iterates
x'_0..x'_{K-1} the model classified correctly (counted during the attack, before each update):

    w~_i = B w_i / sum_j w_j,   L = mean_i w~_i CE(z(x'_i), y_i)
from the 1-based epoch begin_epoch on; plain PGD-AT CE before. The official weight functions (GAIR.py L5-17),
with a_i = lambda + 5 (floor(K/2) - kappa_i) / floor(K/2):
    tanh (default): w_i = (tanh(a_i) + 1) / 2,   sigmoid: w_i = sigmoid(a_i),
    discrete: w_i = (K + 1 - kappa_i) / (K + 1)   (lambda plays no part)

Training attack start (attack_generator.py GA_PGD, category 'Madry', L27-28): x + U(-eps, eps) clamped to
[0,1] before the first forward (random_start='uniform', clamp_start=True: the default).
Defaults: lambda = -1, the tanh weight, a fixed lambda. The official begin_epoch is 60 of 120 epochs;
begin_epoch=None keeps that ratio (round(epochs / 2), 50 of 100), an int sets the epoch.

The lambda schedules (GAIRAT.py @ 16813b5 L32-34 --Lambda, --Lambda_max, --Lambda_schedule; adjust_Lambda
L161-194, called with the 1-based epoch t at L250), lambda_t in epoch t of T from the schedule's start on:
    fixed (default):     lambda_t = lambda
    linear:              lambda_t = lambda_max - (t / T) (lambda_max - lambda)   (reaches lambda at t = T)
    piecewise:           as the code runs it: its later drops sit behind an `elif` the first test already
                         takes, so it never leaves lambda and equals fixed
    piecewise_stepped:   the drops as written for its WRN run (120 epochs): lambda, lambda - 1 from 3/4 of the
                         epochs (90 of 120), lambda - 1.5 from 11/12 (110 of 120)
Before the start the code uses lambda_max (default +inf: every weight 1, plain PGD-AT) and the GAIR weights only
act from begin_epoch. The code's start is a fixed epoch, 60 when T >= 110 (its WRN branch) or 30 otherwise
(its ResNet branch, whose piecewise drop would be lambda - 2 from epoch 60); here it is begin_epoch, which is
60 in the code's default WRN run and keeps that ratio. linear needs a finite lambda_max (with the default +inf
the code's formula gives NaN); the others never read it. The lambda of each epoch is in the history
(loss_lambda) and in resume's plan, so an extension that would move it needs new_plan=True.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import bad, check_choice
from ..method_spec import MethodArgs, arg_error, register
from .base import Objective, StepOut, start_logits_if_clean

__all__ = ["GAIRAT", "GAIRATArgs", "LAMBDA_SCHEDULES", "WEIGHTS", "begin_epoch", "gair_weights", "lambda_at"]

WEIGHTS = ("tanh", "sigmoid", "discrete")   # the official weight_assignment_function choices
LAMBDA_SCHEDULES = ("fixed", "linear", "piecewise", "piecewise_stepped")   # the official three, and the drops


def lambda_at(schedule: str, epoch: int, epochs: int, lam: float, lam_max: float | None = None) -> float:
    """lambda in (1-based) epoch `epoch` of `epochs`, from the schedule's start on (adjust_Lambda)."""
    if schedule == "linear" and lam_max is not None:   # GAIRATArgs refuses linear without lambda_max
        return lam_max - (epoch / epochs) * (lam_max - lam)
    if schedule == "piecewise_stepped":
        return lam - (1.5 if epoch >= round(epochs * 11 / 12) else 1.0 if epoch >= round(epochs * 3 / 4) else 0.0)
    return lam   # fixed, and piecewise as the code runs it


def gair_weights(kappa: Tensor, steps: int, lam: float, fn: str = "tanh") -> Tensor:
    """GAIR's weights, normalised to mean 1 over the batch (more weight near the boundary)."""
    if fn == "discrete":   # lambda plays no part
        w = (steps + 1 - kappa.float()) / (steps + 1)
    else:
        half = steps // 2
        a = lam + 5 * (half - kappa.float()) / half
        w = (torch.tanh(a) + 1) / 2 if fn == "tanh" else torch.sigmoid(a)
    return w * len(w) / w.sum()


def begin_epoch(args: GAIRATArgs, epochs: int) -> int:
    return round(epochs / 2) if args.begin_epoch is None else args.begin_epoch


class GAIRAT(Objective):
    name = "gairat"

    def __init__(self, attack, num_classes, lam: float, begin: int, weight: str = "tanh", schedule: str = "fixed",
                 lam_max: float | None = None, epochs: int = 1):
        super().__init__(attack, num_classes)
        self.lam, self.begin, self.weight = lam, begin, weight
        self.schedule, self.lam_max, self.epochs = schedule, lam_max, epochs

    def loss(self, model, x, y, epoch):
        x_adv, start_logits, kappa = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        ce = F.cross_entropy(logits, y, reduction="none")
        parts = {"ce": ce.detach().mean(), "kappa": kappa.float().mean()}
        if epoch >= self.begin:
            lam = lambda_at(self.schedule, epoch, self.epochs, self.lam, self.lam_max)
            loss = (gair_weights(kappa, self.attack.steps, lam, self.weight) * ce).mean()
            parts["lambda"] = torch.tensor(lam, device=ce.device)
        else:
            loss = ce.mean()
        return StepOut(loss, start_logits_if_clean(self.attack, start_logits), logits, parts)


@dataclass(frozen=True)
class GAIRATArgs(MethodArgs):
    lam: float = -1.0              # the weight's lambda, tanh and sigmoid (official -1, fixed)
    weight: str = "tanh"           # weight function: tanh (official default) | sigmoid | discrete
    begin_epoch: int | None = None  # first (1-based) epoch with GAIR weights; None = round(epochs / 2)
    lambda_schedule: str = "fixed"  # fixed (official default) | linear | piecewise | piecewise_stepped
    lambda_max: float | None = None  # linear's start value (official default +inf, which linear cannot use)

    def __post_init__(self):
        check_choice("method_args.weight", self.weight, WEIGHTS)
        check_choice("method_args.lambda_schedule", self.lambda_schedule, LAMBDA_SCHEDULES)
        if not math.isfinite(self.lam):
            raise arg_error("lam", self.lam, "must be a finite number (official -1.0).")
        if self.lambda_schedule == "linear" and self.lambda_max is None:
            raise arg_error("lambda_schedule", self.lambda_schedule, "needs a finite lambda_max (gairat_lambda_max, "
                            "e.g. 0.0): with the official default +inf the linear formula gives NaN.")

    def check(self, cfg) -> None:
        if cfg.attack_steps < 2:
            raise bad("attack_steps", cfg.attack_steps, "GAIRAT's weights divide by floor(K/2): use K >= 2 attack "
                                                        "steps.")
        if self.begin_epoch is not None and not 1 <= self.begin_epoch <= cfg.epochs:
            raise arg_error("begin_epoch", self.begin_epoch,
                            f"must lie in [1, epochs={cfg.epochs}] (the first epoch with GAIR weights), or None for "
                            "round(epochs / 2), the official 60 of 120.")


@register("gairat", args=GAIRATArgs, start=("uniform", True),
          aliases={"gairat_lambda": "lam", "gairat_weight": "weight", "gairat_begin_epoch": "begin_epoch",
                   "gairat_lambda_schedule": "lambda_schedule", "gairat_lambda_max": "lambda_max"})
def _gairat(args, cfg, counts, attack):
    """GAIRAT (Zhang et al.): PGD-AT whose CE is reweighted by each sample's distance to the boundary."""
    return GAIRAT(attack, len(counts), args.lam, begin_epoch(args, cfg.epochs), args.weight, args.lambda_schedule,
                  args.lambda_max, cfg.epochs)
