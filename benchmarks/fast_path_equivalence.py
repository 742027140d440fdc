"""Does the fast path keep the numbers? Paired fp32 vs fast-path (bf16 + channels_last) runs of the same arms
and seeds: per pair the difference of balanced accuracy and balanced robustness (fast minus fp32, points),
then t-intervals over seeds per arm and over all pairs pooled.

    .venv/bin/python benchmarks/fast_path_equivalence.py --fp32 runs/eqs/fp32 --fast runs/eqs/fast \
        [--out benchmarks/fast_path_equivalence]

The runs come from two sweeps with the same preset and seeds, differing only in
`--set precision=fp32 memory_format=contiguous` vs `--set precision=bf16 memory_format=channels_last`
(benchmarks/fast_path_equivalence.sh runs both). Evaluation is fp32 in both (eval_precision's default), on
the same test images. The rule (issue 21): the fast path may become the default only if the intervals
exclude a difference larger than 1 point either way, i.e. lie inside [-1, +1].
Writes OUT.csv (one row per pair, with each run's training seconds) and prints the summary as markdown.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taetlib.intervals import combine  # noqa: E402
from taetlib.markdown_table import markdown  # noqa: E402
from taetlib.report import find_runs, run_info  # noqa: E402

METRICS = {"balanced_accuracy": "clean", "balanced_robustness": "pgd20"}   # metric -> attack row of summary.csv
BOUND = 1.0   # points


def run_rows(root: Path, mode: str) -> pd.DataFrame:
    rows = []
    for run in find_runs(root):
        info = run_info(run)
        s = pd.read_csv(run / "eval" / "summary.csv")
        s = s[s.protocol == "balanced"]
        hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        row = {"arm": info["arm"], "seed": info["seed"], "mode": mode, "train_seconds": sum(h["seconds"] for h in hist)}
        for metric, attack in METRICS.items():
            row[metric] = 100 * float(s.loc[s.attack == attack, "balanced"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows, columns=["arm", "seed", "mode", "train_seconds", *METRICS])


def pairs(fp32: pd.DataFrame, fast: pd.DataFrame) -> pd.DataFrame:
    p = fp32.merge(fast, on=["arm", "seed"], suffixes=("_fp32", "_fast"))
    for m in METRICS:
        p[f"d_{m}"] = p[f"{m}_fast"] - p[f"{m}_fp32"]
    return p.drop(columns=["mode_fp32", "mode_fast"]).sort_values(["seed", "arm"]).reset_index(drop=True)


def summary(p: pd.DataFrame) -> pd.DataFrame:
    rows = []
    groups = [(arm, g) for arm, g in p.groupby("arm", sort=False)] + [("pooled (all pairs)", p)]
    for name, g in groups:
        for m in METRICS:
            ci = combine(g[f"d_{m}"])   # no per-seed variance given: the t-interval over the paired differences
            inside = ci["k"] >= 2 and -BOUND <= ci["low"] and ci["high"] <= BOUND
            rows.append({"arm": name, "metric": m, "pairs": ci["k"], "mean_diff": ci["mean"], "low": ci["low"],
                         "high": ci["high"], f"within_±{BOUND:g}": inside})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", default="runs/eqs/fp32")
    ap.add_argument("--fast", default="runs/eqs/fast")
    ap.add_argument("--out", default="benchmarks/fast_path_equivalence")
    args = ap.parse_args()
    fp32, fast = run_rows(Path(args.fp32), "fp32"), run_rows(Path(args.fast), "fast")
    p = pairs(fp32, fast)
    p.to_csv(f"{args.out}.csv", index=False, float_format="%.4g")
    s = summary(p)
    print(f"finished runs: fp32 {len(fp32)}, fast {len(fast)}; pairs {len(p)}\n")
    print(markdown(p, floats=".2f"))
    print()
    print(markdown(s, floats=".2f"))
    if len(p):
        ratio = p["train_seconds_fast"].sum() / p["train_seconds_fp32"].sum()
        print(f"\ntraining seconds, paired runs: fp32 {p['train_seconds_fp32'].sum():.0f}, fast "
              f"{p['train_seconds_fast'].sum():.0f} (fast / fp32 = {ratio:.2f})")
    pooled = s[s.arm.str.startswith("pooled")]
    ok = len(pooled) and bool(pooled[f"within_±{BOUND:g}"].all())
    print(f"\nverdict: {'the pooled intervals lie within' if ok else 'the pooled intervals do NOT lie within'} "
          f"±{BOUND:g} point for both metrics")


if __name__ == "__main__":
    main()
