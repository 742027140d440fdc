"""L-inf attacks in pixel space, torchattacks style: parameters up front, `attack(model, x, y) -> x_adv`.

Models normalise inside (models.py), so x, eps and step all live in [0,1] pixel units. eps and step
may be floats or per-sample tensors [B] (RobustLT gives every sample its class's radius).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BN_MODES", "LossArg", "PGDTrace", "aiw_ramp", "bn_batch_stats", "bn_eval", "cw_margin", "fgsm",
           "input_grad", "pgd", "pgd_any", "pgd_trace", "start_point"]

LossArg = str | Callable[[Tensor, Tensor], Tensor]  # "ce" | "cw" | (logits, y) -> per-sample loss


@contextmanager
def bn_eval(model: nn.Module):
    """Eval mode (BatchNorm running stats, no dropout) while attacking, as the released TAET and
    AT-BSL code do; each module's own mode is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def bn_batch_stats(model: nn.Module):
    """Train mode with BatchNorm on the batch's own statistics and its running statistics frozen,
    as RobustLT's attack runs (core/methods/utils.py); modes and tracking are restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    norms = [(m, m.track_running_stats) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.train()
    for m, _ in norms:   # untracked in train mode: batch statistics, and no running-stat update
        m.track_running_stats = False
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for m, tracked in norms:
            m.track_running_stats = tracked


BN_MODES = {"eval": bn_eval, "batch": bn_batch_stats}   # BatchNorm while attacking


def cw_margin(logits: Tensor, y: Tensor, kappa: float = 0.0) -> Tensor:
    """Per-sample CW loss: -max(z_y - max_{j!=y} z_j + kappa, 0); zero (no push) once misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return -(true - other + kappa).clamp(min=0)


def _loss_fn(loss: LossArg) -> Callable[[Tensor, Tensor], Tensor]:
    if callable(loss):
        return loss
    if loss == "ce":
        return lambda logits, y: F.cross_entropy(logits, y, reduction="none")
    if loss == "cw":
        return cw_margin
    raise ValueError(f"loss={loss!r}: unknown; use 'ce', 'cw' or a callable(logits, y) -> per-sample loss.")


def _per_sample(v: float | Tensor, x: Tensor) -> float | Tensor:
    """A float stays a float; a tensor [B] becomes [B,1,1,1] so it broadcasts over the image."""
    if isinstance(v, Tensor):
        return v.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return float(v)


def _start(x: Tensor, eps: float | Tensor, random_start: str) -> Tensor:
    if random_start == "normal":            # released TAET / AT-BSL / TRADES / MART code, official HE
        return x + 0.001 * torch.randn_like(x)
    if random_start == "uniform":           # Madry; REAT, GAIRAT, AWP and RobustLT code
        return x + (2 * torch.rand_like(x) - 1) * eps
    if random_start == "uniform_pos":       # official RoBal code: one-sided, x + eps * U[0,1)
        return x + torch.rand_like(x) * eps
    if random_start == "none":
        return x.clone()
    raise ValueError(f"random_start={random_start!r}: use 'normal', 'uniform', 'uniform_pos' or 'none'.")


def start_point(x: Tensor, eps, random_start: str, clamp_start: bool, lo: Tensor, hi: Tensor) -> Tensor:
    """x_0. clamp_start=True projects it onto the eps-ball and [0,1] before the first forward pass (GAIRAT,
    AWP, RobustLT, torchattacks); False feeds it as drawn, so pixels at 0 or 1 may start outside [0,1]
    (TAET, AT-BSL, TRADES, MART, HE, REAT, RoBal): their loops project only after the first step."""
    x0 = _start(x, eps, random_start)
    return torch.clamp(x0, lo, hi) if clamp_start else x0


class PGDTrace(NamedTuple):
    """What a training objective reads off one PGD run besides x_adv."""
    x_adv: Tensor                   # detached, inside the eps-ball and [0,1]
    start_logits: Tensor | None     # detached logits of the first forward pass, at x_0 (None if steps == 0)
    kappa: Tensor                   # [B] long: iterates x_0..x_{K-1} classified correctly (GAIRAT's geometry value)


def pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor, step: float | Tensor,
        steps: int, loss: LossArg = "ce", random_start: str = "uniform", clamp_start: bool = True,
        bn: str = "eval") -> Tensor:
    """PGD L-inf: x_{k+1} = Proj_{B(x,eps) & [0,1]}(x_k + step * sign(grad L(f(x_k), y))); returns the
    detached x_adv (eps == 0 returns x exactly). The defaults are Madry's and torchattacks': a uniform start
    clamped before the first forward. clamp_start=False is the released loops of TAET and its baselines
    (see start_point). bn: 'eval' (running statistics: TAET, AT-BSL, TRADES, MART code) or 'batch'
    (RobustLT's code). pgd_trace returns what training reads besides x_adv."""
    return pgd_trace(model, x, y, eps=eps, step=step, steps=steps, loss=loss, random_start=random_start,
                     clamp_start=clamp_start, bn=bn).x_adv


