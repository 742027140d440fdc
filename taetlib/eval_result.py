"""The tables of an evaluation and their files: per-class tables, the summary row per attack and
protocol, and EvalResult, which holds them with the predictions and saves / loads them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics, stats

__all__ = ["EvalResult", "per_class_table", "summary_table"]


def per_class_table(attack, protocol, eps, y, pred, class_names) -> pd.DataFrame:
    """One row per class: n, correct, recall and its Wilson 95 % interval (recall_low, recall_high)."""
    n, correct = metrics.per_class_counts(y, pred, len(class_names))
    low, high = np.array([stats.wilson(k, m) for k, m in zip(correct, n)]).reshape(-1, 2).T
    return pd.DataFrame({"attack": attack, "protocol": protocol, "eps": float(eps),
                         "class": np.arange(len(class_names)), "class_name": list(class_names),
                         "n": n, "correct": correct, "recall": metrics.per_class_recall(y, pred, len(class_names)),
                         "recall_low": low, "recall_high": high})


def summary_table(table: pd.DataFrame, predictions: dict, train_counts, class_names, flags: pd.DataFrame,
                  seconds: dict, small: dict | None = None) -> pd.DataFrame:
    """Per attack x protocol: overall (with its Wilson 95 % interval), balanced (accuracy for clean,
    robustness otherwise; with a 95 % bootstrap interval resampled within each class), head / medium /
    tail (thirds), TAET's and RobustLT's tails, the weakest ceil(C/3) classes, the worst class, absent
    classes, the raised flags that concern the row (never hidden) and the classes too small to read
    (`small`: protocol -> text, sanity.small_classes)."""
    small = small or {}
    rows = []
    attacks_run = set(table.attack)
    raised = flags[flags.raised]
    for (attack, protocol), t in table.groupby(["attack", "protocol"], sort=False):
        p = predictions[(protocol, attack)]
        s = metrics.summarize(p["y"], p["pred"], train_counts, len(class_names))
        y = np.asarray(p["y"])
        o_low, o_high = stats.wilson(int((y == np.asarray(p["pred"])).sum()), len(y))
        _, b_low, b_high = stats.balanced_interval(y, p["pred"]) if len(y) else (np.nan, np.nan, np.nan)
        # a flag about an attack without a row of its own (the sweep, 'all') shows on every row
        mine = raised[(raised.protocol == protocol) & ((raised.attack == attack) | ~raised.attack.isin(attacks_run))]
        rows.append({
            "attack": attack, "protocol": protocol, "eps": float(t.eps.iloc[0]), "n": int(t.n.sum()),
            "metric": "balanced_accuracy" if attack == "clean" else "balanced_robustness",
            "overall": s["overall"], "overall_low": o_low, "overall_high": o_high,
            "balanced": s["balanced"], "balanced_low": b_low, "balanced_high": b_high,
            "head": s["head"], "medium": s["medium"],
            "tail": s["tail"], "tail_taet": s["tail_taet"], "tail_robustlt": s["tail_robustlt"],
            "weakest_k": s["weakest_k"], "weakest_classes": ",".join(map(str, s["weakest_classes"])),
            "worst_class": s["worst_class"],
            "worst_class_name": class_names[s["worst_class"]] if s["worst_class"] >= 0 else "",
            "worst_recall": s["worst_recall"], "absent_classes": ",".join(map(str, s["absent_classes"])),
            "raised_flags": ",".join(dict.fromkeys(mine.flag)),
            "small_classes": small.get(protocol, ""),
            "seconds": seconds.get((protocol, attack), float("nan")),
        })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ result
@dataclass
class EvalResult:
    table: pd.DataFrame          # attack, protocol, eps, class, class_name, n, correct, recall
    summary: pd.DataFrame        # one row per attack x protocol, with the raised flags
    flags: pd.DataFrame          # every sanity check: flag, attack, protocol, classes, raised, detail
    curves: pd.DataFrame         # the eps sweep, same columns as table (attack = SWEEP_ATTACK)
    predictions: dict            # (protocol, attack or "pgd20@eps=E") -> {"y", "pred", "index"}
    config: dict                 # attacks with full parameters, eps, subset, seed, versions
    log: list = field(default_factory=list)  # pyautoattack's log lines

    @property
    def raised(self) -> pd.DataFrame:
        return self.flags[self.flags.raised]

    def save(self, out_dir) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(out / "per_class.csv", index=False)
        self.summary.to_csv(out / "summary.csv", index=False)
        self.flags.to_csv(out / "flags.csv", index=False)
        self.curves.to_csv(out / "curves.csv", index=False)
        np.savez_compressed(out / "predictions.npz", **{f"{p}/{a}/{k}": v for (p, a), d in self.predictions.items()
                                                         for k, v in d.items()})
        (out / "eval_config.json").write_text(json.dumps(self.config, indent=2, default=str) + "\n")
        if self.log:
            (out / "autoattack.log").write_text("\n".join(self.log) + "\n")
        return out

    @classmethod
    def load(cls, out_dir) -> EvalResult:
        out = Path(out_dir)

        def read(name, text=()):  # text columns: "" stays "", not NaN; "3" stays "3", not 3
            df = pd.read_csv(out / name, dtype={c: str for c in text})
            return df.fillna({c: "" for c in text})

        preds: dict = {}
        with np.load(out / "predictions.npz") as z:
            for key in z.files:
                p, a, k = key.rsplit("/", 2)
                preds.setdefault((p, a), {})[k] = z[key]
        log = out / "autoattack.log"
        return cls(read("per_class.csv"), read("summary.csv", ("absent_classes", "raised_flags", "worst_class_name",
                                                                 "weakest_classes", "small_classes")),
                   read("flags.csv", ("classes", "detail")), read("curves.csv"), preds,
                   json.loads((out / "eval_config.json").read_text()),
                   log.read_text().splitlines() if log.exists() else [])

    def __repr__(self) -> str:
        cols = ["attack", "protocol", "eps", "n", "overall", "balanced", "head", "medium", "tail", "tail_taet",
                "weakest_k", "worst_class_name", "worst_recall", "raised_flags"]
        lines = ["EvalResult", self.summary[cols].to_string(index=False, float_format="{:.4f}".format)]
        raised = self.raised
        lines.append(f"sanity flags: {len(raised)} raised of {len(self.flags)} checks")
        lines += [f"  [{r.protocol}] {r.flag} ({r.attack}): {r.detail}" for r in raised.itertuples()]
        return "\n".join(lines)
