"""Headline metrics of a run: the numbers a sweep, a study and their reports compare, read off each run's
evaluation (summary.csv and per_class.csv), one tidy row per protocol and metric, with the test images
each value weighs as (its interval's sample size: a long-tailed test set's rare classes hold few)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import class_groups, effective_images

__all__ = ["GROUPING", "SOURCE", "averaged_classes", "collect", "even_classes", "images_behind", "robust_attack_of",
           "run_metrics"]


def robust_attack_of(summary: pd.DataFrame, wanted: str | None) -> str | None:
    attacks = [a for a in dict.fromkeys(summary["attack"]) if a != "clean"]
    if wanted:
        return wanted if wanted in attacks else None
    return "pgd20" if "pgd20" in attacks else (attacks[0] if attacks else None)


SOURCE = {"clean_accuracy": "overall", "balanced_accuracy": "balanced", "robust_accuracy": "overall",
          "balanced_robustness": "balanced", "tail_robustness": "tail", "taet_tail_robustness": "tail_taet",
          "robustlt_tail_robustness": "tail_robustlt", "weakest_k_robustness": "weakest_k",
          "worst_class_robustness": "worst_recall"}   # metric -> its column of evaluate's summary


GROUPING = {"tail_robustness": "thirds", "taet_tail_robustness": "taet_tail",
            "robustlt_tail_robustness": "robustlt_tail"}   # a tail metric -> its metrics.class_groups grouping


def averaged_classes(metric: str, row: pd.Series, train_counts) -> list[int] | None:
    """The classes a metric averages the recall of (None: a plain accuracy over every image), from the
    run's summary row (weakest and worst classes) and the training count per class (the tails)."""
    if metric in ("clean_accuracy", "robust_accuracy"):
        return None
    if metric in GROUPING:
        return [int(c) for c in class_groups(train_counts, GROUPING[metric])["tail"]]
    if metric == "weakest_k_robustness":
        return [int(c) for c in str(row.get("weakest_classes", "")).split(",") if c.strip()]
    if metric == "worst_class_robustness":
        return [int(row["worst_class"])] if int(row.get("worst_class", -1)) >= 0 else []
    return list(range(len(train_counts)))   # balanced: every class


def images_behind(metric: str, row: pd.Series, classes: pd.DataFrame) -> float:
    """The test images a metric's value weighs as (its interval's sample size): every image of the
    protocol for a plain accuracy; for a mean of class rates, metrics.effective_images of the classes it
    averages (`classes`: the run's per-class table of one protocol, one row per class: n, train_count)."""
    picked = averaged_classes(metric, row, classes["train_count"].to_numpy())
    if picked is None:
        return float(classes["n"].sum())
    n = classes.set_index("class")["n"]
    return effective_images(n.reindex(picked).dropna().to_numpy())


def even_classes(summary: pd.DataFrame, num_classes: int = 10) -> pd.DataFrame:
    """A per-class table for a summary that has none (evaluate always writes one): each protocol's images
    spread evenly over the classes, in label order of frequency."""
    return pd.DataFrame([{"protocol": p, "class": c, "n": n / num_classes, "train_count": num_classes - c}
                         for p, n in zip(summary["protocol"], summary["n"]) for c in range(num_classes)])


def run_metrics(summary: pd.DataFrame, per_class: pd.DataFrame, robust_attack: str | None = None) -> pd.DataFrame:
    """Headline metrics of one run from evaluate's summary and per-class tables, per protocol (tidy:
    protocol, metric, value, low, high, images). The group metrics average the classes METRIC_GROUPS
    names; `images` is what each weighs as (images_behind: the long-tailed protocol's rare classes hold
    fewer images, so its class means weigh less than its image count)."""
    attack = robust_attack_of(summary, robust_attack)
    rows = []
    for protocol, s in summary.groupby("protocol", sort=False):
        classes = per_class[per_class["protocol"] == protocol].drop_duplicates("class")
        for m, col in SOURCE.items():
            if col not in s:   # a summary written before a column existed has no such metric
                continue
            # clean rows feed the two clean metrics, the robust attack's rows the rest
            row = s[s["attack"] == ("clean" if m in ("clean_accuracy", "balanced_accuracy") else attack)]
            got = row.iloc[0] if len(row) else None
            rows.append({"protocol": protocol, "metric": m, "robust_attack": attack,
                         "images": images_behind(m, got, classes) if got is not None else np.nan,
                         **{k: float(got[c]) if got is not None and c in s else np.nan
                            for k, c in (("value", col), ("low", col + "_low"), ("high", col + "_high"))}})
    return pd.DataFrame(rows)


def collect(status: pd.DataFrame, robust_attack: str | None, health: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-run headline metrics of every finished run (tidy, run columns first), with the split each run
    drew (split_seed: seeds sharing one split share their test images) and the images behind each value."""
    cols = ["run", "dataset", "imbalance_ratio", "method", "robustlt", "arm", "seed"]
    frames = []
    for row in status[status["status"].isin(["done", "skipped"])].to_dict("records"):
        ev = Path(row["run"]) / "eval"
        if (ev / "summary.csv").exists():
            config = Path(row["run"]) / "config.json"
            split = json.loads(config.read_text()).get("split_seed", 0) if config.exists() else np.nan
            summary = pd.read_csv(ev / "summary.csv", keep_default_na=False, na_values=[""])
            per_class = pd.read_csv(ev / "per_class.csv") if (ev / "per_class.csv").exists() else even_classes(summary)
            m = run_metrics(summary, per_class, robust_attack)
            frames.append(m.assign(**{k: row[k] for k in cols}, split_seed=split))
    out_cols = [*cols, "protocol", "metric", "value", "low", "high", "robust_attack", "images", "split_seed"]
    out = pd.concat(frames, ignore_index=True)[out_cols] if frames else pd.DataFrame(columns=out_cols)
    if health is not None:   # health.sweep_health: each run's gate, carried into every table
        ok = dict(zip(health["run"].astype(str), health["trained"].astype(bool)))
        out = out.assign(trained=[ok.get(str(r), True) for r in out["run"]])
    return out
