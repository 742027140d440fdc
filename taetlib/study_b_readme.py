"""Study B's sections of a study README: rarity or difficulty (the rarity slope per doubling of a class's
training images, per arm, and each class's effect at equal count) and HARL's negative class weights (their
share per arm and class, and the robust recall lost against AT-BSL). The numbers come from study_b.py."""
from __future__ import annotations

import math

import pandas as pd

from . import study_b, verdicts
from .history import read_history
from .markdown_table import markdown

__all__ = ["rarity_lines", "study_b_section", "variants_of", "weight_lines"]


def variants_of(arms) -> dict[str, str]:
    """arm -> the arm it is under label order (the same method, RobustLT and overrides but class_order):
    what study B's per-arm slopes group by."""
    def key(a):
        return a.method, a.robustlt, tuple(sorted((k, str(v)) for k, v in a.overrides.items() if k != "class_order"))
    first: dict = {}
    for a in sorted(arms, key=lambda a: "class_order" in a.overrides):   # label-order arms name the group
        first.setdefault(key(a), a.name)
    return {a.name: first[key(a)] for a in arms}


def _interval_pts(e: float, lo: float, hi: float, scale: float = 1.0) -> str:
    return f"{verdicts.pts(e * scale)} [{verdicts.pts(lo * scale)}, {verdicts.pts(hi * scale)}]"


def rarity_lines(pc: pd.DataFrame, attack: str) -> tuple[list[str], dict]:
    """Rarity or difficulty: the common slope per doubling, per arm, and each class's effect at equal count."""
    slope = study_b.rarity_slope(pc)
    per = study_b.rarity_slopes(pc, "variant")
    effects = study_b.class_effects(pc)
    if slope is None or per is None or effects is None:
        return ["Not identified yet: the finished runs hold one class order, under which a class's count and its "
                "identity cannot be told apart."], {}
    ln2 = math.log(2)
    lines = [f"Robust recall ({attack}) changes by {_interval_pts(slope['estimate'], slope['low'], slope['high'], ln2)}"
             " points per doubling of a class's training images, with each class's own difficulty and each run's "
             f"level held fixed (OLS, run and class fixed effects, HC3 95 % t interval, p = {slope['p']:.3g}, "
             f"{slope['rows']} class-runs). The class orders identify it: a class keeps its identity and changes its "
             "count.", "", "Per arm (points per doubling):", "",
             markdown(pd.DataFrame({"arm": per["variant"], "slope [95 %]": [
                 _interval_pts(e, lo, hi, ln2) if math.isfinite(e) else "not identified yet (its finished runs hold "
                 "one class order)" for e, lo, hi in zip(per["estimate"], per["low"], per["high"])]})),
             "", "Each class's robust recall at equal training count, against the mean class (points, 95 %): its "
             "intrinsic difficulty, rarity taken out:", "",
             markdown(pd.DataFrame({"class": effects["class_name"], "effect [95 %]": [
                 _interval_pts(e, lo, hi) for e, lo, hi in zip(effects["effect"], effects["low"], effects["high"])]}))]
    return lines, {"rarity_slopes": per, "class_effects": effects}


