"""AWP (Wu, Xia, Wang, NeurIPS 2020), AT-AWP: PGD-AT whose training step is taken at weights w + v,
v a one-step adversarial weight perturbation (docs/methods.md §3).

Per step: x_adv from the library's PGD; then for every parameter whose name holds 'weight' and that
has more than one dimension (conv and linear weights: no BatchNorm weights, no biases)
    v_l = gamma * ||w_l|| * d_l / (||d_l|| + 1e-20),
w <- w + v, CE(f_w(x_adv), y) backpropagated and optimizer.step() by fit(), then after_step: w <- w - v.
So weight decay and momentum act at w + v, as in the official loop.

awp_ascent picks d_l (both are reimplementations' code, both kept because they change the numbers):
- 'official' (csdongxian/AWP AT_AWP/utils_awp.py): d = grad_w CE(f_w(x_adv), y), taken in train mode
  (batch statistics) on a proxy copy whose BatchNorm updates never reach the model. Here the gradient
  is taken on the model itself with its BatchNorm buffers saved and restored around that pass.
- 'robustlt' (zhang-lilin/RobustLT core/methods/awp.py): d = the change one step of the training
  optimiser makes on -CE (momentum buffer and weight decay included; the lr cancels in the
  normalisation), and the running BatchNorm statistics keep that forward pass. RobustLT's optimiser is
  Nesterov SGD; here it is the library's (plain momentum) optimiser.

Deviation from the official code, as for every library method: the attack runs with BatchNorm in eval
mode (official AT-AWP attacks in train mode, so it updates the running statistics).

DDP: the proxy gradient is all-reduced (averaged) over ranks before the normalisation, so every rank
adds the same v, the one the global batch gives; without that each rank's weights would drift apart
(weight decay and momentum act on each rank's own w + v_rank).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..collectives import all_mean
from .base import StepOut, register, start_logits_if_clean
from .classic import PGDAT

__all__ = ["AWP", "EPS", "awp_perturbation", "optimizer_direction", "perturbed_weights", "unwrap"]

EPS = 1e-20   # official utils_awp.py


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP (.module) and torch.compile (._orig_mod) wrappers: its parameters are the
    ones the optimiser steps, and a forward pass on it neither arms DDP's reducer nor recompiles."""
    while True:
        inner = getattr(model, "module", None)
        inner = getattr(model, "_orig_mod", None) if inner is None else inner
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def perturbed_weights(module: nn.Module) -> list[Tensor]:
    """The parameters AWP perturbs: 'weight' in the name and dim > 1 (official diff_in_weights)."""
    return [p for name, p in module.named_parameters() if "weight" in name and p.dim() > 1]


def optimizer_direction(weights: list[Tensor], grads: list[Tensor], optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The change -lr * d one torch SGD step makes on a loss with gradient `grads` (momentum buffer,
    dampening, Nesterov and weight decay as the optimiser holds them), divided by lr: RobustLT's ascent."""
    group_of = {p: g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for w, grad in zip(weights, grads):
        group = group_of[w]
        d = grad + group["weight_decay"] * w if group["weight_decay"] else grad
        mu = group["momentum"]
        if mu:
            buf = optimizer.state.get(w, {}).get("momentum_buffer")
            buf = d if buf is None else mu * buf + (1 - group["dampening"]) * d
            d = d + mu * buf if group["nesterov"] else buf
        out.append(-d)
    return out


def awp_perturbation(module: nn.Module, x_adv: Tensor, y: Tensor, gamma: float, ascent: str = "official",
                     optimizer: torch.optim.Optimizer | None = None) -> list[tuple[Tensor, Tensor]]:
    """[(weight, v)] for one AWP step on the bare module, in train mode (see the module docstring)."""
    weights = perturbed_weights(module)
    saved = [b.clone() for b in module.buffers()] if ascent == "official" else None
    with torch.enable_grad():
        grads = list(torch.autograd.grad(F.cross_entropy(module(x_adv), y), weights))
    if saved is not None:   # the official proxy's BatchNorm statistics never reach the model
        with torch.no_grad():
            for b, s in zip(module.buffers(), saved):
                b.copy_(s)
    all_mean(grads)   # DDP: the global batch's gradient, so every rank adds the same v
    with torch.no_grad():
        if ascent == "official":
            directions = grads
        else:   # the optimiser steps on -CE, whose gradient is -grad CE
            if optimizer is None:
                raise ValueError("awp_ascent='robustlt' takes a step of the training optimiser; bind() it first.")
            directions = optimizer_direction(weights, [-g for g in grads], optimizer)
        w_norms, d_norms = torch._foreach_norm(weights), torch._foreach_norm(directions)
        return [(w, gamma * wn / (dn + EPS) * d) for w, d, wn, dn in zip(weights, directions, w_norms, d_norms)]


class AWP(PGDAT):
    """PGD-AT at adversarially perturbed weights; fit() calls after_step to take the perturbation off."""
    name = "awp"

    def __init__(self, attack, num_classes, gamma: float, warmup: int, ascent: str):
        super().__init__(attack, num_classes)
        self.gamma, self.warmup, self.ascent = gamma, warmup, ascent
        self.optimizer: torch.optim.Optimizer | None = None
        self._v: list[tuple[Tensor, Tensor]] | None = None

    def bind(self, optimizer):
        self.optimizer = optimizer

    def loss(self, model, x, y, epoch):
        x_adv, start_logits = self.attack(model, x, y, epoch)
        if epoch > self.warmup:   # official: 0-based epoch >= awp_warmup
            self._v = awp_perturbation(unwrap(model), x_adv, y, self.gamma, self.ascent, self.optimizer)
            with torch.no_grad():
                torch._foreach_add_([w for w, _ in self._v], [v for _, v in self._v])
        logits = model(x_adv)
        return StepOut(F.cross_entropy(logits, y), start_logits_if_clean(self.attack, start_logits), logits)

    def after_step(self, model):
        if self._v is not None:
            with torch.no_grad():
                torch._foreach_sub_([w for w, _ in self._v], [v for _, v in self._v])
            self._v = None

    def describe(self):
        return {**super().describe(), "awp": {"gamma": self.gamma, "warmup": self.warmup, "ascent": self.ascent}}


@register("awp")
def _awp(cfg, counts, attack):
    return AWP(attack, len(counts), cfg.awp_gamma, cfg.awp_warmup, cfg.awp_ascent)
