"""The health gate: did a run train? A run that fails any measured check is marked 'did not train' in
every table and figure and is left out of rankings and claims (a constant predictor scores 1/C balanced
robustness, so an untrained arm would otherwise look robust).

Three checks, each True, False or None (not measured):
- above_chance: the lower bound of its balanced accuracy (balanced test set, clean) lies above 1/C
  plus the preset's margin;
- levelled: its in-training validation curve (mean clean accuracy over classes, every eval_every
  epochs) rose by at most `plateau` over its last `window` evaluations; None without eval_every;
- finite_loss: every epoch's training loss in history.jsonl is finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .history import read_history

__all__ = ["CHECKS", "DID_NOT_TRAIN", "Rules", "above_chance", "finite_loss", "left_out", "levelled", "read_run",
           "run_health", "sweep_health", "validation_curve"]

DID_NOT_TRAIN = "did not train"
CHECKS = {"above_chance": "balanced accuracy not clearly above chance", "levelled": "still learning",
          "finite_loss": "non-finite loss", "run failed": "the run failed"}


@dataclass(frozen=True)
class Rules:
    margin: float = 0.05     # balanced accuracy's lower bound must clear 1/C + margin
    plateau: float = 0.03    # the validation curve may still rise by this much over its last evaluations
    window: int = 3          # evaluations the plateau is read over

    @classmethod
    def of(cls, d: dict | None) -> Rules:
        return cls(**(d or {}))


def above_chance(summary: pd.DataFrame, num_classes: int, rules: Rules) -> tuple[bool | None, float]:
    """(clean balanced accuracy's lower bound clears 1/C + margin, that bound) on the balanced protocol."""
    rows = summary[(summary["attack"] == "clean")]
    if "protocol" in rows and (rows["protocol"] == "balanced").any():
        rows = rows[rows["protocol"] == "balanced"]
    if not len(rows) or "balanced_low" not in rows or num_classes < 1:
        return None, float("nan")
    low = float(rows["balanced_low"].iloc[0])
    if not math.isfinite(low):
        return None, low
    return bool(low > 1 / num_classes + rules.margin), low


def validation_curve(history: list[dict]) -> list[float]:
    """Mean clean accuracy over classes at each evaluated epoch after the clean warm-up (TAET's stage 1)."""
    out = []
    for r in history:
        acc = r.get("val_clean_acc") or r.get("test_clean_acc")
        if acc and r.get("stage") != "stabilization":
            seen = [a for a in acc if a is not None]
            if seen:
                out.append(float(np.mean(seen)))
    return out


def levelled(history: list[dict], rules: Rules) -> bool | None:
    curve = validation_curve(history)
    if len(curve) < rules.window:
        return None
    return bool(curve[-1] - curve[-rules.window] <= rules.plateau)


def finite_loss(history: list[dict]) -> bool | None:
    losses = [r.get("loss") for r in history if "loss" in r]
    if not losses:
        return None
    return all(v is not None and math.isfinite(float(v)) for v in losses)


def run_health(summary: pd.DataFrame, history: list[dict], num_classes: int, rules: Rules = Rules()) -> dict:
    """One run's health record: the three checks, whether it trained, and why not."""
    chance, low = above_chance(summary, num_classes, rules)
    rec = {"above_chance": chance, "balanced_accuracy_low": low, "chance": 1 / num_classes if num_classes else np.nan,
           "levelled": levelled(history, rules), "finite_loss": finite_loss(history)}
    why, failed = [], [k for k in ("above_chance", "levelled", "finite_loss") if rec[k] is False]
    if rec["above_chance"] is False:
        why.append(f"balanced accuracy's lower bound {100 * low:.1f} % is not above chance "
                   f"{100 / num_classes:.1f} % + {100 * rules.margin:g} points")
    if rec["levelled"] is False:
        why.append(f"its validation curve still rose by more than {100 * rules.plateau:g} points over the last "
                   f"{rules.window} evaluations")
    if rec["finite_loss"] is False:
        why.append("its training loss was not finite")
    return {**rec, "trained": not why, "reason": "; ".join(why), "failed_checks": ",".join(failed)}


def read_run(run_dir: str | Path, rules: Rules = Rules()) -> dict:
    """run_health from a run folder: eval/summary.csv, eval/per_class.csv (C) and history.jsonl."""
    run_dir = Path(run_dir)
    summary = pd.read_csv(run_dir / "eval" / "summary.csv", keep_default_na=False, na_values=[""])
    per_class = run_dir / "eval" / "per_class.csv"
    num_classes = int(pd.read_csv(per_class)["class"].nunique()) if per_class.exists() else 0   # 0: not read
    return run_health(summary, read_history(run_dir), num_classes, rules)


def sweep_health(status: pd.DataFrame, rules: Rules = Rules()) -> pd.DataFrame:
    """One health row per run of a sweep: finished runs checked, failed runs 'did not train' (the error)."""
    rows = []
    for row in status.to_dict("records"):
        keys = {k: row.get(k) for k in ("run", "imbalance_ratio", "arm", "seed")}
        if row["status"] in ("done", "skipped") and (Path(row["run"]) / "eval" / "summary.csv").exists():
            rows.append({**keys, **read_run(row["run"], rules)})
        else:
            rows.append({**keys, "trained": False, "failed_checks": "run failed",
                         "reason": f"the run failed: {row.get('error') or row['status']}"})
    cols = ["run", "imbalance_ratio", "arm", "seed", "trained", "failed_checks", "reason", "above_chance",
            "balanced_accuracy_low", "chance", "levelled", "finite_loss"]
    return pd.DataFrame(rows, columns=cols)


def left_out(health: pd.DataFrame) -> str:
    """What a report says about the runs left out: how many, and why (grouped by reason)."""
    bad = health[~health["trained"].astype(bool)]
    if bad.empty:
        return f"All {len(health)} runs passed the health gate."
    parts = [", ".join(CHECKS.get(c, c) for c in why.split(",")) + ": "
             + ", ".join(f"{a} IR {ir:g} seed {s}" for a, ir, s in zip(g["arm"], g["imbalance_ratio"], g["seed"]))
             for why, g in bad.groupby("failed_checks", sort=False)]
    verb = "is" if len(bad) == 1 else "are"
    return f"{len(bad)} of {len(health)} runs {DID_NOT_TRAIN} and {verb} left out of rankings and claims: " + \
        "; ".join(parts) + "."

