"""Tables that compare arms, each number with its 95 % interval from the interval engine (pure: tidy
tables in, tables out): means over seeds, the balanced accuracy vs robustness points, each arm's
weakest classes, the paired differences between arms (descriptive), and the readings verdicts are
written from: TAET's claims with Holm over the preset's primary comparisons, and rankings by paired
differences against the best arm. Runs the health gate failed are marked, and left out of readings."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import health, intervals, metrics, stats

__all__ = ["ONE_RUN", "TRADEOFF", "aggregate_wide", "claim_readings", "difference_means", "difference_reading",
           "differences_table", "holm_family", "marked", "means_as", "paired_rows", "primary_readings", "rankings",
           "reading", "readings_table", "seed_means", "seed_pairs", "tradeoff_from_aggregate", "tradeoff_points",
           "trained", "with_weakest"]

ONE_RUN = "one run"


def _shared(g: pd.DataFrame) -> bool:
    """The seeds of a group share one split (and its test images) when it has fewer split seeds than rows."""
    return "split_seed" in g and g["split_seed"].nunique() < len(g)


def _cell(g: pd.DataFrame, value: str, n: str | None, var: str | None) -> dict:
    v = g[value].to_numpy(dtype=float)
    shared = _shared(g)
    if n is not None:   # a proportion: its interval stays inside [0, 1]
        out = intervals.proportion(v, g[n].to_numpy(dtype=float), shared=shared)
        sources = intervals.ONE_SEED if out["k"] == 1 else intervals.SHARED if shared else intervals.NESTED
        return {"low": out["low"], "high": out["high"], "interval": sources if out["k"] else ""}
    w = g[var].to_numpy(dtype=float) if var is not None else None
    shared_var = float(np.nanmean(w)) if shared and w is not None and np.isfinite(w).any() else None
    out = intervals.combine(v, w, shared_var=shared_var)
    return {"low": out["low"], "high": out["high"], "interval": out["sources"], "p": out["p"], "se": out["se"]}


def seed_means(table: pd.DataFrame, keys: list[str], value: str, low: str | None = None,
               high: str | None = None, n: str | None = None, var: str | None = None) -> pd.DataFrame:
    """Per `keys`: mean, std (ddof 1), n of `value` over the rows (seeds), and a 95 % interval low / high
    from the interval engine (taetlib.intervals), with `interval` saying which variance it holds.
    `n` (a column of test images behind each value): a proportion, its interval inside [0, 1];
    `var` (each value's test-image variance): Hartung-Knapp over seeds; neither: the t-interval over
    seeds. One row: that run's own interval from its `low` / `high` columns when it has one (test images
    only). Seeds that share one split get the test-image variance they share added (intervals.SHARED)."""
    t = table.assign(_v=pd.to_numeric(table[value], errors="coerce").astype(float))
    rows = []
    for key, g in t.groupby(keys, sort=False, dropna=False):
        g = g[np.isfinite(g["_v"])]
        vals = g["_v"].to_numpy()
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update(mean=vals.mean() if len(vals) else np.nan, std=vals.std(ddof=1) if len(vals) > 1 else np.nan,
                   n=len(vals), low=np.nan, high=np.nan, interval="")
        if len(vals) == 1 and low in g and high in g and np.isfinite(float(g[low].iloc[0])):
            row.update(low=float(g[low].iloc[0]), high=float(g[high].iloc[0]), interval=intervals.ONE_SEED)
        elif len(vals) >= (1 if n else 2):
            row.update({k: v for k, v in _cell(g, "_v", n, var).items() if k in ("low", "high", "interval")})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "mean", "std", "n", "low", "high", "interval"])


def means_as(table: pd.DataFrame, keys: list[str], value: str, low: str | None = None,
             high: str | None = None, n: str | None = None) -> pd.DataFrame:
    """`seed_means` with its columns named after `value`: value, value_std, value_low, value_high, n."""
    return seed_means(table, keys, value, low, high, n=n).rename(
        columns={"mean": value, "std": f"{value}_std", "low": f"{value}_low", "high": f"{value}_high"})


TRADEOFF = {"balanced_accuracy": "clean", "balanced_robustness": None}   # metric -> attack (None: the robust one)


def tradeoff_points(summary: pd.DataFrame, protocol: str, attack: str) -> pd.DataFrame:
    """One point per arm and IR from stacked run summaries: balanced accuracy (clean) and balanced
    robustness (`attack`), each a mean over seeds with its interval (`seed_means`)."""
    s = summary[summary["protocol"] == protocol]
    keys = ["imbalance_ratio", "arm"]
    parts = []
    for m, a in TRADEOFF.items():
        rows = s[s["attack"] == (a or attack)]
        cols = {c: c for c in ("balanced_low", "balanced_high") if c in rows}
        parts.append(means_as(rows.rename(columns={"n": "images"}), keys, "balanced", cols.get("balanced_low"),
                              cols.get("balanced_high"), n="images" if "n" in rows else None)
                     .rename(columns=lambda c, m=m: c.replace("balanced", m)).drop(columns="interval"))
    return _pair_up(parts, keys)


def tradeoff_from_aggregate(agg: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The same points read off the sweep's aggregate table (its mean and interval columns)."""
    a = agg[agg["protocol"] == protocol]
    keys = ["imbalance_ratio", "arm"]
    parts = [a[a["metric"] == m][[*keys, "mean", "low", "high", "n"]].rename(
        columns={"mean": m, "low": f"{m}_low", "high": f"{m}_high"}) for m in TRADEOFF]
    return _pair_up(parts, keys)


