"""Study B's analyses (pure: tidy tables in, tables and readings out).

Rarity or difficulty? Per run and class, robust recall on the balanced test set (every class with the
same test images) against the log of the class's training count, with run and class as fixed effects:

    recall[r, c] = run[r] + class[c] + slope * log(n_train[r, c]) + e[r, c]

A class's identity (its intrinsic difficulty) is the same under every class order while its training
count changes, so the slope is identified by the class_order contrast alone: under one order, count and
class are collinear and no fit can tell rarity from difficulty. The run effect absorbs each arm's and
seed's overall level. OLS (statsmodels) with heteroscedasticity-robust (HC3) errors and a t interval;
tests/test_study_b.py checks its coverage by simulation against a known slope.

HARL's negative class weights: from each TAET run's recorded `class_weight` (history.jsonl, the mean
weight per class and epoch), the share of class-epochs where the weight was negative (the class's loss
lay more than alpha / (2 beta) below the batch's mean class loss); where the run recorded it
(`class_weight_negative`), the share of batches in which it was, since single batches can ascend a class
whose epoch mean stays positive; and whether the classes with more
negative epochs lose robust recall against AT-BSL on the same seed and class order (a - b per class,
regressed on the share; class fixed effects separate this from the classes' own difficulty; errors
clustered by run).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from .history import history_tables

__all__ = ["LEVEL", "class_effects", "negative_shares", "rarity_slope", "rarity_slopes", "recall_deltas",
           "weight_association"]

LEVEL = 0.95


def _reading(fit, name: str) -> dict:
    low, high = fit.conf_int(alpha=1 - LEVEL).loc[name]
    return {"estimate": float(fit.params[name]), "se": float(fit.bse[name]), "low": float(low), "high": float(high),
            "p": float(fit.pvalues[name]), "rows": int(fit.nobs), "df": float(fit.df_resid)}


def _design(per_class: pd.DataFrame) -> pd.DataFrame:
    need = {"run", "class_name", "recall", "train_count"}
    missing = sorted(need - set(per_class.columns))
    if missing:
        raise KeyError(f"per-class table lacks {missing}: give evaluate's per_class rows with run columns")
    d = per_class[per_class["train_count"] > 0].copy()
    return d.assign(log_n=np.log(d["train_count"].astype(float)), run=d["run"].astype(str))


def _identified(d: pd.DataFrame) -> bool:
    return not d.empty and d.groupby("class_name")["log_n"].nunique().max() > 1


def rarity_slope(per_class: pd.DataFrame) -> dict | None:
    """The slope of robust recall on log training count with run and class fixed effects: its estimate,
    HC3 standard error, 95 % t interval, p, rows. None when the counts do not vary within a class (a
    single class order): the slope is not identified."""
    d = _design(per_class)
    if not _identified(d):
        return None
    fit = smf.ols("recall ~ C(run) + C(class_name) + log_n", d).fit(cov_type="HC3", use_t=True)
    return _reading(fit, "log_n")


def rarity_slopes(per_class: pd.DataFrame, by: str) -> pd.DataFrame | None:
    """One slope per value of column `by` (e.g. the arm without its class order), in one fit with run and
    class fixed effects (an interaction); nan for a value whose runs hold one class order."""
    d = _design(per_class)
    if not _identified(d):
        return None
    groups = list(dict.fromkeys(d[by]))
    d = d.assign(_g=pd.Categorical(d[by], categories=groups))
    fit = smf.ols("recall ~ C(run) + C(class_name) + log_n:_g", d).fit(cov_type="HC3", use_t=True)
    rows = []
    for g in groups:
        name = f"log_n:_g[{g}]"
        none = {"estimate": np.nan, "se": np.nan, "low": np.nan, "high": np.nan, "p": np.nan}
        rows.append({by: g, **(_reading(fit, name) if _identified(d[d["_g"] == g]) and name in fit.params
                               else none)})
    return pd.DataFrame(rows)


def class_effects(per_class: pd.DataFrame) -> pd.DataFrame | None:
    """Each class's robust recall at equal training count, against the mean class (the fixed effects of
    rarity_slope's model, centred), with HC3 95 % intervals: the intrinsic difficulty, rarity taken out.
    None where the slope is not identified."""
    d = _design(per_class)
    if not _identified(d):
        return None
    fit = smf.ols("recall ~ C(run) + C(class_name) + log_n", d).fit(cov_type="HC3", use_t=True)
    classes = sorted(d["class_name"].unique())
    names = list(fit.params.index)
    cols = {c: names.index(f"C(class_name)[T.{c}]") for c in classes[1:]}   # the first is the reference
    rows = []
    for c in classes:
        L = np.zeros(len(names))
        L[list(cols.values())] = -1 / len(classes)   # class_c - mean over classes, in the reference's coding
        if c in cols:
            L[cols[c]] += 1
        t = fit.t_test(L)
        low, high = np.asarray(t.conf_int(alpha=1 - LEVEL)).ravel()
        rows.append({"class_name": c, "effect": float(np.asarray(t.effect).ravel()[0]), "low": float(low),
                     "high": float(high)})
    return pd.DataFrame(rows).sort_values("effect").reset_index(drop=True)


def negative_shares(records: list[dict], class_names=None) -> pd.DataFrame:
    """One run's history records -> per class: class-epochs with a recorded HARL weight, how many of them
    had a negative mean weight, that share, and the mean over those epochs of the share of batches in which
    the weight was negative (`batch_share`; NaN where the run did not record it). Empty where the run
    recorded no weights: not a HARL run."""
    cw = history_tables(records, class_names)["class_weight"]
    cw = cw[np.isfinite(cw["value"].astype(float))]
    if cw.empty:
        return pd.DataFrame(columns=["class", "class_name", "epochs", "negative", "share", "batch_share"])
    out = cw.assign(neg=cw["value"] < 0).groupby(["class", "class_name"], as_index=False).agg(
        epochs=("value", "size"), negative=("neg", "sum"), batch_share=("negative_batches", "mean"))
    return out.assign(share=out["negative"] / out["epochs"])[
        ["class", "class_name", "epochs", "negative", "share", "batch_share"]]


def recall_deltas(per_class: pd.DataFrame, shares: pd.DataFrame, reference: str = "at_bsl") -> pd.DataFrame:
    """Per run with class weights and class: its negative-weight share and its robust recall minus that of
    the `reference` method's run on the same seed and class order (without RobustLT), class by class.
    per_class: run, arm, method, robustlt, seed, class_order, class, class_name, recall; shares: run,
    class, share (negative_shares per run)."""
    ref = per_class[(per_class["method"] == reference) & ~per_class["robustlt"].astype(bool)]
    ref = ref.drop_duplicates(["seed", "class_order", "class"])[["seed", "class_order", "class", "recall"]]
    mine = per_class.merge(shares[["run", "class", "share", "epochs"]], on=["run", "class"])
    both = mine.merge(ref, on=["seed", "class_order", "class"], suffixes=("", "_reference"))
    return both.assign(delta=both["recall"] - both["recall_reference"])[
        ["run", "arm", "seed", "class_order", "class", "class_name", "share", "epochs", "recall",
         "recall_reference", "delta"]]


def weight_association(deltas: pd.DataFrame) -> dict | None:
    """Whether classes with more negative-weight epochs lose robust recall against the reference: the slope
    of the recall difference on the share (a whole share of negative epochs = 1), with class fixed effects
    (within a class, across arms, orders and seeds) and without, errors clustered by run. None when the
    share does not vary or fewer than two runs hold one."""
    d = deltas.dropna(subset=["delta", "share"])
    if d["run"].nunique() < 2 or d["share"].nunique() < 2:
        return None
    groups = pd.factorize(d["run"])[0]
    out: dict[str, Any] = {}
    for key, formula in (("across_classes", "delta ~ share"), ("within_class", "delta ~ share + C(class_name)")):
        within = d.groupby("class_name")["share"].nunique().max() > 1
        if key == "within_class" and not within:
            out[key] = None
            continue
        fit = smf.ols(formula, d).fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)
        out[key] = _reading(fit, "share")
    negative = d["share"] > 0
    out.update(cells=len(d), runs=int(d["run"].nunique()), with_negative=int(negative.sum()),
               delta_with_negative=float(d.loc[negative, "delta"].mean()) if negative.any() else np.nan,
               delta_without=float(d.loc[~negative, "delta"].mean()) if (~negative).any() else np.nan)
    return out
