"""REAT (Li, Xu, Zhang, arXiv 2307.10205), as its official code computes it (docs/methods.md §2):
balanced softmax on x_adv plus the "TAIL" term on penultimate features,

    L = CE(z(x') + ln n, y) + (1/|T|) sum_{i in T} KLbar_i * (1/B) sum_j s_ij (w_{y_i} + w_{y_j}),
    KLbar_i = (1/(B D)) sum_j KL(softmax f_i || softmax f_j),  w_c = sqrt(N / n_c),
    s_ij = -1 if y_i = y_j else +1,  T = the batch's samples of tail classes.

The official KL is nn.KLDivLoss(size_average='none'): a truthy legacy flag, so reduction 'mean' over
all B*D elements, one scalar per anchor; that is what gives the term this collapsed form.
The attack's RBL loss (class-weighted CE with positive weights) gives the same sign-PGD iterates as
plain CE when BatchNorm is in eval mode, so the attack is plain CE and keeps no a_c counters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import check_choice
from ..models import features_and_logits
from .base import StepOut, field_check, register, start_logits_if_clean
from .longtail import ATBSL

__all__ = ["REAT", "TAIL_RULES", "rbl_weights", "tail_classes", "tail_term"]

TAIL_RULES = ("index", "rarest")


def tail_classes(counts: list[int], rule: str = "index") -> list[int]:
    """REAT's tail set. 'index' (official): classes floor(C/3)*2+1 .. C-1 (C=10: 7, 8, 9), which are the
    rarest under the long-tail profile; 'rarest': as many classes, those with the fewest training
    images (ties: higher index first), for naturally imbalanced data (DermaMNIST)."""
    C = len(counts)
    first = C // 3 * 2 + 1
    if rule == "index":
        return list(range(first, C))
    k = C - first
    return sorted(sorted(range(C), key=lambda c: (counts[c], -c))[:k]) if k > 0 else []


def rbl_weights(counts: list[int], predicted: list[int]) -> Tensor:
    """The official attack's RBL class weights (effective numbers of the previous epoch's adversarial
    predictions a_c): C * (1/(E_c + 1e-5)) / sum_k 1/(E_k + 1e-5), E_c = (1 - b_c^a_c) / (1 - b_c),
    b_c = (n_c - 1) / n_c. Documented and tested, not trained with: it does not change the attack."""
    n = torch.tensor(counts, dtype=torch.float64)
    a = torch.tensor(predicted, dtype=torch.float64)
    beta = (n - 1) / n
    inv = 1 / ((1 - beta ** a) / (1 - beta) + 1e-5)
    return inv / inv.sum() * len(counts)


def tail_term(f: Tensor, y: Tensor, w: Tensor, tail: Tensor) -> Tensor:
    """The TAIL term from features f [B, D] (with grad), labels y, class weights w [C] and tail mask [C]."""
    B, D = f.shape
    f = f.to(torch.promote_types(f.dtype, torch.float32))   # bf16 under autocast: KL in fp32
    log_p = F.log_softmax(f.detach(), 1)
    p, log_q = log_p.exp(), F.log_softmax(f, 1)
    kl = (p * log_p).sum(1, keepdim=True) - p @ log_q.T            # [i, j] = KL(p_i || q_j)
    klbar = kl.sum(1) / (B * D)
    sign = 1.0 - 2.0 * (y[:, None] == y[None, :]).float()          # -1 same class, +1 otherwise
    coef = (sign * (w[y][:, None] + w[y][None, :])).mean(1)
    anchors = tail[y].float()
    return (klbar * coef * anchors).sum() / anchors.sum().clamp(min=1)   # 0 without tail anchors, no sync


class REAT(ATBSL):
    """BSL (tau = 1) on x_adv + TAIL on x_adv's penultimate features; plain-CE attack."""
    name = "reat"

    def __init__(self, attack, num_classes, counts: list[int], tail_rule: str = "index"):
        super().__init__(attack, num_classes, counts, tau=1.0)
        n = torch.tensor(counts, dtype=torch.float32)
        self.w = (n.sum() / n).sqrt()
        self.tail = torch.zeros(num_classes, dtype=torch.bool)
        self.tail[tail_classes(counts, tail_rule)] = True

    def loss(self, model, x, y, epoch):
        x_adv, start_logits = self.attack(model, x, y, epoch)
        feats, logits = features_and_logits(model, x_adv)
        if self.w.device != logits.device:   # moved once, then cached
            self.w, self.tail = self.w.to(logits.device), self.tail.to(logits.device)
            self.shift = self.shift.to(logits.device)
        bsl = F.cross_entropy(logits + self.shift, y)
        tail = tail_term(feats, y, self.w, self.tail)
        return StepOut(bsl + tail, start_logits_if_clean(self.attack, start_logits), logits,
                       {"bsl": bsl.detach(), "tail": tail.detach()})


@field_check
def _check(cfg) -> None:
    check_choice("reat_tail", cfg.reat_tail, TAIL_RULES)


@register("reat")
def _reat(cfg, counts, attack):
    return REAT(attack, len(counts), counts, cfg.reat_tail)
