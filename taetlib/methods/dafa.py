"""DAFA (Lee, Lee, Lee, Yoon, ICLR 2024): distance-aware fair adversarial training, as its official code computes
it (rucy74/DAFA @ c60ba83: losses.py trades_loss L15-83, utils.py calculate_class_weights L35-53, train.py
L88-94 and L234-235, arguments.py L57-62, scripts/trades_dafa.sh).

TRADES until the end of the warm-up epoch W. During epoch W the softmax of every training sample's adversarial
logits (the training step's own train-mode forward) is kept; after it, with P_ij the mean probability that
class i's samples give class j (P_ii: how well class i holds up), each class gets the weight
    w_i = 1 + lambda * sum_{j != i} ( P_ij P_jj  if P_ii < P_jj  else  -P_ji P_ii ),
fixed for the rest of training (a harder class gains from its similar, easier classes, which lose as much).
From epoch W + 1 on, sample i is attacked within w_{y_i} eps with step w_{y_i} alpha (the KL attack of TRADES,
eval mode, from x + 0.001 N(0,1) unclamped), and
    L = mean_i w_{y_i} CE(z(x_i), y_i) + beta * mean_i KL(p(x_i) || p(x'_i)).
Before that w = 1: plain TRADES. A class absent from epoch W's data has P_i. = 0 here (the official code
assumes every class present).
CIFAR-10 settings (scripts/trades_dafa.sh, arguments.py): lambda 1.0 (CIFAR-100 and STL-10: 1.5), W = 70 of
110 epochs, beta 6, eps 0.031, step 0.007, PGD-10, lr 0.1 (x0.1 for the last 10 epochs, x0.01 for the last 5),
SGD 0.9 / 5e-4, batch 128. warmup=None keeps the ratio 70 / 110 of the run's epochs.
base='pgd' is the code's other base loss (--loss pgd, losses.py madry_loss L86-135; the script and the paper use
TRADES). Its attack (L102-115, eval mode, from x + 0.001 N(0,1) unclamped) takes two steps on each gradient of the
mean CE: one of w_y alpha projected onto the w_y eps ball, not onto [0,1], then an unweighted one of alpha
projected onto the eps ball and [0,1]. So every iteration moves by up to (w_y + 1) alpha (2 alpha in the warm-up,
where w = 1), and the class radius min(w_y eps + alpha, eps) is never wider than eps. The loss is
    L = mean_i w_{y_i} CE(z(x'_i), y_i)      (the adversarial forward only, train mode; its softmax fills P).
RobustLT does not compose: DAFA sets each class's radius itself (config refuses robustlt=True).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attacks import BN_MODES, bn_eval, pgd_trace, start_point
from ..errors import bad, check_choice
from ..method_spec import MethodArgs, arg_error, register
from .base import StepOut, kl
from .epoch_tally import Calibrated

__all__ = ["BASES", "DAFA", "DAFAArgs", "WARMUP_SHARE", "class_similarity", "dafa_weights", "double_step_pgd",
           "warmup_epochs"]

WARMUP_SHARE = 70 / 110   # official: warm-up 70 of 110 epochs
BASES = ("trades", "pgd")  # the official --loss


def class_similarity(prob_sums: Tensor, counts: Tensor) -> Tensor:
    """P [C, C]: row i the mean predicted distribution of class i's samples (0 for a class without any)."""
    return prob_sums / counts.clamp(min=1)[:, None]


def dafa_weights(P: Tensor, lam: float) -> Tensor:
    """w_i = 1 + lambda sum_{j != i} (P_ij P_jj if P_ii < P_jj else -P_ji P_ii)."""
    d = P.diagonal()
    harder = d[:, None] < d[None, :]                                   # [i, j]: class i is the harder one
    terms = torch.where(harder, P * d[None, :], -P.T * d[:, None])
    terms = terms * (1 - torch.eye(len(d), dtype=P.dtype, device=P.device))
    return 1 + lam * terms.sum(1)


def double_step_pgd(model, x: Tensor, y: Tensor, w: Tensor, *, eps: float, step: float, steps: int,
                    random_start: str, clamp_start: bool, bn: str) -> Tensor:
    """madry_loss's attack: per iteration, on one gradient sign of the CE, a step of w_y alpha onto the w_y eps ball
    (no [0,1] clamp in between), then one of alpha onto the eps ball and [0,1]."""
    x = x.detach()
    w = w.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv = start_point(x, eps, random_start, clamp_start, lo, hi)
    with BN_MODES[bn](model), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
            sign = grad.sign()
            x_adv = torch.clamp(x_adv.detach() + w * step * sign, x - w * eps, x + w * eps)
            x_adv = torch.clamp(x_adv + step * sign, lo, hi)
    return torch.clamp(x_adv.detach(), lo, hi)


def warmup_epochs(args: DAFAArgs, epochs: int) -> int:
    return round(epochs * WARMUP_SHARE) if args.warmup is None else args.warmup


