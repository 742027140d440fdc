"""The equal tuning budget's record as a study or sweep report states it (root/tuning/tuning.json, written by
tuning.py): each arm's chosen value as a table, and one sentence on how it was chosen, what it cost, which
choices sit at the edge of their grid, what was reused and which arms share another's value."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .run_files import reused_text

__all__ = ["edge_text", "held_text", "tuning_record"]


def held_text(rows: pd.DataFrame, held_fixed) -> str:
    """The arms held at another arm's value across the study's factor (tuning.held_fixed)."""
    shared = rows[rows["tuned_as"] != rows["arm"]]
    if not len(shared):
        return ""
    held = ", ".join(held_fixed or [])
    return (f" {held} is the study's factor, so an arm is tuned without its own {held} and keeps that value "
            "across it: " + ", ".join(f"{a} takes {t}'s" for a, t in zip(shared["arm"], shared["tuned_as"])) + ".")


def edge_text(rows: pd.DataFrame, grids: dict) -> str:
    """The arms whose chosen factor is their grid's highest or lowest: their best value may lie beyond it."""
    edge = [f"{a} (x{f:g}, its grid's {'highest' if f == max(grids[p]) else 'lowest'})"
            for a, p, f in zip(rows["arm"], rows["param"], rows["factor"])
            if grids.get(p) and f in (min(grids[p]), max(grids[p]))]
    return f" Chosen at the edge of the grid, so the best value may lie beyond it: {', '.join(edge)}." if edge else ""


def tuning_record(root: Path) -> tuple[pd.DataFrame, str] | None:
    """Each arm's chosen value (a table) and the sentence that says how; None when the sweep did not tune."""
    path = Path(root) / "tuning" / "tuning.json"
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    spec = rec.get("spec") or {}
    rows = pd.DataFrame([{"imbalance_ratio": ir, "arm": arm, "param": c["param"], "value": c["value"],
                          "factor": c["factor"], "val_balanced_robustness": c["val_balanced_robustness"],
                          "tuned_as": c.get("tuned_as", arm)}
                         for ir, arms in rec["choices"].items() for arm, c in arms.items()])
    kept = held_text(rows, spec.get("held_fixed"))
    cost = rec["cost"]
    text = (f"Each arm's value was chosen once, on seed {rec['seed']}, by balanced {rec['attack']} robustness on a "
            f"validation split ({rec['validation']}), from the same number of values for every arm; "
            f"{cost['runs']} tuning runs, {cost['seconds'] / 3600:.1f} h of training, {cost['sgd_steps']} SGD steps "
            "(tuning/tuning.csv lists them)." + edge_text(rows, spec.get("factors") or {}) +
            reused_text(root, "tuning") + kept +
            (f" This record was reconstructed: {rec['reconstructed']}" if rec.get("reconstructed") else ""))
    return (rows if kept else rows.drop(columns="tuned_as")), text
