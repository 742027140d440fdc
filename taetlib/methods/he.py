"""HE (Pang et al., NeurIPS 2020), PGD-AT + hypersphere embedding, as ShawnXYang/AT_HE computes it
(docs/methods.md §5): cosine logits z = <h/|h|, W_c>, |W_c| = 1 (the he_norm head), and

    attack: maximise CE(s z(x'), y)  (HELoss with cm = 0)      training: CE(s (z(x') - m onehot(y)), y)

with s = 10, m = 0.2 (the official CIFAR-10 command). Evaluation attacks the scale-1 cosines as they are.
"""
from __future__ import annotations

import torch.nn.functional as F

from ..errors import bad
from .base import Objective, StepOut, field_check, register, start_logits_if_clean

__all__ = ["HE"]


class HE(Objective):
    name = "he"

    def __init__(self, attack, num_classes, s: float, m: float):
        super().__init__(attack, num_classes)
        self.s, self.m = s, m

    def attack_loss(self, logits, y):
        return F.cross_entropy(self.s * logits, y, reduction="none")

    def loss(self, model, x, y, epoch):
        x_adv, start_logits = self.attack(model, x, y, epoch, loss=self.attack_loss)
        logits = model(x_adv)
        loss = F.cross_entropy(self.s * (logits - self.m * F.one_hot(y, self.num_classes)), y)
        return StepOut(loss, start_logits_if_clean(self.attack, start_logits), logits)


@field_check
def _check(cfg) -> None:
    if cfg.he_s <= 0:
        raise bad("he_s", cfg.he_s, "must be > 0 (the logit scale s; official CIFAR-10 command: 10).")
    if cfg.he_m < 0:
        raise bad("he_m", cfg.he_m, "must be >= 0 (the angular margin m; official 0.2).")


@register("he", attack_loss="he_scaled_ce", head="he_norm")
def _he(cfg, counts, attack):
    return HE(attack, len(counts), cfg.he_s, cfg.he_m)