def input_grad(loss: Tensor, x: Tensor) -> Tensor:
    """d loss / d x, zero where the output does not depend on x: a model that ignores its input is then
    attacked without effect (and evaluation's zero-gradient flag names it), not a crash."""
    if not loss.requires_grad:
        return torch.zeros_like(x)
    return torch.autograd.grad(loss, x, materialize_grads=True)[0]


def pgd_trace(model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor, step: float | Tensor,
              steps: int, loss: LossArg = "ce", random_start: str = "uniform", clamp_start: bool = True,
              bn: str = "eval") -> PGDTrace:
    """pgd() with its trace: the logits at the start point (so a caller that wants clean-ish accuracy needs
    no extra forward) and kappa, each iterate x_0..x_{K-1} counted before its update (x_K is never checked),
    on the device: no host sync."""
    loss_fn = _loss_fn(loss)
    x = x.detach()
    eps, step = _per_sample(eps, x), _per_sample(step, x)
    # The eps-ball and [0,1] are both boxes, so one clamp onto their intersection projects onto both.
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv = start_point(x, eps, random_start, clamp_start, lo, hi)
    first_logits = None
    kappa = torch.zeros(len(x), dtype=torch.long, device=x.device)
    with BN_MODES[bn](model), torch.enable_grad():
        for k in range(steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            if k == 0:
                first_logits = logits.detach()
            kappa += logits.detach().argmax(1) == y
            # sum, not mean: each sample's gradient sign is its own, independent of batch size
            grad = input_grad(loss_fn(logits, y).sum(), x_adv)
            x_adv = torch.clamp(x_adv.detach() + step * grad.sign(), lo, hi)
    # projected already after any step; with no step, an unclamped start is projected here
    return PGDTrace(torch.clamp(x_adv.detach(), lo, hi), first_logits, kappa)


def pgd_any(model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor, step: float | Tensor,
            steps: int, loss: LossArg = "ce", random_start: str = "uniform", clamp_start: bool = True,
            bn: str = "eval", return_counts: bool = False):
    """Any-iterate PGD: the same iterates as pgd(), but an image counts as broken once any iterate
    x_0..x_K is misclassified, and it leaves the batch then (AutoAttack counts robustness this way).

    Returns (x_adv, pred): for a broken image its first misclassified iterate and that prediction, for
    the others x_K and its prediction. Each image's iterates are those of pgd() (BatchNorm in eval mode
    makes every sample independent of the batch), so it never reads more robust than the last iterate,
    and it costs less: pass k runs only on the images still unbroken. return_counts=True adds a long
    tensor [K+1]: how many images entered each pass (the last is x_K's forward, without a gradient).
    Shrinking the batch reads a mask on the host every step: an evaluation attack, not a training one.
    The start must be clamped: an unclamped x_0 may lie outside [0,1], so it is no image to count as broken.
    """
    if not clamp_start:
        raise ValueError("pgd_any counts x_0 as an iterate, so it needs clamp_start=True (an unclamped start may "
                         "lie outside [0,1]); use pgd() for an unclamped start.")
    loss_fn = _loss_fn(loss)
    x = x.detach()
    eps, step = _per_sample(eps, x), _per_sample(step, x)
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv = start_point(x, eps, random_start, clamp_start, lo, hi)
    out, pred = x_adv.clone(), y.clone()
    idx, counts = torch.arange(len(x), device=x.device), []
    with BN_MODES[bn](model):
        for k in range(steps + 1):
            counts.append(len(idx))
            last = k == steps
            with torch.set_grad_enabled(not last):
                x_adv.requires_grad_(not last)
                logits = model(x_adv)
            p = logits.detach().argmax(1)
            out[idx], pred[idx] = x_adv.detach(), p
            if last:
                break
            grad = input_grad(loss_fn(logits, y).sum(), x_adv)
            keep = p == y   # the broken ones are recorded above and leave
            x_adv = torch.clamp(x_adv.detach() + step * grad.sign(), lo, hi)[keep]
            idx, y, lo, hi = idx[keep], y[keep], lo[keep], hi[keep]
            if isinstance(step, Tensor):
                step = step[keep]
            if len(idx) == 0:
                break
    counts += [0] * (steps + 1 - len(counts))
    return (out, pred) + ((torch.tensor(counts),) if return_counts else ())


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor) -> Tensor:
    """FGSM: one signed-gradient step of size eps from x, clamped to [0,1]."""
    return pgd(model, x, y, eps=eps, step=eps, steps=1, loss="ce", random_start="none")


def aiw_ramp(epoch: int, ramp_epochs: float) -> float:
    """RobustLT's AIW, the radius schedule an attack trains on: min((t - 1) / (b * T), 1), t the 1-based
    epoch of the ramp. Here, at the bottom, so the objectives and the budget check share it."""
    return min((epoch - 1) / ramp_epochs, 1.0)
