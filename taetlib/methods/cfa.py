"""CFA (Wei, Wang, Guo, Wang, CVPR 2023): class-wise calibrated fair adversarial training, as its official
code computes it (PKU-ML/CFA @ 071f333: train.py, attack.py).

From the training robust accuracy r_c of each class in the previous epoch (train.py L194-208):
    CCM, the class-wise calibrated margin:  eps_c = (lambda_1 + r_c) * eps
    CCR, the class-wise calibrated regularisation (TRADES only):
        b_c = (lambda_2 + r_c) beta / (1 + (lambda_2 + r_c) beta)
both from the 0-based epoch `begin` on (1-based: epoch > begin); before it eps_c = eps and b_c = beta / (1 + beta).
r_c is the official logger's m * correct_c / N (train.py CW_log L49-80: correct adversarial predictions of class c
in the training step's own train-mode forward, times the number of classes, over all N training samples), which
is class c's accuracy only when the classes are balanced; class_acc='recall' reads correct_c / n_c instead.
The losses (attack.py), each sample attacked within its class's eps_y with the common step:
    base 'trades' (cw_trades_loss L110-150, the code's default mode):
        L = sum_i [(1 - b_{y_i}) CE(z(x_i), y_i) + b_{y_i} KL(p(x_i) || p(x'_i))] / B,  x' maximises the KL
        (eval mode), from x + 0.001 N(0,1) unclamped; without CCR this is TRADES divided by 1 + beta.
    base 'at' (cw_pgd_loss L67-72, cw_attack_pgd L33-59): CE(z(x'), y) from x + eps_y U(-1, 1) clamped to [0,1].
CIFAR-10 settings (train.py arguments, README command): lambda_1 = lambda_2 = 0.5, begin 10, beta 6, PGD-10 at
8/255 with step 2/255, PreActResNet-18, 200 epochs, lr 0.1 (x0.1 at 50%, x0.01 at 75%), SGD 0.9 / 5e-4.

FAWA, the fairness-aware weight average (train.py L243-258), is a choice of the weights a run keeps and works for
any method: select='fawa' with fawa_decay 0.88 and fawa_threshold 0.24 (fawa.py; the CFA arms of the presets set
it). With select='last' the model kept is CFA's main model. The official script keeps, from epoch 100 of 200 on,
every main, EMA and FAWA checkpoint whose test robust plus worst-class test robust accuracy comes within 0.02 of the
best so far (train.py L299-317), a choice made on the test set, which this workbench never makes.
Deviations, stated: the official AT-mode attack runs in train mode (as AWP's), here BatchNorm is in eval mode;
official TRADES mode runs the clean batch through the train-mode model twice (CE, then the KL's target), here
once, so BatchNorm's running statistics get one update fewer per step.
RobustLT does not compose: CCM sets each class's radius itself (config refuses robustlt=True).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attacks import bn_eval, pgd_trace
from ..errors import bad, check_choice
from ..fawa import CLASS_ACC, class_robust_acc
from ..method_spec import MethodArgs, arg_error, register
from .base import StepOut, kl
from .epoch_tally import Calibrated

__all__ = ["BASES", "CFA", "CFAArgs", "calibrated_beta", "calibrated_eps", "calibrated_trades", "start"]

BASES = ("trades", "at")


def calibrated_eps(r: Tensor, eps: float, lambda_1: float) -> Tensor:
    """CCM: eps_c = (lambda_1 + r_c) * eps."""
    return (lambda_1 + r) * eps


def calibrated_beta(r: Tensor, beta: float, lambda_2: float) -> Tensor:
    """CCR: b_c = (lambda_2 + r_c) beta / (1 + (lambda_2 + r_c) beta), the TRADES weight as a share of 1."""
    t = (lambda_2 + r) * beta
    return t / (1 + t)


def calibrated_trades(logits: Tensor, logits_adv: Tensor, y: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, CE, KL): mean_i (1 - b_i) CE(z(x_i), y_i) + b_i KL(p(x_i) || p(x'_i)), b per sample."""
    natural, robust = F.cross_entropy(logits, y, reduction="none"), kl(logits, logits_adv)
    return ((1 - b) * natural + b * robust).mean(), natural.detach().mean(), robust.detach().mean()


