"""A sweep's published results folder (results/<name>/, committed): the aggregate with its intervals,
TAET's two claims as differences over seeds, a figure exported by plotly, and a README that holds the
command, the wall time, the table and the plain verdict. `python -m taetlib results` (`make results`)
runs preset fmnist_lt_results and writes results/fmnist_lt/ from it.

TAET's claims, each read off an interval and nothing else:
  1. higher balanced robustness than AT-BSL;
  2. higher robustness on the weak classes: TAET's tail (the rarer half of the classes) and the weakest
     ceil(C/3) classes of each run.
A difference is a - b per seed (same seed, same split, same test images), then a t-interval over seeds
(compare.difference_means); a word is said only where that interval excludes 0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import compare, report, stats
from .figure_files import export_figure

__all__ = ["CLAIMS", "HEADERS", "HEADLINE", "MARKERS", "NAMES", "TABLE", "figure", "in_short", "leaders", "markdown",
           "readme", "readme_section", "seed_differences", "table", "update_readme", "verdict", "write"]

TABLE = ["balanced_accuracy", "balanced_robustness", "taet_tail_robustness", "weakest_k_robustness",
         "worst_class_robustness"]
HEADLINE = TABLE[:4]   # docs/results.md's columns
MARKERS = ("<!-- results:fmnist_lt -->", "<!-- /results:fmnist_lt -->")   # its generated section
CLAIMS = {"balanced_robustness": "claim 1: balanced robustness",
          "taet_tail_robustness": "claim 2: TAET's tail classes (the rarer half), robust",
          "weakest_k_robustness": "claim 2: the weakest ceil(C/3) classes, robust"}
NAMES = {"taet": "TAET", "at_bsl": "AT-BSL"}   # the papers' spelling of the compared arms
HEADERS = {"balanced_accuracy": "balanced acc.", "balanced_robustness": "balanced rob.",
           "taet_tail_robustness": "TAET tail rob.", "weakest_k_robustness": "weakest-k rob.",
           "worst_class_robustness": "worst class rob."}


def seed_differences(metrics: pd.DataFrame, a: str, b: str, names=tuple(CLAIMS)) -> pd.DataFrame:
    """a - b per IR, protocol and metric: per seed the difference of the two runs' values, then over
    seeds the mean with its t-interval and the plain reading (compare.difference_means)."""
    keys = ["imbalance_ratio", "protocol", "metric"]
    m = metrics[metrics["metric"].isin(names) & metrics["arm"].isin([a, b])]
    wide = m.pivot_table(index=[*keys, "seed"], columns="arm", values="value", aggfunc="first")
    missing = [x for x in (a, b) if x not in wide]
    if missing:
        raise KeyError(f"arms {missing}: not in this sweep's metrics (arms: {sorted(metrics['arm'].unique())})")
    rows = wide[[a, b]].dropna().reset_index()
    rows = rows.assign(a=a, b=b, note="", difference=rows[a] - rows[b], low=np.nan, high=np.nan)
    return compare.difference_means(rows[[*keys, "seed", "a", "b", "note", "difference", "low", "high"]], keys)


def verdict(diffs: pd.DataFrame, protocol: str = "balanced") -> list[str]:
    """One sentence per claim and IR, as the interval reads: holds, contradicted, or not shown."""
    lines = []
    for (ir, metric), d in diffs[diffs["protocol"] == protocol].groupby(["imbalance_ratio", "metric"], sort=False):
        r = d.iloc[0]
        word = ("holds" if r["low"] > 0 else f"is contradicted ({NAMES.get(r['b'], r['b'])} higher)" if r["high"] < 0
                else "is not shown (the interval spans 0)")
        lines.append(f"IR {ir:g}, {CLAIMS.get(metric, metric)}: {r['a']} - {r['b']} = {100 * r['difference']:+.1f} "
                     f"[{100 * r['low']:+.1f}, {100 * r['high']:+.1f}] points over {int(r['n'])} seeds: the claim "
                     f"{word}.")
    return lines


def in_short(diffs: pd.DataFrame, protocol: str = "balanced") -> str:
    """Each claim in a few words: where its intervals say it holds, is contradicted, or is not shown."""
    d = diffs[diffs["protocol"] == protocol]
    out = []
    for claim, metrics in (("claim 1 (balanced robustness)", ["balanced_robustness"]),
                           ("claim 2 (weak classes)", ["taet_tail_robustness", "weakest_k_robustness"])):
        c = d[d["metric"].isin(metrics)]
        holds, against = int((c["low"] > 0).sum()), int((c["high"] < 0).sum())
        out.append(f"{claim} holds in {holds}, is contradicted in {against} and is not shown in "
                   f"{len(c) - holds - against} of {len(c)} readings")
    return "; ".join(out) + "."


def leaders(agg: pd.DataFrame, metric: str = "balanced_robustness", protocol: str = "balanced") -> list[str]:
    """Per IR, the arm of highest mean and every arm whose interval overlaps it (not separable from it):
    a ranking is stated only where intervals separate."""
    out = []
    a = agg[(agg["protocol"] == protocol) & (agg["metric"] == metric)]
    for ir, g in a.groupby("imbalance_ratio", sort=True):
        g = g.sort_values("mean", ascending=False)
        top = g.iloc[0]
        tied = [r["arm"] for _, r in g.iloc[1:].iterrows()
                if not stats.separated((top["low"], top["high"]), (r["low"], r["high"]))]
        out.append(f"IR {ir:g}: highest mean {metric.replace('_', ' ')}: {top['arm']} ({100 * top['mean']:.1f}); "
                   f"not separable from it: {', '.join(tied) if tied else 'none'}; every other arm's interval lies "
                   f"below.")
    return out


def table(agg: pd.DataFrame, protocol: str, metrics=TABLE) -> pd.DataFrame:
    """One row per IR and arm: each metric as 'mean [low, high]' in %, arms in the sweep's order."""
    a = agg[(agg["protocol"] == protocol) & agg["metric"].isin(metrics)]
    cell = [f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if np.isfinite(lo) else f"{100 * m:.1f}"
            for m, lo, hi in zip(a["mean"], a["low"].astype(float), a["high"].astype(float))]
    wide = a.assign(cell=cell).pivot_table(index=["imbalance_ratio", "arm"], columns="metric", values="cell",
                                           aggfunc="first", sort=False)
    wide = wide[[m for m in metrics if m in wide.columns]].reset_index()
    wide.columns.name = None
    order = {arm: i for i, arm in enumerate(dict.fromkeys(agg["arm"]))}
    wide = wide.sort_values(["imbalance_ratio", "arm"], key=lambda s: s.map(order) if s.name == "arm" else s)
    return wide.assign(imbalance_ratio=[f"{v:g}" for v in wide["imbalance_ratio"]]).reset_index(drop=True)


