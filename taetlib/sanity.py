"""Sanity flags of an evaluation (evaluate.py): one row per check, raised or not.

Sanity flags are always computed, listed in `.flags` (passing checks too) and named in the summary
row they concern. They catch broken evaluations, gradient masking above all:
  eps0_not_clean         PGD at eps = 0 must give exactly the clean predictions' counts.
  rises_with_eps         robust accuracy must not rise with eps (curves from the eps sweep).
  <strong>_above_<weak>  a stronger attack must not score above a weaker one on the same samples:
                         pgd20 vs fgsm, pgd100 vs pgd20, autoattack vs pgd20 / pgd100 / cw20.
  robust_above_clean     no attack may score above clean accuracy.
  zero_gradients         samples whose input gradient is exactly zero (a masked, e.g. quantised,
                         model): gradient attacks cannot work there.
  autoattack_warnings    warnings pyautoattack logged (its own checks: zero gradients, randomness...).
Not a failure but a warning (small_classes): classes with fewer than SMALL_N test images in a protocol.
One image moves their recall by 1/n and a 95 % interval spans about +-1/sqrt(n) (+-18 points at 30), so
per-class and tail numbers there mean little (CIFAR-100-LT's long-tailed tail, DermaMNIST's balanced set).
Noise rule, for every "above" check: recall a is above recall b on n samples when
a - b > NOISE_Z * sqrt(2 p (1 - p) / n), p = (a + b) / 2: the standard error of the difference of two
binomial proportions. Treating the two as independent overstates the noise of a paired comparison
(same samples), so the rule errs towards silence; it is applied per class and to the pooled counts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .attack_suite import SWEEP_ATTACK

__all__ = ["NOISE_Z", "ORDER", "SMALL_N", "above_noise", "sanity_flags", "small_classes"]

NOISE_Z = 2.0
# Pairs (stronger, weaker): the stronger one must not score above the weaker one beyond noise.
ORDER = (("pgd20", "fgsm"), ("pgd100", "pgd20"), ("autoattack", "pgd20"), ("autoattack", "pgd100"),
         ("autoattack", "cw20"))

SMALL_N = 30   # test images per class below which the small_classes flag is raised


def above_noise(r_hi, r_lo, n, z: float = NOISE_Z) -> np.ndarray:
    """Where recall r_hi is above r_lo (both on n samples) by more than z standard errors."""
    r_hi, r_lo, n = (np.asarray(v, dtype=float) for v in (r_hi, r_lo, n))
    p = (r_hi + r_lo) / 2
    se = np.sqrt(np.clip(2 * p * (1 - p), 0, None) / np.maximum(n, 1))
    return (n > 0) & (r_hi - r_lo > z * se)


def _classes_text(df: pd.DataFrame, diff) -> str:
    return ", ".join(f"{c} ({name}) {d:+.3f}" for c, name, d in zip(df["class"], df["class_name"], diff))


def _compare(flag, attack, protocol, hi: pd.DataFrame, lo: pd.DataFrame, what: str, exact=False) -> dict:
    """One flag row: is `hi` above `lo` per class (named) or pooled? exact=True: any difference."""
    hi, lo = hi.sort_values("class"), lo.sort_values("class")
    r_hi, r_lo, n = hi["recall"].to_numpy(), lo["recall"].to_numpy(), hi["n"].to_numpy()
    pooled_hi, pooled_lo, N = hi["correct"].sum() / max(n.sum(), 1), lo["correct"].sum() / max(n.sum(), 1), n.sum()
    if exact:
        bad_cls = hi["correct"].to_numpy() != lo["correct"].to_numpy()
        pooled = pooled_hi != pooled_lo
    else:
        bad_cls = above_noise(r_hi, r_lo, n)
        pooled = bool(above_noise(pooled_hi, pooled_lo, N))
    raised = bool(bad_cls.any() or pooled)
    detail = f"{what}: overall {pooled_hi:.3f} vs {pooled_lo:.3f}"
    if bad_cls.any():
        detail += "; classes " + _classes_text(hi[bad_cls], (r_hi - r_lo)[bad_cls])
    return _flag(flag, attack, protocol, hi["class"][bad_cls].tolist(), raised, detail)


def _flag(flag, attack, protocol, classes, raised, detail) -> dict:
    return {"flag": flag, "attack": attack, "protocol": protocol, "classes": ",".join(map(str, classes)),
            "raised": bool(raised), "detail": detail}


def sanity_flags(table: pd.DataFrame, curves: pd.DataFrame, zero_grad: pd.DataFrame | None = None,
                 warnings: pd.DataFrame | None = None, curve_clean: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every sanity check (module docstring) as one row; `raised` says whether it failed.
    curve_clean: clean counts on the images the curves ran on, when that is a subset."""
    rows = []
    for protocol, tab in table.groupby("protocol", sort=False):
        clean = tab[tab.attack == "clean"]
        if curve_clean is not None:
            clean = curve_clean[curve_clean.protocol == protocol]
        cur = curves[curves.protocol == protocol]
        # 1. eps = 0 gives the clean counts exactly: the attack may not change an unperturbed input.
        at0 = cur[cur.eps == 0]
        if len(at0) and len(clean):
            rows.append(_compare("eps0_not_clean", SWEEP_ATTACK, protocol, at0, clean,
                                 "PGD at eps=0 vs clean", exact=True))
        # 2. accuracy does not rise with eps: each radius vs the lowest recall at any smaller one.
        rows.append(_rises_with_eps(cur, protocol))
        clean = tab[tab.attack == "clean"]
        # 3. stronger attacks not above weaker ones; the sweep stands in for a pgd20 that was not asked for
        ref = {a: t for a, t in tab.groupby("attack")}
        for strong, weak in ORDER:
            if strong not in ref:
                continue
            a = ref[strong]
            b = ref.get(weak, cur[np.isclose(cur.eps, a.eps.iloc[0])] if weak == SWEEP_ATTACK else None)
            if b is None or not len(b):
                continue
            if not np.isclose(a.eps.iloc[0], b.eps.iloc[0]):
                rows.append(_flag(f"{strong}_above_{weak}", strong, protocol, [], False,
                                  f"skipped: {strong} ran at eps={a.eps.iloc[0]:g}, {weak} at {b.eps.iloc[0]:g}"))
                continue
            rows.append(_compare(f"{strong}_above_{weak}", strong, protocol, a, b, f"{strong} vs {weak}"))
        # 4. no attack above clean
        for attack, t in tab.groupby("attack", sort=False):
            if attack != "clean" and len(clean):
                rows.append(_compare("robust_above_clean", attack, protocol, t, clean, f"{attack} vs clean"))
        # 5. exactly-zero input gradients
        if zero_grad is not None:
            z = zero_grad[zero_grad.protocol == protocol].sort_values("class")
            hit = z[z.zero_gradient > 0]
            detail = (f"{int(z.zero_gradient.sum())} of {int(z.n.sum())} samples have an exactly-zero input "
                      "gradient (gradient masking, e.g. a quantised input): gradient attacks are blind there")
            if len(hit):
                detail += "; classes " + ", ".join(f"{c} ({nm}) {k}/{n}" for c, nm, k, n in
                                                   zip(hit["class"], hit.class_name, hit.zero_gradient, hit.n))
            rows.append(_flag("zero_gradients", "all", protocol, hit["class"].tolist(), len(hit) > 0, detail))
        # 6. pyautoattack's own warnings
        if warnings is not None and "autoattack" in set(tab.attack):
            w = warnings[warnings.protocol == protocol]["message"].tolist()
            rows.append(_flag("autoattack_warnings", "autoattack", protocol, [], len(w) > 0,
                              " | ".join(dict.fromkeys(w)) or "no warnings"))
    return pd.DataFrame(rows, columns=["flag", "attack", "protocol", "classes", "raised", "detail"])


