"""fit()'s per-epoch history: read from a run folder, and turned into tidy tables for the figures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["compute_seconds", "history_tables", "history_text", "read_history"]


def history_tables(records: list[dict], class_names=None) -> dict[str, pd.DataFrame]:
    """fit()'s history records (one dict per epoch) -> {'scalars': ..., 'per_class': ...} tidy tables.

    Numbers become scalar rows (lr, loss, loss_bcl, ..., seconds); per-class lists `<split>_<kind>_acc`
    (train_clean_acc, test_pgd_acc, ...) become per-class rows, and their mean over the classes seen
    a scalar row of the same name; None (not measured that epoch) is left out. HARL's per-class
    weights (`class_weight`, each class's mean over the epoch's batches) become the 'class_weight' table, with
    the share of those batches in which it was negative (`negative_batches`; NaN where not recorded)."""
    scalars, per_class, weights = [], [], []
    for r in records:
        epoch, stage = r.get("epoch"), r.get("stage", "")
        for k, v in r.items():
            if k in ("epoch", "stage") or v is None:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                scalars.append((epoch, stage, k, float(v)))
            elif k == "class_weight":
                negative = r.get("class_weight_negative") or [None] * len(v)   # older runs did not record it
                weights += [(epoch, stage, c, float(w), np.nan if n is None else float(n))
                            for c, (w, n) in enumerate(zip(v, negative)) if w is not None]
            elif isinstance(v, list) and k.endswith("_acc"):
                split, _, kind = k.removesuffix("_acc").partition("_")
                seen = [(c, float(a)) for c, a in enumerate(v) if a is not None]
                per_class += [(epoch, stage, split, kind, c, a) for c, a in seen]
                if seen:
                    scalars.append((epoch, stage, k, float(np.mean([a for _, a in seen]))))
    pc = pd.DataFrame(per_class, columns=["epoch", "stage", "split", "kind", "class", "value"])
    names = list(class_names) if class_names is not None else None
    pc["class_name"] = [names[c] if names and c < len(names) else f"class {c}" for c in pc["class"]]
    cw = pd.DataFrame(weights, columns=["epoch", "stage", "class", "value", "negative_batches"])
    cw["class_name"] = [names[c] if names and c < len(names) else f"class {c}" for c in cw["class"]]
    return {"scalars": pd.DataFrame(scalars, columns=["epoch", "stage", "metric", "value"]), "per_class": pc,
            "class_weight": cw}




def compute_seconds(records: list[dict]) -> float:
    """The seconds a history's epochs took (training and in-training evaluation), over every session that
    trained them: a run resumed after a kill counts its earlier epochs too."""
    return float(sum(r.get("seconds", 0.0) + (r.get("eval_seconds") or 0.0) for r in records))


def read_history(run_dir: str | Path) -> list[dict]:
    """A run's history.jsonl, with a TAET run's stage-1 epochs (stage1/) first where not carried over."""
    run_dir = Path(run_dir)
    records: dict[int, dict] = {}
    for p in (run_dir / "stage1" / "history.jsonl", run_dir / "history.jsonl"):
        if p.exists():
            for line in p.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    records[r["epoch"]] = r
    return [records[e] for e in sorted(records)]


def history_text(history: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in history)