class CFA(Calibrated):
    """classwise: r_c of the last closed epoch."""
    name = "cfa"
    picks_eps = True   # robustlt() refuses it

    def __init__(self, attack, num_classes, *, base: str, ccm: bool, ccr: bool, lambda_1: float, lambda_2: float,
                 beta: float, begin: int, class_acc: str):
        super().__init__(attack, num_classes)
        self.base, self.ccm, self.ccr, self.beta, self.begin = base, ccm, ccr, beta, begin
        self.lambdas, self.class_acc = (lambda_1, lambda_2), class_acc

    def _roll(self, epoch: int) -> None:
        """At an epoch's first step: the previous epoch's r_c."""
        if self.tally.epoch is not None and epoch != self.tally.epoch:
            correct, counts = self.tally.close()
            self.classwise = class_robust_acc(correct[:, 0], counts, self.class_acc).float()
        self.tally.epoch = epoch

    def class_eps_beta(self, epoch: int, device) -> tuple[Tensor, Tensor]:
        """(eps_c, b_c) for this epoch."""
        C = self.num_classes
        r = self.classwise.to(device) if epoch > self.begin and self.classwise is not None else None
        eps = calibrated_eps(r, self.attack.eps, self.lambdas[0]) if r is not None and self.ccm else \
            torch.full((C,), self.attack.eps, device=device)
        beta = calibrated_beta(r, self.beta, self.lambdas[1]) if r is not None and self.ccr else \
            torch.full((C,), self.beta / (1 + self.beta), device=device)
        return eps, beta

    def loss(self, model, x, y, epoch):
        self._roll(epoch)
        eps_c, beta_c = self.class_eps_beta(epoch, x.device)
        a = self.attack
        kw = dict(eps=eps_c[y], step=a.step, steps=a.steps, random_start=a.start, clamp_start=a.clamp_start, bn=a.bn)
        if self.base == "at":
            x_adv = pgd_trace(model, x, y, **kw).x_adv
            logits_adv = model(x_adv)
            loss, logits, parts = F.cross_entropy(logits_adv, y), None, {}
        else:
            with bn_eval(model), torch.no_grad():
                target = model(x)   # the attack's fixed reference distribution
            x_adv = pgd_trace(model, x, y, loss=lambda z, _y: kl(target, z), **kw).x_adv
            logits, logits_adv = model(x), model(x_adv)
            loss, natural, robust = calibrated_trades(logits, logits_adv, y, beta_c[y])
            parts = {"natural": natural, "robust": robust}
        self.tally.add(y, logits_adv.detach().argmax(1) == y)
        return StepOut(loss, logits, logits_adv, {**parts, "eps_mean": eps_c[y].mean()})

    def describe(self):
        return {**super().describe(), "cfa": {"base": self.base, "ccm": self.ccm, "ccr": self.ccr,
                                              "lambdas": self.lambdas, "begin": self.begin}}


@dataclass(frozen=True)
class CFAArgs(MethodArgs):
    base: str = "trades"           # trades (official default mode) | at
    ccm: bool = True               # class-wise calibrated margin (eps_c)
    ccr: bool | None = None        # class-wise calibrated TRADES weight; None = on for trades
    lambda1: float = 0.5           # CCM's lambda_1
    lambda2: float = 0.5           # CCR's lambda_2
    beta: float = 6.0              # TRADES beta
    begin: int = 10                # calibration from the epoch after this one
    class_acc: str = "official"    # r_c as official (C * correct_c / N) | recall (correct_c / n_c)

    def __post_init__(self):
        check_choice("method_args.base", self.base, BASES)
        check_choice("method_args.class_acc", self.class_acc, CLASS_ACC)
        if self.ccr and self.base == "at":
            raise arg_error("ccr", self.ccr, "CCR calibrates TRADES' weight, and base='at' has none; use "
                                             "base='trades' or ccr=None.")
        for name, official in (("lambda1", 0.5), ("lambda2", 0.5), ("beta", 6.0), ("begin", 10)):
            if getattr(self, name) < 0:
                raise arg_error(name, getattr(self, name), f"must be >= 0 (official {official}).")

    def ccr_on(self) -> bool:
        return self.base == "trades" if self.ccr is None else self.ccr

    def check(self, cfg) -> None:
        if cfg.robustlt:
            raise bad("robustlt", cfg.robustlt, "CFA's CCM sets every class's eps itself, so RobustLT has no eps to "
                                                "set; use robustlt=False with method='cfa'.")


def start(args: CFAArgs) -> tuple[str, bool]:
    """The official loop's start: TRADES mode 0.001 N(0,1) unclamped, AT mode eps U(-1, 1) clamped to [0,1]."""
    return ("uniform", True) if args.base == "at" else ("normal", False)


@register("cfa", args=CFAArgs, start=start, aliases={f"cfa_{n}": n for n in (
    "base", "ccm", "ccr", "lambda1", "lambda2", "beta", "begin", "class_acc")})
def _cfa(args, cfg, counts, attack):
    """CFA (Wei et al.): class-wise calibrated margin and TRADES weight from each class's robust accuracy."""
    return CFA(attack, len(counts), base=args.base, ccm=args.ccm, ccr=args.ccr_on(), lambda_1=args.lambda1,
               lambda_2=args.lambda2, beta=args.beta, begin=args.begin, class_acc=args.class_acc)