def _pair_up(parts: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    acc, rob = parts
    both = acc.merge(rob.drop(columns="n"), on=keys, how="inner", sort=False)
    return both.dropna(subset=list(TRADEOFF)).reset_index(drop=True)


def with_weakest(table: pd.DataFrame, by: list[str], value: str = "recall") -> pd.DataFrame:
    """Adds `weakest`: true for the ceil(C/3) classes of lowest `value` in each `by` group (metrics.weakest_k,
    as the summary's weakest_k). Weakness need not follow rarity: this marks it where it is."""
    table = table.reset_index(drop=True)
    weak = np.zeros(len(table), dtype=bool)
    for _, g in table.groupby(by, sort=False, dropna=False):
        g = g.sort_values("class")
        idx, _ = metrics.weakest_k(g[value].to_numpy(dtype=float))
        weak[g.index[idx]] = True
    return table.assign(weakest=weak)


def reading(a: str, b: str, low: float, high: float) -> str:
    """A plain word only where the 95 % interval of a - b excludes 0."""
    if low > 0:
        return f"{a} higher"
    if high < 0:
        return f"{b} higher"
    return ""


def paired_rows(preds: dict) -> list[dict]:
    """Every pair of arms in `preds` ({arm: (y, pred, index), or None where none were saved}, in their
    order): later minus earlier, the paired bootstrap of their balanced score (stats.paired_difference).
    A pair not predicted on the same images (y or index differ) has a row without a number and a note."""
    arms, out = list(preds), []
    for i, b in enumerate(arms):
        for a in arms[i + 1:]:
            if preds[a] is None or preds[b] is None:
                note = "no saved predictions"
            else:
                (ya, pa, ia), (yb, pb, ib) = preds[a], preds[b]
                note = "" if np.array_equal(ya, yb) and np.array_equal(ia, ib) else "not on the same test images"
            d, lo, hi = stats.paired_difference(ya, pa, pb) if not note else (np.nan,) * 3
            var = intervals.class_mean_variance(ya, (pa == ya).astype(float) - (pb == ya))[1] if not note else np.nan
            out.append({"a": a, "b": b, "note": note, "difference": d, "low": lo, "high": hi, "var": var})
    return out


def difference_means(per_seed: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Paired differences per seed -> over seeds (`seed_means`: Hartung-Knapp over seeds, or the one run's
    bootstrap), with the plain reading (descriptive: the report's full pairwise table)."""
    var = "var" if "var" in per_seed else None
    out = seed_means(per_seed, [*keys, "a", "b", "note"], "difference", "low", "high", var=var)
    out = out.rename(columns={"mean": "difference"})
    return out.assign(reading=[reading(a, b, lo, hi) for a, b, lo, hi in zip(out["a"], out["b"], out["low"],
                                                                               out["high"])])


# ------------------------------------------------------------------------------ tables for the page
def marked(agg: pd.DataFrame) -> pd.DataFrame:
    """The aggregate with each arm that has runs failing the health gate named so in every table and
    figure: 'arm (did not train)', or 'arm (1 of 3 runs did not train)'."""
    if "did_not_train" not in agg or not len(agg):
        return agg
    bad = agg.groupby(["imbalance_ratio", "arm"], sort=False)["did_not_train"].transform("max").fillna(0)
    total = agg.groupby(["imbalance_ratio", "arm"], sort=False)["n"].transform("max")
    label = [a if b == 0 else f"{a} ({health.DID_NOT_TRAIN})" if b >= n
             else f"{a} ({b:.0f} of {n:.0f} runs {health.DID_NOT_TRAIN})" for a, b, n in zip(agg["arm"], bad, total)]
    return agg.assign(arm=label)


def aggregate_wide(agg: pd.DataFrame, protocol: str, order: list[str]) -> pd.DataFrame:
    """One row per IR and arm, one column per metric (in `order`): 'mean ± std [low, high]' (n seeds)."""
    a = marked(agg)
    a = a[a["protocol"] == protocol]
    lo = a["low"] if "low" in a else pd.Series(np.nan, index=a.index)
    hi = a["high"] if "high" in a else pd.Series(np.nan, index=a.index)
    cell = [f"{m:.4f}" + ("" if pd.isna(s) else f" ± {s:.4f}") + ("" if pd.isna(lo_) else f" [{lo_:.4f}, {h:.4f}]")
            for m, s, lo_, h in zip(a["mean"], a["std"], lo, hi)]
    wide = a.assign(cell=cell).pivot_table(index=["imbalance_ratio", "arm", "n"], columns="metric", values="cell",
                                           aggfunc="first", sort=False)
    wide = wide[[m for m in order if m in wide.columns]].reset_index().rename(columns={"n": "seeds"})
    wide.columns.name = None
    return wide.assign(imbalance_ratio=[f"{v:g}" for v in wide["imbalance_ratio"]])


def differences_table(diffs: pd.DataFrame) -> pd.DataFrame:
    """Paired differences for a page: protocol, IR, metric, 'a - b', the difference [its interval], seeds,
    what the interval is, the reading and any note."""
    cells = ["" if pd.isna(d) else f"{d:+.4f}" + ("" if pd.isna(lo) else f" [{lo:+.4f}, {hi:+.4f}]")
             for d, lo, hi in zip(diffs["difference"], diffs["low"], diffs["high"])]
    return pd.DataFrame({"protocol": diffs["protocol"], "IR": [f"{v:g}" for v in diffs["imbalance_ratio"]],
                         "metric": diffs["metric"], "a - b": [f"{a} - {b}" for a, b in zip(diffs["a"], diffs["b"])],
                         "difference [95 % interval]": cells, "seeds": diffs["n"], "interval": diffs["interval"],
                         "reading": diffs["reading"], "note": diffs["note"]})


# ------------------------------------------------------------------------------ readings for verdicts
def trained(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs that passed the health gate (every row where no gate was applied)."""
    return metrics[metrics["trained"].astype(bool)] if "trained" in metrics else metrics


def seed_pairs(metrics: pd.DataFrame, a: str, b: str, ir: float, protocol: str, metric: str) -> pd.DataFrame:
    """a and b of one metric, seed by seed (runs that trained only): value_a, value_b, their difference,
    its test-image variance (a binomial bound from each run's images) and whether the seeds share a split."""
    m = trained(metrics)
    m = m[(m["imbalance_ratio"] == ir) & (m["protocol"] == protocol) & (m["metric"] == metric)]
    cols = [c for c in ("value", "images", "split_seed") if c in m]
    wide = {arm: m[m["arm"] == arm].set_index("seed")[cols] for arm in (a, b)}
    both = wide[a].merge(wide[b], left_index=True, right_index=True, suffixes=("_a", "_b"))
    both = both.dropna(subset=["value_a", "value_b"])
    var = np.nan
    if "images_a" in both:
        var = sum(both[f"value_{x}"] * (1 - both[f"value_{x}"]) / both[f"images_{x}"] for x in "ab")
    shared = "split_seed_a" in both and both["split_seed_a"].nunique() < len(both)
    return both.assign(difference=both["value_a"] - both["value_b"], var=var, shared=shared)


def ended_seeds(metrics: pd.DataFrame, a: str, b: str, ir: float, protocol: str, metric: str) -> int:
    """Seeds whose runs of both a and b have ended with a reading, trained or not: a run the health gate
    left out still spends its seed of the design."""
    m = metrics[(metrics["imbalance_ratio"] == ir) & (metrics["protocol"] == protocol) & (metrics["metric"] == metric)]
    return len(set(m.loc[m["arm"] == a, "seed"]) & set(m.loc[m["arm"] == b, "seed"]))


def _design(metrics: pd.DataFrame, r: dict, declared: int | None) -> dict:
    """The seeds the preset declared and those ended so far: fewer ended than declared is an interim look,
    which the verdict function reads without a verdict."""
    if declared is None:
        return {}
    return {"declared": int(declared),
            "ended": ended_seeds(metrics, r["a"], r["b"], r["imbalance_ratio"], r["protocol"], r["metric"])}


def difference_reading(pairs: pd.DataFrame, **keys) -> dict:
    """The engine's reading of a - b over seeds, with the effect it could detect at 80 % power."""
    var = pairs["var"].to_numpy(dtype=float) if len(pairs) else None
    shared = bool(len(pairs)) and bool(pairs["shared"].iloc[0])
    shared_var = float(np.nanmean(var)) if shared and var is not None and np.isfinite(var).any() else None
    out = intervals.combine(pairs["difference"].to_numpy(dtype=float), var, shared_var=shared_var)
    return {**keys, **out, "mde": intervals.detectable(out["se"], out["k"])}


def claim_readings(metrics: pd.DataFrame, a: str, b: str, metric_labels: dict, primary=(),
                   declared: int | None = None) -> list[dict]:
    """a - b for every IR, protocol and metric of `metric_labels`: kind 'claim' where `primary` (the
    preset's pre-declared endpoints: dicts of a, b, metric, imbalance_ratio, protocol, claimed) names it,
    with Holm-adjusted p-values over those; 'descriptive' for the rest. `declared`: the design's seeds."""
    m = metrics[metrics["metric"].isin(list(metric_labels))]
    out = []
    for (ir, protocol, metric), _ in m.groupby(["imbalance_ratio", "protocol", "metric"], sort=True):
        spec = next((p for p in primary if (p["a"], p["b"], p["metric"], float(p["imbalance_ratio"]), p["protocol"])
                     == (a, b, metric, float(ir), protocol)), None)
        r = difference_reading(seed_pairs(metrics, a, b, ir, protocol, metric), a=a, b=b, imbalance_ratio=ir,
                               protocol=protocol, metric=metric, label=metric_labels[metric])
        out.append({**r, **_design(metrics, r, declared), "kind": "claim" if spec else "descriptive",
                    "claimed": spec.get("claimed") if spec else None})
    return holm_family(out)


def primary_readings(metrics: pd.DataFrame, primary, labels: dict | None = None,
                     declared: int | None = None) -> list[dict]:
    """Every pre-declared primary comparison (dicts of a, b, metric, imbalance_ratio, protocol, claimed, and
    an optional label, else `labels` by metric), whatever its pair of arms, read by the engine and
    Holm-adjusted as one family; a comparison whose arms have no common finished seed reads k = 0 (no
    verdict). `declared`: the design's seeds (fewer ended: an interim look, no verdict)."""
    labels = labels or {}
    out = []
    for p in primary:
        ir = float(p["imbalance_ratio"])
        r = difference_reading(seed_pairs(metrics, p["a"], p["b"], ir, p["protocol"], p["metric"]), a=p["a"],
                               b=p["b"], imbalance_ratio=ir, protocol=p["protocol"], metric=p["metric"],
                               label=p.get("label") or labels.get(p["metric"], p["metric"].replace("_", " ")))
        out.append({**r, **_design(metrics, r, declared), "kind": "claim", "claimed": p.get("claimed")})
    return holm_family(out)


def holm_family(readings: list[dict]) -> list[dict]:
    """The primary readings (kind 'claim') Holm-adjusted as one family: p_holm and the family's size. A
    declared comparison without a p-value yet (no finished pair of runs) still counts in the family, as
    p = 1, so a partial sweep never adjusts over fewer comparisons than were declared; its p_holm is nan."""
    family = [r for r in readings if r["kind"] == "claim"]
    p = [r["p"] if np.isfinite(r["p"]) else 1.0 for r in family]
    for r, adj in zip(family, intervals.holm(p)):
        r.update(p_holm=float(adj) if np.isfinite(r["p"]) else float("nan"), family=len(family))
    return readings


def rankings(metrics: pd.DataFrame, metric: str = "balanced_robustness", protocol: str = "balanced") -> list[dict]:
    """Per IR: the arm of highest mean (runs that trained; of two seeds or more where any arm has them), and
    the arms the data cannot tell from it:
    each arm's paired difference from the best over their common seeds, Holm-adjusted across the arms
    (p >= 0.05: not told apart). Never interval overlap. An arm with fewer than two seeds in common with
    the best is not ranked (`unranked`): one seed's interval leaves the seed and data spread out, so it
    enters no test and no Holm family (a partial study mixes arms of one seed and of all seeds)."""
    m = trained(metrics)
    m = m[(m["metric"] == metric) & (m["protocol"] == protocol)]
    out = []
    for ir, g in m.groupby("imbalance_ratio", sort=True):
        means = g.groupby("arm", sort=False)["value"].mean().dropna().sort_values(ascending=False)
        if means.empty:
            continue
        seeds = g.groupby("arm")["seed"].nunique()
        best = next((a for a in means.index if seeds[a] >= 2), means.index[0])
        diffs = [difference_reading(seed_pairs(metrics, best, arm, ir, protocol, metric), arm=arm)
                 for arm in means.index if arm != best]
        tested = [d for d in diffs if d["k"] >= 2]
        adj = intervals.holm([d["p"] for d in tested])
        tied = [d["arm"] for d, p in zip(tested, adj) if not (np.isfinite(p) and p < 0.05)]
        out.append({"kind": "ranking", "imbalance_ratio": ir, "protocol": protocol, "metric": metric, "best": best,
                    "best_mean": float(means[best]), "arms": len(means), "tied": tied, "gated": "trained" in metrics,
                    "unranked": [d["arm"] for d in diffs if d["k"] < 2],
                    "k": int(seeds.max()), "pair_k": sorted({d["k"] for d in tested}),
                    "differences": [{**d, "p_holm": float(p)} for d, p in zip(tested, adj)]})
    return out


def readings_table(readings: list[dict]) -> pd.DataFrame:
    """Claim / descriptive readings as a table (claims.csv, the report's primary table)."""
    cols = ["kind", "imbalance_ratio", "protocol", "metric", "label", "a", "b", "mean", "low", "high", "k", "p",
            "p_holm", "family", "mde", "claimed", "se", "df", "tau2", "sources"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in readings], columns=cols)
