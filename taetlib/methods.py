"""Training objectives (the outer minimisation) and the RobustLT wrapper; formulas in METHODS.md.

An objective states the attack it trains with (`Attack`, built from the config) and its loss.
`objective.step(model, x, y, epoch) -> StepOut` is all fit() calls: the loss tensor, the logits the
step computed anyway (for train accuracy without an extra forward) and the loss components.

Train "clean" logits of the attack-only objectives (pgd_at, at_bsl, taet stage 2) are those of the
attack's first forward pass: at x + 0.001*N(0,1) for random_start='normal', at x for 'none', with
BatchNorm in eval mode. A uniform start is not clean, so those objectives then report none.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attacks import bn_eval, pgd
from .config import RunConfig, bad


@dataclass
class StepOut:
    loss: Tensor                      # scalar, with graph
    clean_logits: Tensor | None       # detached or not; only argmax is read
    adv_logits: Tensor | None
    parts: dict[str, Tensor] = field(default_factory=dict)  # detached loss components


# ---------------------------------------------------------------- the training attack and RobustLT
@dataclass
class Attack:
    """PGD as an objective trains with it. RobustLT sets class_scale (CPB) and ramp_epochs (AIW)."""
    eps: float
    step: float
    steps: int
    start: str = "normal"
    loss: str = "ce"                  # what the attack maximises ("kl" for TRADES, built per batch)
    class_scale: Tensor | None = None  # eps_c / eps per class (CPB)
    ramp_epochs: float | None = None   # b * T (AIW)

    def radius(self, y: Tensor, epoch: int) -> tuple[float | Tensor, float | Tensor]:
        """(eps, step) for this batch: floats, or per-sample tensors under RobustLT."""
        if self.class_scale is None:
            return self.eps, self.step
        if self.class_scale.device != y.device:   # moved once, then cached: no per-step copy
            self.class_scale = self.class_scale.to(y.device)
        # scale eps and step together rather than step * eps_c/eps: no 0/0 when eps is 0
        s = self.class_scale[y] * aiw_ramp(epoch, self.ramp_epochs)
        return self.eps * s, self.step * s

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, epoch: int, loss=None):
        """-> (x_adv, logits at the attack's start point)."""
        eps, step = self.radius(y, epoch)
        return pgd(model, x, y, eps=eps, step=step, steps=self.steps, loss=loss or self.loss,
                   random_start=self.start, return_logits=True)


def cpb_scale(counts: list[int], a: float) -> Tensor:
    """CPB: eps_c / eps = (1 - a) + tau * sqrt(log K_c), K_c = n_max / n_c,
    tau = a / sum_c (n_c / N) sqrt(log K_c): the frequency-weighted mean radius stays eps."""
    n = torch.tensor(counts, dtype=torch.float64)
    root_log_k = torch.log(n.max() / n.clamp(min=1)).sqrt()   # a class without images gets weight 0 anyway
    denom = (n / n.sum() * root_log_k).sum()
    if denom == 0:   # balanced data: every K_c = 1, nothing to rebalance
        return torch.ones(len(counts))
    return ((1 - a) + a / denom * root_log_k).float()


def aiw_ramp(epoch: int, ramp_epochs: float) -> float:
    """AIW: min((t - 1) / (b * T), 1) with t the 1-based epoch."""
    return min((epoch - 1) / ramp_epochs, 1.0)


# ---------------------------------------------------------------- losses
def kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Per-sample KL(p || q) from logits, via log-softmax (no epsilons needed)."""
    logp = F.log_softmax(logits_p, 1)
    return (logp.exp() * (logp - F.log_softmax(logits_q, 1))).sum(1)


def class_means(per_sample: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """(L_c, present_c): mean loss per class in the batch (0 where absent), and presence mask.
    scatter/index_add, not bincount: CUDA bincount reads max(y) back to the host."""
    sums = per_sample.new_zeros(num_classes).index_add(0, y, per_sample)
    counts = per_sample.new_zeros(num_classes).index_add(0, y, torch.ones_like(per_sample))
    return sums / counts.clamp(min=1), counts > 0


def harl(per_sample: Tensor, y: Tensor, num_classes: int, absent: str = "zero") -> dict[str, Tensor]:
    """TAET's BCL, HDL and RCEL from per-sample adversarial CE.
    absent='zero' (released code): S_C = C, an absent class has L_c = 0 and enters mean and variance;
    absent='exclude': S_C = classes present, mean and variance over them only."""
    L, present = class_means(per_sample, y, num_classes)
    w = torch.ones_like(L) if absent == "zero" else present.to(L.dtype)
    s_c = w.sum()
    bcl = (w * L).sum() / s_c
    hdl = (w * (L - bcl) ** 2).sum() / s_c
    rcel = ((L / L.sum().clamp(min=torch.finfo(L.dtype).tiny)) ** 2).sum()  # absent L_c = 0 adds 0
    return {"bcl": bcl, "hdl": hdl, "rcel": rcel}


def _clean_logits(attack: Attack, start_logits):
    return None if attack.start == "uniform" else start_logits


# ---------------------------------------------------------------- objectives
class Objective:
    """Base: clean CE. Subclasses override `loss`; TAET sets clean_epochs (stage 1)."""
    name = "ce"

    def __init__(self, attack: Attack | None, num_classes: int, clean_epochs: int = 0):
        self.attack, self.num_classes, self.clean_epochs = attack, num_classes, clean_epochs

    def stage(self, epoch: int) -> str:
        if self.attack is None:
            return "clean"
        return "stabilization" if epoch <= self.clean_epochs else "adversarial"

    def step(self, model: nn.Module, x: Tensor, y: Tensor, epoch: int) -> StepOut:
        if self.stage(epoch) != "adversarial":
            return Objective.loss(self, model, x, y, epoch)
        return self.loss(model, x, y, epoch)

    def loss(self, model, x, y, epoch) -> StepOut:
        logits = model(x)
        return StepOut(F.cross_entropy(logits, y), logits, None)

    def describe(self) -> dict:
        """What this objective trains with, for logs and notebooks."""
        a = self.attack
        attack = None if a is None else {"eps": a.eps, "step": a.step, "steps": a.steps, "loss": a.loss,
                                         "start": a.start, "robustlt": a.class_scale is not None}
        return {"name": self.name, "attack": attack, "clean_epochs": self.clean_epochs}


class PGDAT(Objective):
    """Madry: CE on x_adv."""
    name = "pgd_at"

    def loss(self, model, x, y, epoch):
        x_adv, start_logits = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        return StepOut(F.cross_entropy(logits, y), _clean_logits(self.attack, start_logits), logits)


class TRADES(Objective):
    """CE(f(x), y) + beta * KL(f(x) || f(x_adv)); x_adv maximises the KL to the eval-mode f(x)."""
    name = "trades"

    def __init__(self, attack, num_classes, beta: float):
        super().__init__(attack, num_classes)
        self.beta = beta

    def loss(self, model, x, y, epoch):
        with bn_eval(model), torch.no_grad():
            target = model(x)   # the attack's fixed reference distribution
        x_adv, _ = self.attack(model, x, y, epoch, loss=lambda z, _y: kl(target, z))
        logits, logits_adv = model(x), model(x_adv)
        natural, robust = F.cross_entropy(logits, y), kl(logits, logits_adv).mean()
        return StepOut(natural + self.beta * robust, logits, logits_adv,
                       {"natural": natural.detach(), "robust": robust.detach()})


class MART(Objective):
    """BCE(p(x_adv), y) + beta * KL(p(x) || p(x_adv)) * (1 - p_y(x)), where
    BCE(p, y) = -log p_y - log(1 - max_{k != y} p_k)."""
    name = "mart"

    def __init__(self, attack, num_classes, beta: float):
        super().__init__(attack, num_classes)
        self.beta = beta

    def loss(self, model, x, y, epoch):
        x_adv, _ = self.attack(model, x, y, epoch)
        logits, logits_adv = model(x), model(x_adv)
        p_adv = F.softmax(logits_adv, 1)
        top_wrong = p_adv.scatter(1, y[:, None], 0.0).amax(1)
        bce = F.cross_entropy(logits_adv, y) - torch.log1p(-top_wrong.clamp(max=1 - 1e-6)).mean()
        p_true = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        weighted_kl = (kl(logits, logits_adv) * (1 - p_true)).mean()
        return StepOut(bce + self.beta * weighted_kl, logits, logits_adv,
                       {"bce": bce.detach(), "kl": weighted_kl.detach()})


class ATBSL(Objective):
    """Balanced softmax on x_adv: CE(z(x_adv) + tau * log n_c, y); attack with plain CE;
    predictions (and so train accuracy) use the raw logits."""
    name = "at_bsl"

    def __init__(self, attack, num_classes, counts: list[int], tau: float):
        super().__init__(attack, num_classes)
        self.shift = tau * torch.log(torch.tensor(counts, dtype=torch.float32))

    def loss(self, model, x, y, epoch):
        x_adv, start_logits = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        if self.shift.device != logits.device:
            self.shift = self.shift.to(logits.device)
        return StepOut(F.cross_entropy(logits + self.shift, y), _clean_logits(self.attack, start_logits), logits)


class TAET(Objective):
    """Stage 1 (epochs <= clean_epochs): clean CE. Stage 2: HARL on x_adv,
    alpha * BCL + beta * HDL + gamma * RCEL."""
    name = "taet"

    def __init__(self, attack, num_classes, clean_epochs, alpha, beta, gamma, absent):
        super().__init__(attack, num_classes, clean_epochs)
        self.weights, self.absent = (alpha, beta, gamma), absent

    def loss(self, model, x, y, epoch):
        x_adv, start_logits = self.attack(model, x, y, epoch)
        logits = model(x_adv)
        parts = harl(F.cross_entropy(logits, y, reduction="none"), y, self.num_classes, self.absent)
        loss = sum(w * parts[k] for w, k in zip(self.weights, ("bcl", "hdl", "rcel")))
        return StepOut(loss, _clean_logits(self.attack, start_logits), logits,
                       {k: v.detach() for k, v in parts.items()})


# ---------------------------------------------------------------- registry and factory
# name -> (cfg, train_counts, attack) -> Objective
OBJECTIVES: dict[str, Callable[[RunConfig, list[int], Attack], Objective]] = {
    "ce": lambda cfg, counts, attack: Objective(None, len(counts)),
    "pgd_at": lambda cfg, counts, attack: PGDAT(attack, len(counts)),
    "trades": lambda cfg, counts, attack: TRADES(attack, len(counts), cfg.trades_beta),
    "mart": lambda cfg, counts, attack: MART(attack, len(counts), cfg.mart_beta),
    "at_bsl": lambda cfg, counts, attack: ATBSL(attack, len(counts), counts, cfg.bsl_tau),
    "taet": lambda cfg, counts, attack: TAET(attack, len(counts), cfg.stabilization_epochs, cfg.harl_alpha,
                                             cfg.harl_beta, cfg.harl_gamma, cfg.harl_absent_classes),
}
ATTACK_LOSS = {"trades": "kl"}   # what each objective's attack maximises; CE otherwise


def robustlt(objective: Objective, counts: list[int], a: float, b: float, epochs: int) -> Objective:
    """RobustLT around any adversarial objective: only the attack radius changes (CPB x AIW)."""
    if objective.attack is None:
        raise bad("robustlt", True, f"RobustLT changes the attack radius, and method={objective.name!r} "
                                    "trains without an attack; pick an adversarial method or robustlt=False.")
    wrapped = copy.copy(objective)
    wrapped.attack = copy.copy(objective.attack)
    wrapped.attack.class_scale, wrapped.attack.ramp_epochs = cpb_scale(counts, a), b * epochs
    wrapped.name = f"robustlt({objective.name})"
    return wrapped


def build_objective(cfg: RunConfig, train_counts: list[int], default_eps: float) -> Objective:
    """The objective cfg.method names, with its attack from cfg (eps None = the dataset default)."""
    attack = Attack(eps=cfg.train_eps(default_eps), step=cfg.train_step(default_eps),
                    steps=cfg.attack_steps, start=cfg.random_start, loss=ATTACK_LOSS.get(cfg.method, "ce"))
    objective = OBJECTIVES[cfg.method](cfg, list(train_counts), attack)
    if cfg.robustlt:
        objective = robustlt(objective, train_counts, cfg.robustlt_a, cfg.robustlt_b, cfg.epochs)
    return objective
