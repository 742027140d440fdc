"""Which weights a run keeps: the last epoch's (TAET, RobustLT), with select='best_val_pgd' the
epoch with the best balanced PGD accuracy on a validation split held out of the training set, or with
select='fawa' CFA's fairness-aware weight average, steered by the same split (fawa.py).
AT-BSL's script picks its epoch on the test set; nothing here ever reads the test set."""
from __future__ import annotations

import numpy as np

from .batches import Split, select_per_class
from .config import RunConfig

__all__ = ["balanced", "best_epoch", "hold_out", "validation_split"]


def balanced(acc: list | None) -> float | None:
    """Mean of the per-class values measured (None where a class was not seen)."""
    vals = [a for a in (acc or []) if a is not None]
    return sum(vals) / len(vals) if vals else None


def validation_split(train: Split, cfg: RunConfig, num_classes: int) -> tuple[Split, Split | None]:
    """(training images, validation images): for select='best_val_pgd' or 'fawa', a seeded stratified
    val_fraction of each class (at least one image where a class has two) is held out of training;
    otherwise (train, None)."""
    if cfg.select == "last":
        return train, None
    return hold_out(train, cfg.val_fraction, cfg.seed, num_classes)


def hold_out(train: Split, fraction: float, seed: int, num_classes: int) -> tuple[Split, Split]:
    """(the rest, a seeded stratified `fraction` of each class, at least one image where a class has two)."""
    y = train.y.cpu().numpy()
    n = np.bincount(y, minlength=num_classes)
    k = np.where(n >= 2, np.maximum(np.floor(n * fraction), 1), 0).astype(int)
    val = select_per_class(y, k, np.random.default_rng(seed + 7919))   # a stream of its own
    keep = np.setdiff1d(np.arange(len(y)), val)
    return train.take(keep), train.take(val)


def best_epoch(history: list[dict]) -> int | None:
    """The epoch with the highest balanced validation PGD accuracy (the earliest of ties), if any."""
    scored = [(balanced(r["val_pgd_acc"]), -r["epoch"]) for r in history if r.get("val_pgd_acc")]
    return -max(scored)[1] if scored else None
