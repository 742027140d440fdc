"""Pure metric functions over label and prediction arrays (scikit-learn style).

A class with no evaluation sample has recall NaN and is left out of every mean; `summarize`
reports which classes were left out so a mean over fewer classes never passes silently.
"""
from __future__ import annotations

import numpy as np


def _as_int_array(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a).astype(np.int64).ravel()


def _num_classes(y_true, y_pred, num_classes):
    if num_classes is not None:
        return int(num_classes)
    return int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)


def per_class_counts(y_true, y_pred, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n_c, correct_c) per class."""
    y_true, y_pred = _as_int_array(y_true), _as_int_array(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}; they must match.")
    c = _num_classes(y_true, y_pred, num_classes)
    n = np.bincount(y_true, minlength=c)[:c]
    correct = np.bincount(y_true[y_true == y_pred], minlength=c)[:c]
    return n, correct


def per_class_recall(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """r_c = TP_c / (TP_c + FN_c); NaN for a class with no sample."""
    n, correct = per_class_counts(y_true, y_pred, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, correct / np.maximum(n, 1), np.nan)


def balanced_accuracy(y_true, y_pred, num_classes: int | None = None) -> float:
    """Mean per-class recall on clean predictions, over classes present in y_true."""
    return float(np.nanmean(per_class_recall(y_true, y_pred, num_classes)))


def balanced_robustness(y_true, y_adv_pred, num_classes: int | None = None) -> float:
    """TAET's balanced robustness: mean per-class recall on adversarial predictions."""
    return balanced_accuracy(y_true, y_adv_pred, num_classes)


def overall_accuracy(y_true, y_pred) -> float:
    y_true, y_pred = _as_int_array(y_true), _as_int_array(y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else float("nan")


def class_groups(train_counts) -> dict[str, np.ndarray]:
    """Head / medium / tail: thirds of the classes ranked by training count (ties keep label order)."""
    counts = np.asarray(train_counts)
    order = np.argsort(-counts, kind="stable")
    head, medium, tail = np.array_split(order, 3)
    return {"head": head, "medium": medium, "tail": tail}


def group_means(recall, train_counts) -> dict[str, float]:
    recall = np.asarray(recall, dtype=float)
    out = {}
    for name, idx in class_groups(train_counts).items():
        vals = recall[idx]
        out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def worst_class(recall) -> tuple[int, float]:
    recall = np.asarray(recall, dtype=float)
    if not np.isfinite(recall).any():
        return -1, float("nan")
    c = int(np.nanargmin(recall))
    return c, float(recall[c])


def summarize(y_true, y_pred, train_counts, num_classes: int | None = None) -> dict:
    """One row of a summary table: overall, balanced, head/medium/tail, worst class, absent classes."""
    num_classes = num_classes if num_classes is not None else len(train_counts)
    recall = per_class_recall(y_true, y_pred, num_classes)
    worst, worst_recall = worst_class(recall)
    return {
        "overall": overall_accuracy(y_true, y_pred),
        "balanced": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
        **group_means(recall, train_counts),
        "worst_class": worst,
        "worst_recall": worst_recall,
        "absent_classes": [int(c) for c in np.flatnonzero(np.isnan(recall))],
    }
