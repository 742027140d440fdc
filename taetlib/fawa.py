"""FAWA, CFA's fairness-aware weight average (Wei, Wang, Guo, Wang, CVPR 2023), as a way to choose the
weights a run keeps (select='fawa'), for any method.

Official: PKU-ML/CFA @ 071f333. train.py L171-177 keeps a second model beside the one trained; L240-258, after
every epoch, attack the validation split (eval_epoch: PGD-10, 8/255, step 2/255, a uniform start clamped to
[0,1], BatchNorm in eval mode) and read the worst class's robust accuracy R_min as the CW_log logger counts it
(L49-80: C * correct_c / N, N all validation images); utils.py L115-124 (weight_average) then sets
    R_min >= threshold, the first such epoch:  W_fawa = W                                (init)
    R_min >= threshold, later:                 W_fawa = decay W_fawa + (1 - decay) W
    otherwise:                                 W_fawa unchanged
for every entry of the state_dict, BatchNorm's running statistics and counters included (an integer entry is
computed in float and truncated back, as load_state_dict's copy does). CIFAR-10: decay 0.88, threshold 0.24
(--decay-rate, --threshold; the README's AT command uses 0.2); generate_validation.py holds out the first 100
training images of each class, without augmentation.
Here: the validation split is selection.hold_out's seeded stratified share of each class (cfg.val_fraction;
100 per class cannot come out of a long-tailed tail class), attacked after every adversarial epoch with
cfg.eval_pgd_steps steps of eps / 4 from the uniform start the official code uses. The official FAWA model
starts from random weights, which it keeps when no epoch reaches the threshold; here the run then keeps its
last epoch's weights and records fawa_updates 0 (train.finish says so). On a long-tailed split the logger's
count scales each class's accuracy by its share of the split (it equals per-class recall only on a balanced
one), so tail classes rarely reach the threshold; fawa_class_acc='recall' reads correct_c / n_c instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CLASS_ACC", "FAWA", "average_into", "class_robust_acc", "worst_class"]

CLASS_ACC = ("official", "recall")


def class_robust_acc(correct: Tensor, counts: Tensor, rule: str = "official") -> Tensor:
    """Per-class accuracy from per-class correct counts: official C * correct_c / N (CFA's CW_log), or recall
    correct_c / n_c."""
    if rule == "official":
        return len(counts) * correct / counts.sum().clamp(min=1)
    return correct / counts.clamp(min=1)


def worst_class(correct: list[int], counts: list[int], rule: str = "official") -> float:
    """R_min: the lowest class value; under recall, over the classes the split holds (the logger's count
    gives an absent class 0)."""
    values = class_robust_acc(torch.tensor(correct, dtype=torch.float64), torch.tensor(counts, dtype=torch.float64),
                              rule)
    present = values if rule == "official" else values[torch.tensor(counts) > 0]
    return float(present.min()) if len(present) else 0.0


def average_into(average: dict[str, Tensor], current: dict[str, Tensor], decay: float) -> dict[str, Tensor]:
    """decay * average + (1 - decay) * current per entry, each in its own dtype (utils.weight_average)."""
    return {k: (v * decay + current[k] * (1 - decay)).to(v.dtype) for k, v in average.items()}


@dataclass
class FAWA:
    """The averaged weights (None until the first epoch that reaches the threshold) and how often they moved."""
    decay: float
    threshold: float
    weights: dict[str, Tensor] | None = None
    updates: int = 0

    def step(self, current: dict[str, Tensor], worst: float) -> bool:
        """One epoch's decision on R_min = worst; True when the average took `current` in."""
        if worst < self.threshold:
            return False
        snapshot = {k: v.detach().clone() for k, v in current.items()}
        self.weights = snapshot if self.weights is None else average_into(self.weights, snapshot, self.decay)
        self.updates += 1
        return True

    def state_dict(self) -> dict:
        return {"weights": self.weights, "updates": self.updates}

    def load_state_dict(self, state: dict | None) -> None:
        state = state or {}
        self.weights, self.updates = state.get("weights"), state.get("updates", 0)
