"""The worst case per image over several attacks, as AutoAttack counts: an image is robust only if it is
classified correctly under every attack. CE-PGD alone flatters some losses (label smoothing, cosine heads,
instance reweighting), so the study's claims are read on this combination of PGD-20, APGD-CE and APGD-T.

It works on per-image predictions the attacks already made on the same images (evaluate.py saves them),
so it costs nothing beyond the attacks and can be recomputed from predictions.npz.
"""
from __future__ import annotations

import numpy as np

from .errors import bad

__all__ = ["DEFAULT", "NAME", "check_components", "worst_case"]

NAME = "worst_case"                              # its attack name in evaluate's tables
DEFAULT = ("pgd20", "apgd_ce", "apgd_t")         # the study's combination


def worst_case(y: np.ndarray, predictions: dict[str, np.ndarray]) -> np.ndarray:
    """Per-image prediction under the worst of the attacks: the first attack's (in the given order) wrong
    prediction where any attack broke the image, the true label where none did."""
    if not predictions:
        raise bad("worst_case", [], "name at least one attack whose predictions to combine.")
    y = np.asarray(y)
    out = y.copy()
    broken = np.zeros(len(y), dtype=bool)
    for name, pred in predictions.items():
        pred = np.asarray(pred)
        if pred.shape != y.shape:
            raise bad("worst_case", name, f"its predictions have shape {pred.shape}, the labels {y.shape}: combine "
                      "predictions made on the same images, in the same order.")
        newly = (pred != y) & ~broken
        out[newly] = pred[newly]
        broken |= newly
    return out


def check_components(components, attacks) -> list[str]:
    """The attacks to combine: at least two, each one that evaluate runs (not 'clean', nor the combination)."""
    components = list(components)
    if len(components) < 2 or len(set(components)) < len(components):
        raise bad("worst_case", components, "name two or more different attacks, e.g. "
                  f"{list(DEFAULT)}, or leave it empty for no worst-case reading.")
    missing = [a for a in components if a not in attacks or a in ("clean", NAME)]
    if missing:
        raise bad("worst_case", components, f"{missing} are not among the attacks run ({list(attacks)}); add them to "
                  "attacks, or drop them from worst_case.")
    return components
