"""Pure metric functions over label and prediction arrays (scikit-learn style).

A class with no evaluation sample has recall NaN and is left out of every mean; `summarize`
reports which classes were left out so a mean over fewer classes never passes silently.
"""
from __future__ import annotations

import numpy as np

__all__ = ["GROUPINGS", "balanced_accuracy", "balanced_robustness", "class_groups", "effective_images", "group_means",
           "overall_accuracy", "per_class_counts", "per_class_recall", "summarize", "weakest_k", "worst_class"]


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


GROUPINGS = ("thirds", "taet_tail", "robustlt_tail")


def _by_rarity(train_counts) -> np.ndarray:
    """Classes from most to least frequent in training (ties keep label order)."""
    return np.argsort(-np.asarray(train_counts), kind="stable")


def class_groups(train_counts, grouping: str = "thirds") -> dict[str, np.ndarray]:
    """Classes by training count, under one paper's definition:
    thirds        head / medium / tail: thirds of the classes (this workbench's default view);
    taet_tail     head / tail: the rarer half is TAET's tail (classes 5-9 of CIFAR-10-LT);
    robustlt_tail head / tail: the 80 % rarest classes are RobustLT's tail (the first int(0.2 C) are head)."""
    order = _by_rarity(train_counts)
    if grouping == "thirds":
        head, medium, tail = np.array_split(order, 3)
        return {"head": head, "medium": medium, "tail": tail}
    n_head = {"taet_tail": len(order) - len(order) // 2, "robustlt_tail": int(0.2 * len(order))}.get(grouping)
    if n_head is None:
        raise ValueError(f"grouping={grouping!r}: unknown; choose one of {list(GROUPINGS)}.")
    return {"head": order[:n_head], "tail": order[n_head:]}


def _nanmean(vals) -> float:
    vals = np.asarray(vals, dtype=float)
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def group_means(recall, train_counts, grouping: str = "thirds") -> dict[str, float]:
    """Mean recall per group of `class_groups(train_counts, grouping)`."""
    recall = np.asarray(recall, dtype=float)
    return {name: _nanmean(recall[idx]) for name, idx in class_groups(train_counts, grouping).items()}


def weakest_k(recall, k: int | None = None) -> tuple[np.ndarray, float]:
    """The k classes with the lowest recall (k = ceil(C/3), as many as a third, by default) and
    their mean: weakness need not follow rarity, so it is reported beside the tail."""
    recall = np.asarray(recall, dtype=float)
    present = np.flatnonzero(np.isfinite(recall))
    k = int(np.ceil(len(recall) / 3)) if k is None else int(k)
    if k < 1:
        raise ValueError(f"k={k}: must be >= 1.")
    idx = present[np.argsort(recall[present], kind="stable")][:k]
    return idx, _nanmean(recall[idx])


def effective_images(images_per_class) -> float:
    """The images a mean of class rates weighs as, k^2 / sum_c 1/n_c: at one common rate its variance is a
    single proportion's over that many images (k n where the classes hold n each; near the rarest class's
    count times k where they do not)."""
    n = np.asarray(images_per_class, dtype=float)
    n = n[n > 0]
    return float(len(n) ** 2 / (1 / n).sum()) if len(n) else float("nan")


def worst_class(recall) -> tuple[int, float]:
    recall = np.asarray(recall, dtype=float)
    if not np.isfinite(recall).any():
        return -1, float("nan")
    c = int(np.nanargmin(recall))
    return c, float(recall[c])


def summarize(y_true, y_pred, train_counts, num_classes: int | None = None) -> dict:
    """One row of a summary table: overall, balanced, head/medium/tail (thirds), TAET's and RobustLT's
    tails, the worst class, the mean of the weakest ceil(C/3) classes and which they are, absent classes."""
    num_classes = num_classes if num_classes is not None else len(train_counts)
    recall = per_class_recall(y_true, y_pred, num_classes)
    worst, worst_recall = worst_class(recall)
    weakest, weakest_mean = weakest_k(recall)
    return {
        "overall": overall_accuracy(y_true, y_pred),
        "balanced": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
        **group_means(recall, train_counts),
        "tail_taet": group_means(recall, train_counts, "taet_tail")["tail"],
        "tail_robustlt": group_means(recall, train_counts, "robustlt_tail")["tail"],
        "worst_class": worst,
        "worst_recall": worst_recall,
        "weakest_k": weakest_mean,
        "weakest_classes": [int(c) for c in weakest],
        "absent_classes": [int(c) for c in np.flatnonzero(np.isnan(recall))],
    }
