"""AT-BSL (balanced softmax on adversarial examples); TAET is in taet.py.

Training attack start, as the released loop has it (the default): x + 0.001 N(0,1), fed to the first
forward unclamped, projected only after each step (AT-BSL at_bsl_loss.py L23-31).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..method_spec import MethodArgs, register
from .base import Objective, StepOut, start_logits_if_clean

__all__ = ["ATBSL", "BSLArgs"]


class ATBSL(Objective):
    """Balanced softmax on x_adv: CE(z(x_adv) + tau * log n_c, y); attack with plain CE;
    predictions (and so train accuracy) use the raw logits."""
    name = "at_bsl"

    def __init__(self, attack, num_classes, counts: list[int], tau: float):
        super().__init__(attack, num_classes)
        self.shift = tau * torch.log(torch.tensor(counts, dtype=torch.float32))

    def loss(self, model, x, y, epoch):
        x_adv, start_logits, _ = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        if self.shift.device != logits.device:
            self.shift = self.shift.to(logits.device)
        loss = F.cross_entropy(logits + self.shift, y)
        return StepOut(loss, start_logits_if_clean(self.attack, start_logits), logits)


@dataclass(frozen=True)
class BSLArgs(MethodArgs):
    tau: float = 1.0   # the prior's exponent in the logit shift tau * log n_c (AT-BSL paper: 1)


@register("at_bsl", args=BSLArgs, aliases={"bsl_tau": "tau"})
def _at_bsl(args, cfg, counts, attack):
    """AT-BSL (Yue et al.): balanced-softmax CE on PGD examples."""
    return ATBSL(attack, len(counts), counts, args.tau)
