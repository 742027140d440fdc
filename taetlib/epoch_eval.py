"""What fit() measures per class during training: (hits, seen) tallies on the device, and the clean and
PGD recall per class of a split (BatchNorm in eval mode, summed over ranks under DDP)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import distributed, numerics
from .attacks import bn_eval, pgd
from .batches import Batches
from .distributed import Dist

__all__ = ["count_hits", "evaluate_per_class", "per_class_acc"]


def per_class_acc(tally: Tensor) -> list[float | None] | None:
    """[2, C] (hits, seen) -> recall per class; None where a class was not seen, None if nothing was."""
    hits, seen = tally.tolist()
    if not any(seen):
        return None
    return [h / n if n else None for h, n in zip(hits, seen)]


def count_hits(tally: Tensor, logits: Tensor | None, y: Tensor) -> None:
    """Adds per-class (hits, seen) in place; index_add, not bincount (CUDA bincount syncs)."""
    if logits is not None:
        tally[0].index_add_(0, y, (logits.argmax(1) == y).long())
        tally[1].index_add_(0, y, torch.ones_like(y))


def evaluate_per_class(model: nn.Module, batches: Batches, num_classes: int, *, eps: float, steps: int,
                       random_start: str, device: torch.device, bf16: bool = False,
                       dist: Dist = Dist()) -> tuple[list[float | None] | None, list[float | None] | None]:
    """Clean and PGD (step eps/4) recall per class on `batches`, BatchNorm in eval mode. Under DDP each
    rank passes its shard and the per-class counts are summed over ranks."""
    tally = torch.zeros(2, 2, num_classes, dtype=torch.long, device=device)
    with bn_eval(model), numerics.autocast(device, bf16):
        for x, y in batches.epoch(0):
            with torch.no_grad():
                count_hits(tally[0], model(x), y)
            x_adv = pgd(model, x, y, eps=eps, step=eps / 4, steps=steps, random_start=random_start)
            with torch.no_grad():
                count_hits(tally[1], model(x_adv), y)
    distributed.all_sum(dist, tally)
    return per_class_acc(tally[0]), per_class_acc(tally[1])
