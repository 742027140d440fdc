"""What the studies' READMEs and the top README's demo section share: TAET's claims read by the interval
engine (the preset's primary comparisons, Holm-adjusted; the rest descriptive), the aggregate as a table with
its intervals, the trade-off figure, and the README's demo verdicts from a finished demo folder (`make demo`).

TAET's claims:
  1. higher balanced robustness than AT-BSL;
  2. higher robustness on TAET's tail (the rarer half of the classes). The weakest ceil(C/3) classes of
     each run are read too, descriptively.
A difference is a - b per seed (same seed, same split), combined over seeds by the interval engine
(taetlib.intervals: random effects, Hartung-Knapp). Runs that did not train (taetlib.health) are left out.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import compare, presets, report, verdicts
from . import health as healthlib

__all__ = ["CLAIMS", "DEMO_MARKERS", "TABLE", "claim_readings", "demo_section", "figure", "sweep_readings", "table",
           "update_section"]

TABLE = ["balanced_accuracy", "balanced_robustness", "taet_tail_robustness", "weakest_k_robustness",
         "worst_class_robustness"]
CLAIMS = {"balanced_robustness": "claim 1: balanced robustness",
          "taet_tail_robustness": "claim 2: TAET's tail classes (the rarer half), robust",
          "weakest_k_robustness": "the weakest ceil(C/3) classes, robust"}


def claim_readings(metrics: pd.DataFrame, a: str = "taet", b: str = "at_bsl", *, primary) -> list[dict]:
    """TAET's claims as the engine reads them from a sweep's per-run metrics (compare.claim_readings), the
    comparisons in `primary` (a preset's, declared before its runs) as claims."""
    missing = [x for x in (a, b) if x not in set(metrics["arm"])]
    if missing:
        raise KeyError(f"arms {missing}: not in this sweep's metrics (arms: {sorted(metrics['arm'].unique())})")
    return compare.claim_readings(metrics, a, b, CLAIMS, primary)


def table(agg: pd.DataFrame, protocol: str, metrics=TABLE, arms: list[str] | None = None) -> pd.DataFrame:
    """One row per IR and arm: the seeds its means hold, each metric as 'mean [low, high]' in %, each arm with
    runs that did not train named so (compare.marked). Arms come in `arms`' order (the sweep's), else as the
    aggregate lists them (report.aggregate: alphabetical); an arm `arms` lacks comes last."""
    order = {arm: i for i, arm in enumerate(dict.fromkeys([*(arms or []), *agg["arm"]]))}
    a = agg.assign(_order=agg["arm"].map(order))
    a = compare.marked(a)
    a = a[(a["protocol"] == protocol) & a["metric"].isin(metrics)]
    cell = [f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if np.isfinite(lo) else f"{100 * m:.1f}"
            for m, lo, hi in zip(a["mean"], a["low"].astype(float), a["high"].astype(float))]
    wide = a.assign(cell=cell).pivot_table(index=["imbalance_ratio", "_order", "arm"], columns="metric",
                                           values="cell", aggfunc="first", sort=False)
    wide = wide[[m for m in metrics if m in wide.columns]].reset_index()
    wide.columns.name = None
    wide = wide.sort_values(["imbalance_ratio", "_order"]).drop(columns="_order")
    # a partial study mixes arms with all seeds and arms with one: say how many each mean holds
    seeds = a.groupby(["imbalance_ratio", "arm"])["n"].max()
    wide.insert(2, "seeds", [int(seeds[k]) for k in zip(wide["imbalance_ratio"], wide["arm"])])
    return wide.assign(imbalance_ratio=[f"{v:g}" for v in wide["imbalance_ratio"]]).reset_index(drop=True)


def figure(agg: pd.DataFrame, protocol: str = "balanced"):
    """TAET's Figure 2 from the aggregate, as the sweep report draws it, tall enough for 24 arms' legend."""
    return report.tradeoff_figure(agg, protocol).update_layout(height=760)


DEMO_MARKERS = ("<!-- demo:verdict -->", "<!-- /demo:verdict -->")   # the README's generated demo section


def sweep_readings(root: str | Path) -> dict:
    """What a sweep folder's verdicts are read from: aggregate.csv, metrics.csv (rebuilt from the aggregate
    when it is absent and every cell is one run), health.csv, the primary comparisons and the number of
    seeds of its sweep.json."""
    root = Path(root)
    agg = pd.read_csv(root / "aggregate.csv")
    if (root / "metrics.csv").exists():
        metrics = pd.read_csv(root / "metrics.csv")
    elif (agg["n"] == 1).all():   # one run per cell: its value is the mean
        metrics = agg.rename(columns={"mean": "value"}).assign(seed=0)
    else:
        raise FileNotFoundError(f"{root}: no metrics.csv, and its aggregate holds more than one seed per cell")
    spec = json.loads((root / "sweep.json").read_text()) if (root / "sweep.json").exists() else {}
    primary = spec.get("primary") or (list(presets.get(spec["preset"]).primary) if spec.get("preset") else [])
    gate = pd.read_csv(root / "health.csv") if (root / "health.csv").exists() else None
    return {"aggregate": agg, "metrics": metrics, "primary": primary, "health": gate,
            "declared": len(spec["seeds"]) if spec.get("seeds") else None}


def demo_section(root: str | Path, a: str = "taet", b: str = "at_bsl") -> str:
    """The README's demo verdicts (between DEMO_MARKERS) from a finished demo folder (`make demo`'s
    runs/demo): each arm's balanced robustness with the interval the engine gives it, and every verdict
    sentence from verdicts.sentence (claims, rankings), with the runs the health gate left out."""
    got = sweep_readings(root)
    agg, metrics = got["aggregate"], got["metrics"]
    rob = compare.marked(agg)
    rob = rob[(rob["protocol"] == "balanced") & (rob["metric"] == "balanced_robustness")]
    width = max(len(x) for x in rob["arm"]) + 2
    lines = [f"{arm:{width}s}{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
             for arm, m, lo, hi in zip(rob["arm"], rob["mean"], rob["low"], rob["high"])]
    sources = "; ".join(dict.fromkeys(str(x) for x in rob["interval"].dropna() if x)) if "interval" in rob else ""
    readings = [r for r in compare.claim_readings(metrics, a, b, CLAIMS, got["primary"], got["declared"])
                if r["protocol"] == "balanced"] if {a, b} <= set(metrics["arm"]) else []
    gate = got["health"]
    return "\n".join([
        DEMO_MARKERS[0],
        f"Balanced test set, PGD-20 balanced robustness, % with 95 % intervals ({sources or 'not recorded'}):\n",
        "```", *lines, "```\n",
        "Verdicts, as the interval engine reads them (`make demo` writes this section, and `python -m taetlib "
        "readme-section runs/demo` again from a finished demo; `docs/statistics.md` says how). "
        f"{verdicts.sentence({'kind': 'summary', 'readings': readings})}\n",
        *[f"- {verdicts.sentence(r)}" for r in sorted(readings, key=lambda r: r["kind"] != "claim")],
        *[f"- {verdicts.sentence(r)}" for r in compare.rankings(metrics, "balanced_robustness", "balanced")],
        "- " + (healthlib.left_out(gate) if gate is not None else
                "Health gate: not recorded for these runs (no health.csv)."),
        DEMO_MARKERS[1],
    ])


def update_section(path: str | Path, section: str, markers: tuple[str, str]) -> bool:
    """Replace the text between `markers` in `path` (a README or docs page); False when it has none."""
    path = Path(path)
    text = path.read_text()
    if markers[0] not in text or markers[1] not in text:
        return False
    head, rest = text.split(markers[0], 1)
    tail = rest.split(markers[1], 1)[1]
    path.write_text(head + section + tail)
    return True
