"""GAIRAT (Zhang et al., ICLR 2021), as its official code computes it (docs/methods.md §4):
PGD-AT whose per-sample CE is reweighted by the geometry value kappa_i, the number of PGD iterates
x'_0..x'_{K-1} the model classified correctly (counted during the attack, before each update):

    w_i = (tanh(lambda + 5 (floor(K/2) - kappa_i) / floor(K/2)) + 1) / 2,   w~_i = B w_i / sum_j w_j
    L = mean_i w~_i CE(z(x'_i), y_i)   from the 1-based epoch begin_epoch on; plain PGD-AT CE before.

Defaults: lambda = -1, the Tanh weight, a fixed lambda. The official begin_epoch is 60 of 120 epochs;
gairat_begin_epoch=None keeps that ratio (round(epochs / 2), 50 of 100), an int sets the epoch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import bad
from .base import Objective, StepOut, field_check, register, start_logits_if_clean

__all__ = ["GAIRAT", "begin_epoch", "gair_weights"]


def gair_weights(kappa: Tensor, steps: int, lam: float) -> Tensor:
    """The official Tanh weights, normalised to mean 1 over the batch (more weight near the boundary)."""
    half = steps // 2
    w = (torch.tanh(lam + 5 * (half - kappa.float()) / half) + 1) / 2
    return w * len(w) / w.sum()


def begin_epoch(cfg) -> int:
    return round(cfg.epochs / 2) if cfg.gairat_begin_epoch is None else cfg.gairat_begin_epoch


class GAIRAT(Objective):
    name = "gairat"

    def __init__(self, attack, num_classes, lam: float, begin: int):
        super().__init__(attack, num_classes)
        self.lam, self.begin = lam, begin

    def loss(self, model, x, y, epoch):
        x_adv, start_logits, kappa = self.attack(model, x, y, epoch, kappa=True)
        logits = model(x_adv)
        ce = F.cross_entropy(logits, y, reduction="none")
        parts = {"ce": ce.detach().mean(), "kappa": kappa.float().mean()}
        if epoch >= self.begin:
            loss = (gair_weights(kappa, self.attack.steps, self.lam) * ce).mean()
        else:
            loss = ce.mean()
        return StepOut(loss, start_logits_if_clean(self.attack, start_logits), logits, parts)


@field_check
def _check(cfg) -> None:
    if not math.isfinite(cfg.gairat_lambda):
        raise bad("gairat_lambda", cfg.gairat_lambda, "must be a finite number (official -1.0).")
    if cfg.method != "gairat":
        return
    if cfg.attack_steps < 2:
        raise bad("attack_steps", cfg.attack_steps, "GAIRAT's weights divide by floor(K/2): use K >= 2 attack steps.")
    if cfg.gairat_begin_epoch is not None and not 1 <= cfg.gairat_begin_epoch <= cfg.epochs:
        raise bad("gairat_begin_epoch", cfg.gairat_begin_epoch,
                  f"must lie in [1, epochs={cfg.epochs}] (the first epoch with GAIR weights), or None for "
                  "round(epochs / 2), the official 60 of 120.")


@register("gairat")
def _gairat(cfg, counts, attack):
    return GAIRAT(attack, len(counts), cfg.gairat_lambda, begin_epoch(cfg))
