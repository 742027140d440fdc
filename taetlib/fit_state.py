"""What fit()'s steps share (`Training`: the run's settings, model, optimiser, data and history so far),
what fit() returns (`FitResult`) and the error it stops with when the loss diverges."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from . import numerics
from .batches import Batches
from .config import RunConfig
from .distributed import Dist
from .eval_result import per_class_epochs
from .fawa import FAWA
from .methods import Objective

__all__ = ["FitResult", "Training", "TrainingDiverged"]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict]
    run_dir: Path
    class_names: tuple = ()
    complete: bool = True      # False: stopped by stop_after before the stage's last epoch

    def per_class(self, split: str = "test", kind: str = "pgd") -> pd.DataFrame:
        """Class x epoch: the recall of each class at each epoch `split` ('test', 'val', 'train') was
        measured with `kind` ('clean', 'pgd'; train: 'clean', 'adv'), with its Wilson 95 % interval."""
        return per_class_epochs(self.history, split, kind, self.class_names)


@dataclass
class Training:
    """What fit's steps share: the run's settings, model, optimiser, data and the history so far."""
    cfg: RunConfig
    run_dir: Path
    stage: str
    epochs: range                      # the stage's absolute epochs
    dist: Dist
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    class_names: tuple
    num: numerics.Numerics             # what the numeric settings resolve to on this device
    history: list = field(default_factory=list)
    start: int = 1                     # the first epoch this call trains
    extension: dict | None = None      # set when this call extends a run (resume.check_resume)
    # prepare() sets these three, before the first epoch
    objective: Objective = field(init=False)
    net: nn.Module = field(init=False)   # the model as trained: compiled and / or DDP-wrapped
    train_batches: Batches = field(init=False)
    val_batches: Batches | None = None    # select needs a validation split
    eval_batches: Batches | None = None   # eval_every > 0
    counts: dict = field(default_factory=dict)   # per-class image counts of the evaluated splits
    eval_eps: float = 0.0
    n_images: int = 0                  # training images per epoch (all ranks)
    fawa: FAWA | None = None           # select='fawa': the fairness-aware weight average so far
    session_seconds: list = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "last.pt"
