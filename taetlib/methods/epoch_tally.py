"""Per-class sums over one training epoch, for objectives that set the next epoch from the last (CFA, DAFA).

An objective adds each step's per-sample values; the first step of a new epoch closes the tally, summed
over DDP ranks, so every rank reads the whole epoch. The open sums go into last.pt (state_dict), so a
resumed run reads the same epoch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..collectives import sum_over_ranks
from .base import Attack, Objective

__all__ = ["Calibrated", "EpochTally"]


class EpochTally:
    """sums [C, width] and counts [C] of the current epoch's samples, by label."""

    def __init__(self, num_classes: int, width: int = 1):
        self.sums = torch.zeros(num_classes, width, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.epoch: int | None = None   # the epoch being tallied

    def add(self, y: Tensor, values: Tensor) -> None:
        """values [B, width] (or [B]) of the batch's samples, detached; on the device, no host sync."""
        if self.sums.device != y.device:
            self.sums, self.counts = self.sums.to(y.device), self.counts.to(y.device)
        v = values.detach().to(torch.float64).reshape(len(y), -1)
        self.sums.index_add_(0, y, v)
        self.counts.index_add_(0, y, torch.ones_like(self.counts[y]))

    def close(self) -> tuple[Tensor, Tensor]:
        """(sums, counts) of the epoch over all ranks; the tally starts empty again."""
        both = sum_over_ranks(torch.cat([self.sums, self.counts[:, None]], 1))
        self.sums, self.counts = torch.zeros_like(self.sums), torch.zeros_like(self.counts)
        return both[:, :-1], both[:, -1]

    def state_dict(self) -> dict:
        return {"sums": self.sums.cpu(), "counts": self.counts.cpu(), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts, self.epoch = state["sums"], state["counts"], state["epoch"]


class Calibrated(Objective):
    """An objective that tallies each epoch by class and derives a per-class tensor `classwise` from a closed
    epoch (CFA's r_c, DAFA's weights); both go into last.pt."""
    attack: Attack   # the calibrated objectives always attack

    def __init__(self, attack, num_classes: int, width: int = 1):
        super().__init__(attack, num_classes)
        self.tally = EpochTally(num_classes, width)
        self.classwise: Tensor | None = None   # None until an epoch has been closed

    def state_dict(self) -> dict:
        return {"tally": self.tally.state_dict(),
                "classwise": None if self.classwise is None else self.classwise.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.tally.load_state_dict(state["tally"])
            self.classwise = state["classwise"]
