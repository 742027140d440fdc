"""The objective interface, the training attack and the RobustLT wrapper; formulas in docs/methods.md.

An objective states the attack it trains with (`Attack`, built from the config) and its loss.
`objective.step(model, x, y, epoch) -> StepOut` is all fit() calls: the loss tensor, the logits the
step computed anyway (for train accuracy without an extra forward) and the loss components.

Train "clean" logits of the attack-only objectives (pgd_at, at_bsl, taet stage 2) are those of the
attack's first forward pass: at x + 0.001*N(0,1) for random_start='normal', at x for 'none', with
BatchNorm in eval mode. A uniform start is not clean, so those objectives then report none.

Each method module registers its factory with method_spec.register (its MethodSpec); methods/__init__.py
imports them all, so METHODS is complete once `taetlib.methods` is imported.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import LossArg, PGDTrace, aiw_ramp, pgd_trace
from ..collectives import sum_over_ranks
from ..config import RunConfig
from ..errors import bad
from ..method_spec import METHODS, register

__all__ = ["Attack", "Objective", "StepOut", "attack_start", "build_objective", "class_means", "cpb_scale", "kl",
           "model_head", "prepare_for_eval", "robustlt", "start_logits_if_clean"]


@dataclass
class StepOut:
    loss: Tensor                      # scalar, with graph
    clean_logits: Tensor | None       # detached or not; only argmax is read
    adv_logits: Tensor | None
    parts: dict[str, Tensor] = field(default_factory=dict)  # detached loss components
    class_weights: Tensor | None = None  # [C] dloss/dL_c of a class-mean loss (HARL); NaN where absent


# ---------------------------------------------------------------- the training attack and RobustLT
@dataclass
class Attack:
    """PGD as an objective trains with it. RobustLT sets class_scale (CPB) and ramp_epochs (AIW)."""
    eps: float
    step: float
    steps: int
    start: str = "normal"
    clamp_start: bool = False          # project x_0 before the first forward (attacks.start_point)
    loss: LossArg | None = "ce"       # what the attack maximises; None: the objective passes it per batch (TRADES)
    class_scale: Tensor | None = None  # eps_c / eps per class (CPB)
    ramp_epochs: float | None = None   # b * T (AIW)
    bn: str = "eval"                   # BatchNorm while attacking: eval | batch (RobustLT's code)
    ramp_start: int = 0                # epochs before the ramp's first epoch (TAET's stage 1 under an equal budget)

    def radius(self, y: Tensor, epoch: int) -> tuple[float | Tensor, float | Tensor]:
        """(eps, step) for this batch: floats, or per-sample tensors under RobustLT."""
        if self.class_scale is None or self.ramp_epochs is None:   # RobustLT sets both
            return self.eps, self.step
        if self.class_scale.device != y.device:   # moved once, then cached: no per-step copy
            self.class_scale = self.class_scale.to(y.device)
        # scale eps and step together rather than step * eps_c/eps: no 0/0 when eps is 0
        s = self.class_scale[y] * aiw_ramp(epoch - self.ramp_start, self.ramp_epochs)
        return self.eps * s, self.step * s

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, epoch: int, loss=None) -> PGDTrace:
        """x_adv with the start point's logits and GAIRAT's kappa (attacks.pgd_trace)."""
        eps, step = self.radius(y, epoch)
        if loss is None and self.loss is None:
            raise ValueError("this attack's loss is built per batch (MethodSpec attack_loss=None): pass loss=.")
        return pgd_trace(model, x, y, eps=eps, step=step, steps=self.steps, loss=loss or self.loss or "ce",
                         random_start=self.start, clamp_start=self.clamp_start, bn=self.bn)


def cpb_scale(counts: list[int], a: float) -> Tensor:
    """CPB: eps_c / eps = (1 - a) + tau * sqrt(log K_c), K_c = n_max / n_c,
    tau = a / sum_c (n_c / N) sqrt(log K_c): the frequency-weighted mean radius stays eps."""
    n = torch.tensor(counts, dtype=torch.float64)
    root_log_k = torch.log(n.max() / n.clamp(min=1)).sqrt()   # a class without images gets weight 0 anyway
    denom = (n / n.sum() * root_log_k).sum()
    if denom == 0:   # balanced data: every K_c = 1, nothing to rebalance
        return torch.ones(len(counts))
    return ((1 - a) + a / denom * root_log_k).float()


# ---------------------------------------------------------------- losses
def kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Per-sample KL(p || q) from logits, via log-softmax (no epsilons needed)."""
    logp = F.log_softmax(logits_p, 1)
    return (logp.exp() * (logp - F.log_softmax(logits_q, 1))).sum(1)


def class_means(per_sample: Tensor, y: Tensor, num_classes: int, global_batch: bool = False) -> tuple[Tensor, Tensor]:
    """(L_c, present_c): mean loss per class in the batch (0 where absent), and presence mask.
    scatter/index_add, not bincount: CUDA bincount reads max(y) back to the host.
    global_batch: under DDP, the class sums and counts of every rank's batch are summed first, in one
    differentiable all-reduce, so L_c is the global batch's mean. Its backward all-reduces the gradient
    too: each rank's gradient is world_size times its share, which DDP's averaging undoes, so the
    parameters get the gradient of the global-batch loss. One process: no collective."""
    sums = per_sample.new_zeros(num_classes).index_add(0, y, per_sample)
    counts = per_sample.new_zeros(num_classes).index_add(0, y, torch.ones_like(per_sample))
    if global_batch:
        sums, counts = sum_over_ranks(torch.cat([sums, counts])).split(num_classes)
    return sums / counts.clamp(min=1), counts > 0