def weight_lines(pc: pd.DataFrame) -> tuple[list[str], dict]:
    """HARL's negative class weights: their share per arm and class, and the recall lost against AT-BSL."""
    shares, names = [], pc.drop_duplicates("class").sort_values("class")["class_name"].tolist()
    for run in pc["run"].unique():
        s = study_b.negative_shares(read_history(run), names)
        if len(s):
            shares.append(s.assign(run=run))
    if not shares:
        return ["No finished run recorded HARL's class weights."], {}
    share = pc[["run", "arm"]].drop_duplicates().merge(pd.concat(shares, ignore_index=True), on="run")
    deltas = study_b.recall_deltas(pc, share)
    per_arm = share.groupby("arm").agg(class_epochs=("epochs", "sum"), negative=("negative", "sum"))
    per_arm["negative share (%)"] = [verdicts.pts(n / e, False) for n, e in zip(per_arm["negative"],
                                                                                per_arm["class_epochs"])]
    rec = share.dropna(subset=["batch_share"])   # the runs that recorded batch-level signs
    if batches := len(rec) > 0:   # mean over class-epochs, each epoch's share of batches
        b = (rec["batch_share"] * rec["epochs"]).groupby(rec["arm"]).sum() / rec.groupby("arm")["epochs"].sum()
        per_arm["negative batches (%)"] = [verdicts.pts(b[a], False) if a in b else "not recorded"
                                           for a in per_arm.index]
    per_class = share.groupby(["arm", "class_name"], sort=False)[["negative", "epochs"]].sum()
    per_class = (100 * per_class["negative"] / per_class["epochs"]).round(0).astype(int).unstack("class_name")
    unseen = ("the last column is the share of class-batches with a negative weight" if batches else
              "these runs recorded each class's weight per epoch, not per batch, so how often single batches "
              "ascended a class was not measured")
    lines = ["Share of class-epochs where HARL's weight of a class, averaged over the epoch's batches, was negative, "
             "i.e. the class's adversarial loss lay more than alpha / (2 beta) below the batch's mean class loss "
             "(BCL), so HARL ascended it (the gamma term moves the threshold a little). A mean can stay positive "
             f"while single batches ascend the class: {unseen}.", "",
             markdown(per_arm.reset_index()), "", "Per class, share of class-epochs (%):", "",
             markdown(per_class.reset_index()), ""]
    a = study_b.weight_association(deltas)
    if a is None:
        why = ("no class had a negative mean weight in any epoch of any run, so the declared share is 0 throughout"
               if not share["negative"].any() else "the share does not vary across classes, or fewer than two runs "
               "pair with an AT-BSL run of the same seed and class order")
        return lines + [f"Whether those classes lose robustness: not read ({why})."], {"negative_weights": deltas}
    lines.append(f"Robust recall against AT-BSL (same seed and class order), class by class: classes with any "
                 f"negative epoch differ by {verdicts.pts(a['delta_with_negative'])} points on average "
                 f"({a['with_negative']} class-runs), the others by {verdicts.pts(a['delta_without'])}.")
    for key, what in (("across_classes", "across classes"),
                      ("within_class", "within a class (class fixed effects: its own difficulty taken out)")):
        r = a.get(key)
        if r is not None:
            lines.append(f"- {what}: {_interval_pts(r['estimate'], r['low'], r['high'])} points per whole share of "
                         f"negative epochs (p = {r['p']:.3g}; errors clustered by run, {a['runs']} runs; "
                         "descriptive).")
    return lines, {"negative_weights": deltas}


def study_b_section(tables: dict | None, status: pd.DataFrame, attack: str, variants: dict,
                    rarity: bool = True) -> tuple[list[str], dict]:
    """Study B's analyses on the finished runs that trained (robust recall on the balanced test set):
    rarity or difficulty (where the sweep plans two class orders) and HARL's negative class weights.
    Returns the README's lines and the tables to save."""
    if tables is None:
        return ["No finished run that trained yet."], {}
    info = status.set_index(status["run"].astype(str))
    pc = tables["per_class"]
    pc = pc[(pc["attack"] == attack) & (pc["protocol"] == "balanced")]
    pc = pc.assign(class_order=pc["run"].astype(str).map(info["class_order"]).fillna("label"))
    pc = pc.assign(variant=pc["arm"].map(variants).fillna(pc["arm"]))
    lines: list[str] = []
    saved: dict = {}
    if rarity:
        got, saved = rarity_lines(pc, attack)
        lines += ["### Rarity or difficulty", "", *got, "", "### HARL's negative class weights", ""]
    got, more = weight_lines(pc)
    return lines + got, {**saved, **more}
