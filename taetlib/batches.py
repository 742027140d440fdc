"""A split's uint8 tensors (Split) and on-device mini-batches of them (Batches).

Training batches come from uint8 tensors held on the run's device; crop and flip are vectorised over
the batch there. The order of each epoch is a pure function of (seed, epoch), and under DDP each rank
takes its shard of the same permutation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, Registry, check_choice

__all__ = ["AUGMENTS", "Batches", "Split", "crop_flip", "epoch_generator", "policy_augment", "policy_op",
           "select_per_class", "shard_order"]

# name -> what it does to a training batch (Batches.epoch applies them)
AUGMENTS = Registry("augment", {
    "none": "no augmentation",
    "crop_flip": "random crop with zero padding and horizontal flip, vectorised on the device",
    "autoaugment": "torchvision AutoAugment, image by image, then crop_flip",
    "randaugment": "torchvision RandAugment(2, 8), image by image, then crop_flip",
})


def select_per_class(y: np.ndarray, counts, rng: np.random.Generator) -> np.ndarray:
    """Seeded choice of counts[c] indices of each class c; returned sorted (stable order on disk)."""
    picked = []
    for c, n in enumerate(counts):  # runs once when a split is built, not in training
        idx = np.flatnonzero(y == c)
        if n > idx.size:
            raise ConfigError(f"class {c} has {idx.size} samples but the profile asks for {n}; "
                              "lower n_max / test_per_class.")
        picked.append(rng.permutation(idx)[:n])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


@dataclass
class Split:
    x: torch.Tensor  # uint8 [N, C, H, W]
    y: torch.Tensor  # int64 [N]
    index: torch.Tensor | None = None  # positions in the source split, for the record

    def __len__(self) -> int:
        return int(self.y.numel())

    def counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.y.cpu(), minlength=num_classes).tolist()

    def float(self) -> torch.Tensor:
        return self.x.float().div_(255)

    def positions(self) -> torch.Tensor:
        """Each image's position in the source split (its own order when it was not taken from one)."""
        return self.index if self.index is not None else torch.arange(len(self))

    def take(self, idx) -> Split:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Split(self.x[idx], self.y[idx], self.positions()[idx])

    def subset_per_class(self, k: int | None, seed: int = 0) -> Split:
        """Seeded stratified subset: at most k samples of each class (None = everything)."""
        if k is None:
            return self
        y = self.y.cpu().numpy()
        counts = np.minimum(np.bincount(y), k)
        return self.take(select_per_class(y, counts, np.random.default_rng(seed)))


# ---------------------------------------------------------------------------------------- batching
def epoch_generator(seed: int, epoch: int, device) -> torch.Generator:
    """Randomness of one epoch is a pure function of (seed, epoch): resuming mid-run is exact."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


def crop_flip(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, vectorised over the batch."""
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (B, 1), generator=g, device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (B, 1), generator=g, device=x.device)
    flip = torch.rand(B, generator=g, device=x.device) < 0.5
    rows = oy + torch.arange(H, device=x.device)                       # [B, H]
    cols = ox + torch.arange(W, device=x.device)                       # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)              # flipping = reading columns backwards
    b = torch.arange(B, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


def policy_op(kind: str):
    """AutoAugment with the CIFAR10 policy (torchvision's default is ImageNet's), as AT-BSL's
    train_at_bsl_cifar10.py and RobustLT's cifar10lt.py use it; or RandAugment(2, 8) as AT-BSL's."""
    from torchvision.transforms import v2  # only the optional policy path needs it; deferred for start-up time
    if kind == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    return v2.RandAugment(num_ops=2, magnitude=8)


def policy_augment(x: torch.Tensor, kind: str) -> torch.Tensor:
    """AutoAugment / RandAugment per `policy_op`, via torchvision v2 on uint8 tensors.

    torchvision draws one op per call, so this path goes image by image: the optional, slower path.
    """
    op = policy_op(kind)
    return torch.stack([op(img) for img in x])  # draws from torch's global RNG, seeded per epoch by fit()


def shard_order(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Every world_size-th entry from `rank`, after padding `order` by wrapping around to a multiple of
    world_size (torch's DistributedSampler rule): every rank gets as many samples, so as many steps."""
    padded = torch.arange(math.ceil(len(order) / world_size) * world_size, device=order.device) % len(order)
    return order[padded[rank::world_size]]


class Batches:
    """Mini-batches from uint8 tensors moved to `device` once; yields float [0,1] images and labels."""

    def __init__(self, split: Split, batch_size: int, device, *, shuffle: bool, augment: str = "none",
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        check_choice("augment", augment, AUGMENTS)
        self.x = split.x.to(device)
        self.y = split.y.to(device)
        self.batch_size, self.device, self.shuffle = batch_size, torch.device(device), shuffle
        self.augment, self.seed, self.drop_last = augment, seed, drop_last
        self.pad = max(1, self.x.shape[-1] // 8)  # 4 px at 32x32, as in the papers; 3 px at 28x28
        self.rank, self.world_size = rank, world_size  # DDP: this process takes its shard of each epoch

    def __len__(self) -> int:
        n = math.ceil(len(self.y) / self.world_size)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int):
        n = len(self.y)
        g = epoch_generator(self.seed, epoch, self.device)
        order = torch.randperm(n, generator=g, device=self.device) if self.shuffle else None
        if self.world_size > 1:  # same permutation on every rank; rank r takes its slice of it
            order = shard_order(order if order is not None else torch.arange(n, device=self.device),
                                self.rank, self.world_size)
            n = len(order)
            g.manual_seed(g.initial_seed() * self.world_size + self.rank)  # each rank its own crops and flips
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min((i + 1) * self.batch_size, n))
            idx = order[sl] if order is not None else sl
            x, y = self.x[idx], self.y[idx]
            if self.augment in ("autoaugment", "randaugment"):
                x = policy_augment(x, self.augment)
            x = x.float().div_(255)
            if self.augment != "none":
                x = crop_flip(x, self.pad, g)
            yield x, y

    def __iter__(self):
        return self.epoch(0)
