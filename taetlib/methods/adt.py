"""ADT (Dong et al., NeurIPS 2020), the explicit variant ADT_EXP: the adversarial example is a sample of a
learned per-pixel distribution (docs/methods.md §6; dongyp13/Adversarial-Distributional-Training
adt_exp.py, adt_loss).

    sigma = softplus(rho),  u = mu + sigma * n,  n ~ N(0, I),  x' = clamp(x + eps * tanh(u), 0, 1)
    inner (mu = rho = 0 at the start): minimise  -CE(f(x'), y) - lambda * H,
        H = mean over all B*C*H*W elements of  n^2/2 + ln(sigma + 1e-8) + ln(1 - tanh(u)^2 + 1e-8)
    steps x samples evaluations, the model in eval mode; Adam(lr, betas=(0, 0)) steps once per step
    outer: CE(f(x'_final), y) in train mode, x'_final one fresh sample of the optimised distribution.

Fidelity: the official loop never zeroes the gradients of mu and rho, so each Adam step uses the sum of
every sample's gradient so far; with betas (0, 0) that is lr * sign of the running sum. Kept here as a
running sum. The gradients go to (mu, rho) only (the official backward also fills the model's .grad,
which the training step then zeroes: wasted work, no effect). No projection: tanh bounds the radius.

eps comes from the training attack's radius, so RobustLT composes (per-sample eps [B,1,1,1]; at the
AIW ramp's start eps = 0 and x' = x). attack_steps and step_size play no part: adt_steps and adt_lr do.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import _per_sample, bn_eval
from .base import Objective, StepOut, register

__all__ = ["ADT", "adt_exp", "neg_log_density", "optimise_distribution"]


def neg_log_density(n: Tensor, sigma: Tensor, a: Tensor) -> Tensor:
    """-ln p(delta) per element up to constants, a = tanh(u): the official entropy estimate's summand."""
    return n ** 2 / 2 + (sigma + 1e-8).log() + (1 - a ** 2 + 1e-8).log()


def optimise_distribution(sample_loss: Callable[[Tensor, Tensor], Tensor], shape, steps: int, samples: int,
                          lr: float, device=None) -> tuple[Tensor, Tensor]:
    """(mu, rho) after `steps` Adam(lr, betas=(0, 0)) steps, each on the running sum of all sample
    gradients so far (the official never-zeroed .grad); sample_loss(mu, rho) draws one sample and
    returns the inner loss to minimise."""
    mu = torch.zeros(shape, device=device, requires_grad=True)
    rho = torch.zeros(shape, device=device, requires_grad=True)
    adam = torch.optim.Adam([mu, rho], lr=lr, betas=(0.0, 0.0))
    g_mu, g_rho = torch.zeros_like(mu), torch.zeros_like(rho)
    for _ in range(steps):
        for _ in range(samples):
            d_mu, d_rho = torch.autograd.grad(sample_loss(mu, rho), (mu, rho))
            g_mu += d_mu
            g_rho += d_rho
        mu.grad, rho.grad = g_mu.clone(), g_rho.clone()   # Adam reads .grad; the sums keep accumulating
        adam.step()
    return mu.detach(), rho.detach()


def adt_exp(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *, steps: int = 7, samples: int = 5,
            lr: float = 0.3, lam: float = 0.01) -> Tensor:
    """ADT_EXP's adversarial example: the inner problem under eval-mode BatchNorm, then one fresh sample."""
    x = x.detach()
    eps = _per_sample(eps, x)

    def sample_loss(mu, rho):
        sigma = F.softplus(rho)
        n = torch.randn_like(x)
        a = torch.tanh(mu + n * sigma)
        entropy = neg_log_density(n, sigma, a).mean()
        return -F.cross_entropy(model(torch.clamp(x + eps * a, 0, 1)), y) - lam * entropy

    with bn_eval(model), torch.enable_grad():
        mu, rho = optimise_distribution(sample_loss, x.shape, steps, samples, lr, x.device)
    return torch.clamp(x + eps * torch.tanh(mu + F.softplus(rho) * torch.randn_like(x)), 0, 1)


class ADT(Objective):
    """ADT_EXP: CE in train mode on one sample of the adversarial distribution. It has no clean forward,
    so it reports no train clean accuracy."""
    name = "adt"

    def __init__(self, attack, num_classes, steps: int, samples: int, lr: float, lam: float):
        super().__init__(attack, num_classes)
        self.steps, self.samples, self.lr, self.lam = steps, samples, lr, lam

    def loss(self, model, x, y, epoch):
        eps, _ = self.attack.radius(y, epoch)
        x_adv = adt_exp(model, x, y, eps, steps=self.steps, samples=self.samples, lr=self.lr, lam=self.lam)
        logits = model(x_adv)
        return StepOut(F.cross_entropy(logits, y), None, logits)

    def describe(self):
        d = super().describe()
        d["attack"] = {**d["attack"], "steps": None, "step": None}   # ADT's inner problem replaces PGD
        return {**d, "adt": {"steps": self.steps, "samples": self.samples, "lr": self.lr, "lambda": self.lam}}


@register("adt")
def _adt(cfg, counts, attack):
    return ADT(attack, len(counts), cfg.adt_steps, cfg.adt_samples, cfg.adt_lr, cfg.adt_lambda)
