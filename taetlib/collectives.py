"""Collectives an objective may call inside its step, on the default process group: no-ops when no
group is running (one process), so objectives need no Dist (AWP's perturbation gradient, LAS-AT's
strategy network, HARL's global class means). The bottom floor: torch only."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["SumOverRanks", "all_mean", "broadcast_buffers", "sum_over_ranks"]


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_mean(tensors: list[Tensor]) -> None:
    """In-place mean over the ranks of the default process group, in one all-reduce; a no-op without one.
    For objectives, which see no Dist: AWP's weight-perturbation gradient, LAS-AT's strategy gradient."""
    if not _grouped() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) of a module outside DDP to every rank; a no-op without a group."""
    if _grouped():
        for b in module.buffers():
            dist.broadcast(b, src=0)


def sum_over_ranks(t: Tensor) -> Tensor:
    """Differentiable sum over the ranks (its backward sums the gradients too); `t` itself on one process."""
    return SumOverRanks.apply(t) if _grouped() else t


class SumOverRanks(torch.autograd.Function):
    """Sum over the ranks whose backward sums the gradients too: every rank computes the same loss
    from the total, so the gradient of the ranks' summed losses at this rank's summand is the sum of
    their gradients. (torch.distributed.nn.functional.all_reduce does the same; it is deprecated.)"""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad
