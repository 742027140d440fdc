"""HE (Pang et al., NeurIPS 2020), PGD-AT + hypersphere embedding, as ShawnXYang/AT_HE computes it
(docs/methods.md §5): cosine logits z = <h/|h|, W_c>, |W_c| = 1 (the he_norm head), and

    attack: maximise CE(s z(x'), y)  (HELoss with cm = 0)      training: CE(s (z(x') - m onehot(y)), y)

with s = 10, m = 0.2 (the official CIFAR-10 command). Training attack start (CIFAR-10/losses.py pgd_loss,
L79-91): x + 0.001 N(0,1) fed to the first forward unclamped, projected after each step (the default).
Evaluation attacks the scale-1 cosines as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..method_spec import MethodArgs, arg_error, register
from .base import Objective, StepOut, start_logits_if_clean

__all__ = ["HE", "HEArgs"]


class HE(Objective):
    name = "he"
    attack_loss_name = "he_scaled_ce"

    def __init__(self, attack, num_classes, s: float, m: float):
        super().__init__(attack, num_classes)
        self.s, self.m = s, m

    def attack_loss(self, logits, y):
        return F.cross_entropy(self.s * logits, y, reduction="none")

    def loss(self, model, x, y, epoch):
        x_adv, start_logits, _ = self.attack(model, x, y, epoch, loss=self.attack_loss)
        logits = model(x_adv)
        loss = F.cross_entropy(self.s * (logits - self.m * F.one_hot(y, self.num_classes)), y)
        return StepOut(loss, start_logits_if_clean(self.attack, start_logits), logits)


@dataclass(frozen=True)
class HEArgs(MethodArgs):
    s: float = 10.0   # logit scale (official CIFAR-10 command)
    m: float = 0.2    # angular margin

    def __post_init__(self):
        if self.s <= 0:
            raise arg_error("s", self.s, "must be > 0 (the logit scale s; official CIFAR-10 command: 10).")
        if self.m < 0:
            raise arg_error("m", self.m, "must be >= 0 (the angular margin m; official 0.2).")


# the attack maximises CE(s z, y), with the s of each run: HE passes it per batch (attack_loss=None)
@register("he", args=HEArgs, attack_loss=None, head="he_norm", aliases={"he_s": "s", "he_m": "m"})
def _he(args, cfg, counts, attack):
    """HE (Pang et al.): PGD-AT with hypersphere embedding (normalised features and weights, margin m)."""
    return HE(attack, len(counts), args.s, args.m)