def start_logits_if_clean(attack: Attack, start_logits: Tensor | None) -> Tensor | None:
    """The attack's start logits as the step's clean logits, or None when it starts at a random point."""
    return None if attack.start in ("uniform", "uniform_pos") else start_logits



# ---------------------------------------------------------------- objectives
class Objective:
    """Base: clean CE. Subclasses override `loss`; TAET sets clean_epochs (stage 1)."""
    name = "ce"
    attack_loss_name: str | None = None   # describe()'s name of a loss the objective passes per batch (TRADES)

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

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        """fit() hands over the training optimiser before the first step (AWP's RobustLT ascent reads
        its momentum, LAS-AT's look-ahead its lr); most objectives ignore it."""

    def after_step(self, model: nn.Module) -> None:
        """Called by fit() right after optimizer.step() (AWP takes its weight perturbation off here)."""

    def state_dict(self) -> dict:
        """What the objective carries from step to step (LAS-AT's strategy network), saved into last.pt:
        tensors, numbers and plain containers only, so it loads with weights_only=True."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"objective {self.name!r} keeps no state, but the checkpoint holds {sorted(state)}; "
                             "it was written by another method.")

    def describe(self) -> dict:
        """What this objective trains with, for logs and notebooks."""
        a = self.attack
        if a is None:
            return {"name": self.name, "attack": None, "clean_epochs": self.clean_epochs}
        loss = self.attack_loss_name or (a.loss if isinstance(a.loss, str) else getattr(a.loss, "__name__", "custom"))
        attack = {"eps": a.eps, "step": a.step, "steps": a.steps, "loss": loss, "start": a.start,
                  "clamp_start": a.clamp_start, "robustlt": a.class_scale is not None}
        return {"name": self.name, "attack": attack, "clean_epochs": self.clean_epochs}



# ---------------------------------------------------------------- reading the spec
def attack_start(cfg: RunConfig) -> tuple[str, bool]:
    """(random_start, clamp_start) of cfg's training attack: random_start='auto' and clamp_start=None take
    the method's released code (its MethodSpec.start)."""
    own = METHODS[cfg.method].start
    own_start, own_clamp = own(cfg.hparams) if callable(own) else own
    return (own_start if cfg.random_start == "auto" else cfg.random_start,
            own_clamp if cfg.clamp_start is None else cfg.clamp_start)


def model_head(cfg: RunConfig) -> str:
    """The classifier head of cfg's model: cfg.head, or for 'auto' the method's own (fc for most)."""
    return METHODS[cfg.method].head if cfg.head == "auto" else cfg.head


def prepare_for_eval(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """The model as cfg's method evaluates it (unchanged for all but RoBal-N)."""
    setup = METHODS[cfg.method].eval_setup
    if setup is not None:
        setup(model, cfg.hparams)
    return model


@register("ce")
def _ce(args, cfg, counts, attack):
    """Clean cross-entropy (no attack)."""
    return Objective(None, len(counts))


# ---------------------------------------------------------------- RobustLT
def robustlt(objective: Objective, counts: list[int], a: float, b: float, epochs: int,
             ramp_start: int = 0) -> Objective:
    """RobustLT around any adversarial objective: only the attack radius changes (CPB x AIW).
    The AIW ramp spans b * epochs epochs after the first `ramp_start` ones."""
    if objective.attack is None:
        raise bad("robustlt", True, f"RobustLT changes the attack radius, and method={objective.name!r} "
                                    "trains without an attack; pick an adversarial method or robustlt=False.")
    if getattr(objective, "picks_eps", False):
        raise bad("robustlt", True, f"method={objective.name!r} picks every sample's eps itself, so RobustLT has no "
                                    "eps to set (scaling the picked one would be a new method); use robustlt=False.")
    wrapped = copy.copy(objective)
    wrapped.attack = copy.copy(objective.attack)
    wrapped.attack.class_scale, wrapped.attack.ramp_epochs = cpb_scale(counts, a), b * epochs
    wrapped.attack.ramp_start = ramp_start
    wrapped.name = f"robustlt({objective.name})"
    return wrapped


def build_objective(cfg: RunConfig, train_counts: list[int], default_eps: float) -> Objective:
    """The objective cfg.method names, with its attack from cfg (eps None = the dataset default)."""
    spec = METHODS[cfg.method]
    start, clamp = attack_start(cfg)
    attack = Attack(eps=cfg.train_eps(default_eps), step=cfg.train_step(default_eps), steps=cfg.attack_steps,
                    start=start, clamp_start=clamp, loss=spec.attack_loss, bn=cfg.attack_bn)
    objective = spec.factory(cfg.hparams, cfg, list(train_counts), attack)
    if cfg.robustlt:
        # released: the ramp runs over all epochs, stage 1 included (RobustLT's code); equal_adversarial:
        # over the adversarial epochs, which every arm then gets on the same ramp
        objective = robustlt(objective, train_counts, cfg.robustlt_a, cfg.robustlt_b, cfg.epochs,
                             ramp_start=cfg.clean_epochs_before())
    return objective