def markdown(df: pd.DataFrame, headers: dict | None = None) -> str:
    headers = {"imbalance_ratio": "IR", **HEADERS, **(headers or {})}
    cols = list(df.columns)
    lines = ["| " + " | ".join(headers.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def figure(agg: pd.DataFrame, protocol: str = "balanced"):
    """TAET's Figure 2 from the aggregate, as the sweep report draws it, tall enough for 24 arms' legend."""
    return report.tradeoff_figure(agg, protocol).update_layout(height=760)


def write(sweep_root: str | Path, out: str | Path, *, command: str, wall_seconds: float | None,
          notes: str = "", a: str = "taet", b: str = "at_bsl") -> dict:
    """results/<name>/ from a finished sweep folder: aggregate.csv, claims.csv, tradeoff.png, README.md."""
    root, out = Path(sweep_root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agg = pd.read_csv(root / "aggregate.csv")
    metrics = pd.read_csv(root / "metrics.csv")
    runs = pd.read_csv(root / "runs.csv")
    diffs = seed_differences(metrics, a, b)
    agg.to_csv(out / "aggregate.csv", index=False)
    diffs.to_csv(out / "claims.csv", index=False)
    export_figure(figure(agg), out / "tradeoff.png", width=1100, height=760)
    text = readme(agg, diffs, runs, command=command, wall_seconds=wall_seconds, notes=notes)
    (out / "README.md").write_text(text)
    return {"aggregate": agg, "claims": diffs, "readme": text}


def readme(agg, diffs, runs, *, command: str, wall_seconds: float | None, notes: str = "") -> str:
    done = runs[runs["status"].isin(["done", "skipped"])]
    wall = f"{wall_seconds / 60:.0f} min" if wall_seconds else "not measured (the sweep was resumed)"
    parts = [
        "# Fashion-MNIST-LT: every method, measured on a CPU\n",
        f"```bash\n{command}\n```\n",
        f"Wall time: {wall} for {len(done)} of {len(runs)} runs, `--jobs 2` on 2 cores."
        f"{(' ' + notes) if notes else ''}\n",
        "Numbers are % (mean over seeds [95 % t-interval over seeds]). Robustness is PGD-20 at eps 0.1, any-iterate "
        "reading. TAET tail: the rarer half of the classes; weakest-k: each run's weakest ceil(C/3) = 4 classes. "
        "`aggregate.csv` holds every metric with mean, std, n, low and high; `claims.csv` the differences below.\n",
        "## TAET's claims, as measured\n",
        f"TAET - AT-BSL, per-seed differences, t-interval over seeds. In short, on the balanced test set: "
        f"{in_short(diffs)}\n",
        *[f"- {line}" for line in verdict(diffs, "balanced")],
        "\nOn the long-tailed test protocol:\n",
        *[f"- {line}" for line in verdict(diffs, "long_tailed")],
        "\n## Rankings (only where the intervals separate)\n",
        *[f"- {line}" for line in leaders(agg)],
        "\n## Balanced test set\n",
        "![balanced accuracy vs balanced robustness](tradeoff.png)\n",
        markdown(table(agg, "balanced")),
        "\n## Long-tailed test set\n",
        markdown(table(agg, "long_tailed")),
        "",
    ]
    return "\n".join(parts)


def readme_section(agg: pd.DataFrame, diffs: pd.DataFrame, wall_seconds: float | None) -> str:
    """docs/results.md's generated section (between MARKERS): the balanced table and the verdict."""
    wall = f" in {wall_seconds / 60:.0f} min on 2 cores" if wall_seconds else ""
    irs = " and ".join(f"{v:g}" for v in sorted(agg["imbalance_ratio"].unique()))
    return "\n".join([
        MARKERS[0],
        f"`make results` ran {agg['n'].max():.0f} seeds of every arm at IR {irs}{wall} "
        "([results/fmnist_lt/](../results/fmnist_lt/README.md): both test protocols, every metric, the figure). "
        "Balanced test set, % with 95 % t-intervals over seeds; robustness is PGD-20 (any-iterate):\n",
        markdown(table(agg, "balanced", HEADLINE)),
        f"\nTAET's claims, as measured (TAET - AT-BSL, per-seed differences, t-interval over seeds). In short: "
        f"{in_short(diffs)}\n",
        *[f"- {line}" for line in verdict(diffs, "balanced")],
        MARKERS[1],
    ])


def update_readme(path: str | Path, section: str) -> bool:
    """Replace the text between MARKERS in `path` (docs/results.md); False when it has no markers."""
    path = Path(path)
    text = path.read_text()
    if MARKERS[0] not in text or MARKERS[1] not in text:
        return False
    head, rest = text.split(MARKERS[0], 1)
    tail = rest.split(MARKERS[1], 1)[1]
    path.write_text(head + section + tail)
    return True
