"""Every verdict sentence the workbench writes comes from `sentence`, from one reading of the interval
engine (compare.claim_readings, compare.rankings): the sweep report, the results README and the demo's
README section. Nothing else words a verdict.

The rules it keeps:
- only a pre-declared primary comparison (the preset names it) with at least two seeds gets a verdict, and
  only when its Holm-adjusted p-value is below 0.05: it 'holds' or is 'contradicted' where the paper claimed
  a direction (the sign of `claimed`), and names the higher arm where nothing was claimed (a two-sided
  question, such as Study B's);
- and only once every seed the design declared has ended: a look at fewer is interim and gets no verdict,
  since stopping at the first look that crosses 0.05 raises the error rate well above 0.05 (the design
  declared no rule for early looks);
- a primary comparison that is not significant gives the bound the data supports ('at most +1.2
  points'), the smallest effect it could detect with 80 % power, and whether the paper's claimed
  effect was within reach;
- everything else is labelled descriptive; one seed gets no verdict at all (its interval holds the test
  images only);
- a ranking names the arms the data cannot tell from the best (Holm over the paired differences).
"""
from __future__ import annotations

import math

__all__ = ["ALPHA", "pts", "sentence"]

ALPHA = 0.05


def pts(x: float, sign: bool = True) -> str:
    return "nan" if x is None or not math.isfinite(x) else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def _interval(r: dict) -> str:
    if not all(math.isfinite(r.get(x, float("nan"))) for x in ("low", "high")):
        return f"{pts(r['mean'])} points (no interval: no test-image variance was recorded)"
    return f"{pts(r['mean'])} [{pts(r['low'])}, {pts(r['high'])}] points"


def _seeds(r: dict) -> str:
    return "in one seed" if r["k"] == 1 else f"over {r['k']} seeds"


def _where(r: dict) -> str:
    return f"IR {r['imbalance_ratio']:g}, {r['protocol']} test set"


def _power(r: dict) -> str:
    mde = r.get("mde", float("nan"))
    if not math.isfinite(mde):
        return ""
    text = f" The smallest difference this reading could detect with 80 % power is {pts(mde, False)} points"
    claimed = r.get("claimed")
    if claimed is not None and math.isfinite(claimed):
        reach = "within" if abs(claimed) >= mde else "out of"
        text += f"; the paper's claimed {pts(claimed)} was {reach} reach"
    return text + "."


def _interim(r: dict) -> bool:
    return r.get("declared") is not None and r.get("ended", r["k"]) < r["declared"]


def _outcome(r: dict) -> str:
    """What a final primary reading with at least two seeds says: holds, contradicted, differs (significant,
    with no claimed direction) or unsettled."""
    if r["p_holm"] >= ALPHA:
        return "unsettled"
    claimed = r.get("claimed")
    if claimed is None or not math.isfinite(claimed) or claimed == 0:
        return "differs"
    return "holds" if (r["mean"] > 0) == (claimed > 0) else "contradicted"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _claim(r: dict) -> str:
    if r["k"] == 0:
        return (f"{_where(r)}, {r['label']}: {r['a']} - {r['b']}: no seed has finished runs of both arms yet, so "
                "there is no reading.")
    head = f"{_where(r)}, {r['label']}: {r['a']} - {r['b']} = {_interval(r)} {_seeds(r)}"
    if r["k"] < 2:
        return f"{head}: no verdict, as one seed's interval covers only the test images, not the seed or data spread."
    p = f"Holm-adjusted p {_p(r['p_holm'])} over {r['family']} primary comparisons; the interval is unadjusted"
    if _interim(r):
        return (f"{head} ({p}): an interim look at {r['ended']} of the {r['declared']} declared seeds, so no "
                f"verdict until all {r['declared']} have ended.{_power(r)}")
    outcome, higher = _outcome(r), r["a"] if r["mean"] > 0 else r["b"]
    if outcome == "holds":
        return f"{head} ({p}): the claim holds.{_power(r)}"
    if outcome == "contradicted":
        return f"{head} ({p}): the claim is contradicted ({higher} higher).{_power(r)}"
    if outcome == "differs":
        return f"{head} ({p}): {higher} is higher (no direction was claimed beforehand).{_power(r)}"
    bound = (f"the data support an advantage of {r['a']} of at most {pts(r['high'])} points"
             if r["high"] > 0 else f"{r['a']} is not ahead here")
    return f"{head} ({p}): not settled; {bound}.{_power(r)}"