def small_classes(table: pd.DataFrame) -> dict[str, str]:
    """protocol -> 'name (n=..), ...' of its classes with fewer than SMALL_N test images ('' when none)."""
    out = {}
    for protocol, tab in table.groupby("protocol", sort=False):
        few = tab.drop_duplicates("class").query("n < @SMALL_N")   # n is the protocol's, whatever the attack
        out[protocol] = ", ".join(f"{nm} (n={n})" for nm, n in zip(few.class_name, few.n))
    return out


def _rises_with_eps(cur: pd.DataFrame, protocol: str) -> dict:
    eps_values = sorted(cur.eps.unique())
    if len(eps_values) < 2:
        return _flag("rises_with_eps", SWEEP_ATTACK, protocol, [], False, "skipped: fewer than two radii")
    correct = cur.pivot(index="class", columns="eps", values="correct")[eps_values].to_numpy(float)
    n = cur.pivot(index="class", columns="eps", values="n")[eps_values].to_numpy(float)
    recall = correct / np.maximum(n, 1)
    low_so_far = np.minimum.accumulate(recall, axis=1)[:, :-1]
    per_class = above_noise(recall[:, 1:], low_so_far, n[:, 1:])
    pooled = correct.sum(0) / max(n[:, 0].sum(), 1)
    pooled_bad = above_noise(pooled[1:], np.minimum.accumulate(pooled)[:-1], n[:, 0].sum())
    bad_cls = per_class.any(1) & (n[:, 0] > 0)
    names = cur.drop_duplicates("class").set_index("class").loc[:, "class_name"]
    detail = "overall recall by eps " + ", ".join(f"{e:g}: {r:.3f}" for e, r in zip(eps_values, pooled))
    if bad_cls.any():
        classes = np.flatnonzero(bad_cls)
        detail += "; rises in classes " + ", ".join(
            f"{c} ({names[c]}) at eps={eps_values[1 + int(np.argmax(per_class[c]))]:g}" for c in classes)
    return _flag("rises_with_eps", SWEEP_ATTACK, protocol, np.flatnonzero(bad_cls).tolist(),
                 bad_cls.any() or pooled_bad.any(), detail)
