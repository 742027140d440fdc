"""Collectives an objective may call inside its step, on the default process group: no-ops when no
group is running (one process), so objectives need no Dist (AWP's perturbation gradient, LAS-AT's
strategy network). The bottom floor: torch only."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def all_mean(tensors: list[Tensor]) -> None:
    """In-place mean over the ranks of the default process group, in one all-reduce; a no-op without one.
    For objectives, which see no Dist: AWP's weight-perturbation gradient, LAS-AT's strategy gradient."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1) or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) of a module outside DDP to every rank; a no-op without a group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for b in module.buffers():
            dist.broadcast(b, src=0)