class DAFA(Calibrated):
    """classwise: the class weights w, None until the warm-up epoch is closed."""
    name = "dafa"
    attack_loss_name = "kl"
    picks_eps = True   # robustlt() refuses it

    def __init__(self, attack, num_classes, *, lam: float, warmup: int, beta: float, base: str = "trades"):
        super().__init__(attack, num_classes, width=num_classes)
        self.lam, self.warmup, self.beta, self.base = lam, warmup, beta, base
        if base == "pgd":   # describe(): madry_loss's attack maximises the CE, in two steps per iteration
            self.attack_loss_name = "ce (double step)"

    def _roll(self, epoch: int) -> None:
        """Past the warm-up epoch: its kept probabilities give the weights, once."""
        if self.classwise is None and epoch > self.warmup and self.tally.epoch == self.warmup:
            sums, counts = self.tally.close()
            self.classwise = dafa_weights(class_similarity(sums, counts), self.lam).float()
        self.tally.epoch = epoch

    def loss(self, model, x, y, epoch):
        self._roll(epoch)
        w = torch.ones(len(y), device=x.device) if self.classwise is None else self.classwise.to(x.device)[y]
        out = self._pgd_loss(model, x, y, w) if self.base == "pgd" else self._trades_loss(model, x, y, w)
        if epoch == self.warmup:
            self.tally.add(y, F.softmax(out.adv_logits.detach().float(), 1))
        return out

    def _pgd_loss(self, model, x, y, w) -> StepOut:
        """madry_loss: the class-weighted CE of the double-step attack's examples."""
        a = self.attack
        x_adv = double_step_pgd(model, x, y, w, eps=a.eps, step=a.step, steps=a.steps, random_start=a.start,
                                clamp_start=a.clamp_start, bn=a.bn)
        logits_adv = model(x_adv)
        return StepOut((F.cross_entropy(logits_adv, y, reduction="none") * w).mean(), None, logits_adv)

    def _trades_loss(self, model, x, y, w) -> StepOut:
        """trades_loss: TRADES with the class weights on the CE, each class's radius and step scaled by w."""
        a = self.attack
        with bn_eval(model), torch.no_grad():
            target = model(x)
        x_adv = pgd_trace(model, x, y, eps=a.eps * w, step=a.step * w, steps=a.steps, loss=lambda z, _y: kl(target, z),
                          random_start=a.start, clamp_start=a.clamp_start, bn=a.bn).x_adv
        logits_adv = model(x_adv)   # official order: adversarial forward first (BatchNorm's running statistics)
        logits = model(x)
        natural = (F.cross_entropy(logits, y, reduction="none") * w).mean()
        robust = kl(logits, logits_adv).mean()
        return StepOut(natural + self.beta * robust, logits, logits_adv,
                       {"natural": natural.detach(), "robust": robust.detach()})

    def describe(self):
        w = None if self.classwise is None else self.classwise.tolist()
        return {**super().describe(), "dafa": {"base": self.base, "lambda": self.lam, "warmup": self.warmup,
                                               "weights": w}}


@dataclass(frozen=True)
class DAFAArgs(MethodArgs):
    lam: float = 1.0               # weight scale (official CIFAR-10; 1.5 on CIFAR-100)
    warmup: int | None = None      # the epoch that sets the weights; None = 70/110 of the epochs
    beta: float = 6.0              # TRADES beta
    base: str = "trades"           # trades (the script's, the paper's) | pgd (the code's --loss pgd, madry_loss)

    def __post_init__(self):
        check_choice("method_args.base", self.base, BASES)
        if self.lam < 0:
            raise arg_error("lam", self.lam, "must be >= 0 (official CIFAR-10: 1.0).")
        if self.beta < 0:
            raise arg_error("beta", self.beta, "must be >= 0 (official 6).")

    def check(self, cfg) -> None:
        if cfg.robustlt:
            raise bad("robustlt", cfg.robustlt, "DAFA sets every class's eps itself, so RobustLT has no eps to set; "
                                                "use robustlt=False with method='dafa'.")
        if self.warmup is not None and not 1 <= self.warmup < cfg.epochs:
            raise arg_error("warmup", self.warmup, f"must lie in [1, epochs={cfg.epochs}) (the epoch whose predictions "
                            "set the weights), or None for 70/110 of the epochs, the official 70 of 110.")


# the attack maximises TRADES' KL to the clean prediction, which DAFA builds per batch
@register("dafa", args=DAFAArgs, attack_loss=None,
          aliases={"dafa_lambda": "lam", "dafa_warmup": "warmup", "dafa_beta": "beta", "dafa_base": "base"})
def _dafa(args, cfg, counts, attack):
    """DAFA (Lee et al.): TRADES with class-wise eps and CE weights from the warm-up epoch's class similarities."""
    return DAFA(attack, len(counts), lam=args.lam, warmup=warmup_epochs(args, cfg.epochs), beta=args.beta,
                base=args.base)
