"""Tables that compare arms, each number with its 95 % interval (pure: tidy tables in, tables out):
means over seeds, the balanced accuracy vs robustness points, each arm's weakest classes, and the
paired differences between arms with a plain reading only where the interval excludes 0."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import metrics, stats

__all__ = ["ONE_RUN", "SEEDS_T", "TRADEOFF", "aggregate_wide", "difference_means", "differences_table", "means_as",
           "paired_rows", "reading", "seed_means", "tradeoff_from_aggregate", "tradeoff_points", "with_weakest"]

SEEDS_T = "t over seeds"
ONE_RUN = "one run"


def seed_means(table: pd.DataFrame, keys: list[str], value: str, low: str | None = None,
               high: str | None = None) -> pd.DataFrame:
    """Per `keys`: mean, std (ddof 1), n of `value` over the rows (seeds), and a 95 % interval low / high
    with what it is (`interval`): a t-interval over seeds for two or more (stats.t_half_width, as
    stats.seed_interval); for one, that run's own interval from its `low` / `high` columns (bootstrap
    within classes, Wilson, ...) when there is one."""
    v = pd.to_numeric(table[value], errors="coerce").astype(float)
    own = {f"_{k}": pd.to_numeric(table[c], errors="coerce").where(np.isfinite(v)) if c in table else np.nan
           for k, c in (("low", low), ("high", high))}   # a run's own interval, only where its value is
    g = table.assign(_v=v, **own).groupby(keys, sort=False, dropna=False)
    out = g["_v"].agg(mean="mean", std="std", n="count")
    half, n = stats.t_half_width(out["std"], out["n"]), out["n"].to_numpy()
    lo = np.where(n >= 2, out["mean"] - half, np.where(n == 1, g["_low"].first(), np.nan))
    hi = np.where(n >= 2, out["mean"] + half, np.where(n == 1, g["_high"].first(), np.nan))
    kind = np.where(n >= 2, SEEDS_T, np.where(np.isfinite(lo), ONE_RUN, ""))
    cols = [*keys, "mean", "std", "n", "low", "high", "interval"]
    return out.assign(low=lo, high=hi, interval=kind).reset_index()[cols]


def means_as(table: pd.DataFrame, keys: list[str], value: str, low: str | None = None,
             high: str | None = None) -> pd.DataFrame:
    """`seed_means` with its columns named after `value`: value, value_std, value_low, value_high, n."""
    return seed_means(table, keys, value, low, high).rename(
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
        parts.append(means_as(rows, keys, "balanced", cols.get("balanced_low"), cols.get("balanced_high"))
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
            out.append({"a": a, "b": b, "note": note, "difference": d, "low": lo, "high": hi})
    return out


def difference_means(per_seed: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Paired differences per seed -> over seeds (`seed_means`: t over seeds, or the one run's bootstrap),
    with the plain reading."""
    out = seed_means(per_seed, [*keys, "a", "b", "note"], "difference", "low", "high")
    out = out.rename(columns={"mean": "difference"})
    return out.assign(reading=[reading(a, b, lo, hi) for a, b, lo, hi in zip(out["a"], out["b"], out["low"],
                                                                               out["high"])])


# ------------------------------------------------------------------------------ tables for the page
def aggregate_wide(agg: pd.DataFrame, protocol: str, order: list[str]) -> pd.DataFrame:
    """One row per IR and arm, one column per metric (in `order`): 'mean ± std [low, high]' (n seeds)."""
    a = agg[agg["protocol"] == protocol]
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
