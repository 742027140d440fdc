"""Data-parallel training under torchrun: torch.distributed + DistributedDataParallel.

`torchrun --nproc_per_node N -m taetlib train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; fit() then
joins the process group (NCCL on GPUs, gloo on CPU) and wraps the model in DDP. Run plainly, all of
this is a no-op (world_size 1) and fit() is the single-process loop, bit for bit.

What is split across ranks, and what is not:
- batch: cfg.batch_size is the global batch; each rank steps with batch_size // world_size, so 8 GPUs
  at batch_size=128 train with the papers' 128 images a step (16 a GPU). It must divide evenly.
- data: every rank draws the same permutation from (seed, epoch) and takes every world_size-th index
  (data.Batches(rank=, world_size=)), so the shards change every epoch. The permutation is padded by
  wrapping around to a multiple of world_size, as torch's DistributedSampler does, so every rank
  takes the same number of steps; up to world_size - 1 images are seen twice an epoch.
- per-batch statistics: BatchNorm (unless sync_bn, GPUs only) is taken over each rank's own batch.
  TAET's HARL class means are global: the per-class loss sums and counts are all-reduced
  differentiably (methods.base.class_means), so HARL's loss and gradients are those of the global
  batch. Per-sample losses (PGD-AT, TRADES, MART, AT-BSL, CE) average to the global-batch loss
  exactly, because DDP averages gradients over equal-sized rank batches.
- randomness: attack starts and crops differ per rank, seeded from (seed, epoch, rank).
- per-class train counts and losses: summed on the device through the epoch, all-reduced once at
  its end (never per step). In-training test evaluation is sharded (rank r takes every
  world_size-th image, no padding) and its per-class counts are all-reduced: exact totals.
- files: rank 0 alone writes config.json, history.jsonl, last.pt and model.pt; every rank reads
  last.pt when resuming, so run_dir must be on a filesystem all nodes share.
"""
from __future__ import annotations

import atexit
import gc
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .batches import Split
from .config import RunConfig
from .errors import bad

__all__ = ["DDP", "Dist", "all_sum", "barrier", "check", "check_same", "launched", "resolve_device", "setup", "shard",
           "sync_buffers", "teardown", "wrap"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True in a process started by torchrun with more than one worker."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(name: str) -> torch.device:
    """cfg.device -> a torch device: 'auto' is CUDA where there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join torchrun's process group (once per process); returns it and this rank's device
    (cuda:LOCAL_RANK on GPUs). Without torchrun: Dist() and the device unchanged."""
    if not launched():
        return Dist(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():   # fit() may run several times in one process (stage 1, then 2)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # env:// from torchrun
        atexit.register(teardown)
    return Dist(dist.get_rank(), dist.get_world_size()), device


def teardown() -> None:
    """Leave the process group while the interpreter is still whole (fit() registers it at exit).
    A DDP wrapper left to interpreter finalization (fit()'s is held in reference cycles) frees its
    gloo work from a C++ thread that then waits for the GIL, and the process aborts with SIGABRT
    ("terminate called without an active exception"): 2 exits in 30 on 2 ranks here. So collect
    such cycles first, then destroy the group."""
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def check(cfg: RunConfig, d: Dist, device: torch.device) -> None:
    """Settings that cannot work at this world size, refused before anything runs."""
    if cfg.batch_size % d.world_size:
        raise bad("batch_size", cfg.batch_size,
                  f"is the global batch and must split evenly over {d.world_size} processes; use a multiple of "
                  f"{d.world_size} (e.g. {cfg.batch_size - cfg.batch_size % d.world_size or d.world_size}).")
    if cfg.sync_bn and d.enabled and device.type != "cuda":
        raise bad("sync_bn", cfg.sync_bn,
                  "torch's SyncBatchNorm runs on GPUs only; with gloo on CPU set sync_bn=false.")


class DDP(DistributedDataParallel):
    """DistributedDataParallel whose eval-mode forward passes go to the bare module.

    The attack runs inside the training step under attacks.bn_eval (eval mode) and needs only input
    gradients; in-training evaluation needs none. Through the wrapper, every such pass would
    broadcast rank 0's BatchNorm buffers (one collective per attack step: K + 1 per training step
    instead of 1) and arm the gradient reducer for a backward that never reaches the parameters
    (with find_unused_parameters=True it would also walk the graph each time). On the bare module
    they are local computation with the same weights, since DDP keeps the replicas identical.
    Training forward passes (train mode) go through DDP, so each step's backward all-reduces the
    parameter gradients once.
    """

    def forward(self, *args, **kwargs):
        if self.training:
            return super().forward(*args, **kwargs)
        return self.module(*args, **kwargs)


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """DDP around the model when distributed (it broadcasts rank 0's weights); the model otherwise."""
    if not d.enabled:
        return model
    # 1-channel conv weights have ambiguous strides; DDP warns their grads need a copy into the bucket.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_sum(d: Dist, *tensors: Tensor) -> None:
    """In-place sum over ranks (per-class tallies, loss sums); a no-op in one process."""
    if d.enabled:
        for t in tensors:
            dist.all_reduce(t)


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Rank 0's BatchNorm running stats to every rank. DDP broadcasts them before each training forward,
    but that forward then updates each rank's copy with its own batch; once per epoch, before
    evaluation and the checkpoint, every rank is made to hold exactly the model rank 0 saves."""
    if d.enabled:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def shard(split: Split, d: Dist) -> Split:
    """Every world_size-th sample from this rank's offset: disjoint shards that cover the split once."""
    return split.take(torch.arange(d.rank, len(split), d.world_size)) if d.enabled else split


def check_same(d: Dist, what: str, value, fix: str) -> None:
    """Every rank must have read the same thing (e.g. the epoch last.pt ends at), or the ranks would
    train different epochs and deadlock; say so instead."""
    if not d.enabled:
        return
    values = [None] * d.world_size
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"{what} differs between ranks ({values}). Fix: {fix}")


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
