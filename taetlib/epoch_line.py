"""The line fit() prints after each epoch: the epoch counted as the user asked for it, the loss, train and
test accuracy, FAWA's step, speed and the time left; and the peak memory an epoch record holds."""
from __future__ import annotations

import resource

import torch

from .config import RunConfig
from .selection import balanced

__all__ = ["epoch_count", "peak_memory_mb", "progress_line"]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # process peak RSS (Linux: KiB)


def epoch_count(cfg: RunConfig, epoch: int) -> tuple[int, int]:
    """(n, of): the epoch counted in what the user asked for: TAET's stage 1 (under the equal budget, the
    stabilization_epochs before the adversarial ones) on its own, then the `epochs` epochs."""
    before = cfg.clean_epochs_before()
    return (epoch, before) if epoch <= before else (epoch - before, cfg.epochs)


def progress_line(r: dict, count: tuple[int, int], eta: float) -> str:
    def acc(name):
        v = balanced(r[name])
        return "-" if v is None else f"{v:.3f}"
    line = (f"epoch {count[0]}/{count[1]} [{r['stage']}] loss {r['loss']:.4f} | "
            f"train clean {acc('train_clean_acc')} adv {acc('train_adv_acc')}")
    if r["test_clean_acc"] is not None:
        line += f" | test clean {acc('test_clean_acc')} pgd {acc('test_pgd_acc')}"
    if r.get("fawa_worst") is not None:
        line += (f" | fawa worst class {r['fawa_worst']:.3f}: {'updated' if r['fawa_updated'] else 'kept'}, "
                 f"{r['fawa_updates']} update(s)")
    return line + f" | {r['seconds']:.1f} s/epoch, {r['images_per_s']:.0f} img/s | ETA {eta:.0f} s"