def _descriptive(r: dict) -> str:
    k = f"over {r['k']} seeds" if r["k"] != 1 else "in one seed (test images only)"
    return (f"{_where(r)}, {r['label']}: {r['a']} - {r['b']} = {_interval(r)} {k} (descriptive: not a "
            "pre-declared comparison, no verdict).")


def _ranking(r: dict) -> str:
    tied, unranked = r["tied"], r.get("unranked", [])
    ranked = r["arms"] - len(unranked)
    gate = " that passed the health gate" if r.get("gated") else ""
    of = (f"of the {ranked} arms with two seeds or more in common ({r['arms']} arms{gate})" if unranked and r["k"] >= 2
          else f"of {r['arms']} arms{gate}")
    best = f"{r['best']} ({pts(r['best_mean'], False)} %)"
    head = f"{_where(r)}, {r['metric'].replace('_', ' ')}: highest mean {best} {of}"
    if r["k"] < 2:
        return f"{head}; one seed, so no ranking (its intervals cover only the test images)."
    if ranked < 2:
        rest = f"no other arm has two seeds in common with {r['best']}, so none is ranked against it"
    elif not tied:
        rest = f"every other{' ranked' if unranked else ''} arm is lower (Holm-adjusted paired differences, p < 0.05)"
    else:
        ks = r.get("pair_k") or [r["k"]]   # seeds in common with the best: fewer than k in a partial study
        over = f"{ks[0]}" if len(ks) == 1 else f"{ks[0]}-{ks[-1]}"
        rest = (f"the data cannot tell {r['best']} from {', '.join(tied)} (Holm-adjusted paired differences over "
                f"{over} seeds, p >= 0.05): ranks 1-{len(tied) + 1} of {ranked}")
        lower = [f"{d['arm']} (p {_p(d['p_holm'])})" for d in r["differences"] if d["arm"] not in tied]
        if lower:   # name the arms told apart: "ranks 1-k" alone leaves the reader to find them
            rest += f"; lower than {r['best']} (Holm-adjusted): {', '.join(lower)}"
    if unranked:
        rest += f"; not ranked, with fewer than two seeds in common with {r['best']}: {', '.join(unranked)}"
    return f"{head}; {rest}."


def _summary(r: dict) -> str:
    claims = [x for x in r["readings"] if x["kind"] == "claim"]
    if not claims:
        return "No primary comparison was declared: every reading is descriptive."
    if all(x["k"] == 0 for x in claims):
        return f"No seed has finished runs of both arms of any of the {len(claims)} primary comparisons yet."
    if all(x["k"] < 2 for x in claims):
        return f"One seed: none of the {len(claims)} primary comparisons can be settled."
    if any(_interim(x) for x in claims):
        ended = min(x.get("ended", x["k"]) for x in claims)
        return (f"An interim look at {ended} of the {claims[0]['declared']} declared seeds: none of the "
                f"{len(claims)} primary comparisons gets a verdict until every declared seed has ended.")
    n = {o: sum(_outcome(x) == o for x in claims) for o in ("holds", "contradicted", "differs", "unsettled")}
    parts = ([f"{n['holds']} hold{'s' if n['holds'] == 1 else ''}",
              f"{n['contradicted']} {'is' if n['contradicted'] == 1 else 'are'} contradicted"]
             if any(x.get("claimed") is not None for x in claims) else [])   # no claim: nothing can hold
    if n["differs"]:   # only where some comparison claimed no direction
        parts.append(f"{n['differs']} show{'s' if n['differs'] == 1 else ''} a difference where no direction was "
                     "claimed")
    parts.append(f"{n['unsettled']} {'is' if n['unsettled'] == 1 else 'are'} not settled")
    said = f"{', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1 else parts[0]
    return (f"Of {len(claims)} primary comparisons (Holm-adjusted over the {len(claims)}), {said}; "
            f"{len(r['readings']) - len(claims)} further readings are descriptive.")


def sentence(r: dict) -> str:
    """The one writer of verdict sentences: a reading of kind claim (primary), descriptive, ranking, or
    summary (of a list of readings)."""
    kind = r["kind"]
    if kind == "summary":
        return _summary(r)
    if kind == "claim":
        return _claim(r)
    if kind == "descriptive":
        return _descriptive(r)
    if kind == "ranking":
        return _ranking(r)
    raise ValueError(f"reading kind {kind!r}: expected claim, descriptive, ranking or summary")
