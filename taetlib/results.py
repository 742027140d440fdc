"""A sweep's published results folder (results/<name>/, committed): the aggregate with its intervals,
TAET's two claims read by the interval engine, a figure exported by plotly, and a README that holds
the command, the wall time, the table and the verdicts, every one worded by verdicts.sentence.
`python -m taetlib results` (`make results`) runs preset fmnist_lt_results and writes results/fmnist_lt/.

TAET's claims (the preset declares them primary, Holm-adjusted; the rest is descriptive):
  1. higher balanced robustness than AT-BSL;
  2. higher robustness on TAET's tail (the rarer half of the classes). The weakest ceil(C/3) classes of
     each run are read too, descriptively.
A difference is a - b per seed (same seed, same split), combined over seeds by the interval engine
(taetlib.intervals: random effects, Hartung-Knapp). Runs that did not train (taetlib.health) are left out.
`reread` re-reads a folder written before the engine from its saved means and std alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import compare, data, intervals, presets, report, verdicts
from . import health as healthlib
from .figure_files import export_figure
from .markdown_table import markdown

__all__ = ["CANNOT", "CLAIMS", "DEMO_MARKERS", "HEADLINE", "IMAGES", "MARKERS", "PRESET", "SOURCES_NOTE", "TABLE",
           "claim_readings", "demo_section", "figure", "leaders", "readme", "readme_section", "reread",
           "reread_aggregate", "reread_claims", "saved_images", "sweep_readings", "table", "update_section", "verdict",
           "write"]

TABLE = ["balanced_accuracy", "balanced_robustness", "taet_tail_robustness", "weakest_k_robustness",
         "worst_class_robustness"]
HEADLINE = TABLE[:4]   # docs/results.md's columns
MARKERS = ("<!-- results:fmnist_lt -->", "<!-- /results:fmnist_lt -->")   # its generated section
CLAIMS = {"balanced_robustness": "claim 1: balanced robustness",
          "taet_tail_robustness": "claim 2: TAET's tail classes (the rarer half), robust",
          "weakest_k_robustness": "the weakest ceil(C/3) classes, robust"}
PRESET = "fmnist_lt_results"
IMAGES = {"balanced_accuracy": 1.0, "balanced_robustness": 1.0, "taet_tail_robustness": 0.5,
          "weakest_k_robustness": 0.4, "worst_class_robustness": 0.1}   # share of a protocol's images (10 classes)


def claim_readings(metrics: pd.DataFrame, a: str = "taet", b: str = "at_bsl", primary=None) -> list[dict]:
    """TAET's claims as the engine reads them from a sweep's per-run metrics (compare.claim_readings)."""
    missing = [x for x in (a, b) if x not in set(metrics["arm"])]
    if missing:
        raise KeyError(f"arms {missing}: not in this sweep's metrics (arms: {sorted(metrics['arm'].unique())})")
    return compare.claim_readings(metrics, a, b, CLAIMS, presets.get(PRESET).primary if primary is None else primary)


def verdict(readings: list[dict], protocol: str = "balanced") -> list[str]:
    """One sentence per reading of `protocol`, primary ones first (verdicts.sentence writes each)."""
    mine = [r for r in readings if r["protocol"] == protocol]
    return [verdicts.sentence(r) for r in sorted(mine, key=lambda r: r["kind"] != "claim")]


def leaders(metrics: pd.DataFrame, protocol: str = "balanced") -> list[str]:
    """Per IR, the rankings by Holm-adjusted paired differences against the best arm (compare.rankings)."""
    return [verdicts.sentence(r) for r in compare.rankings(metrics, "balanced_robustness", protocol)]


def table(agg: pd.DataFrame, protocol: str, metrics=TABLE) -> pd.DataFrame:
    """One row per IR and arm: each metric as 'mean [low, high]' in %, arms in the sweep's order, each arm
    with runs that did not train named so (compare.marked)."""
    order = {arm: i for i, arm in enumerate(dict.fromkeys(agg["arm"]))}
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
    return wide.assign(imbalance_ratio=[f"{v:g}" for v in wide["imbalance_ratio"]]).reset_index(drop=True)


def figure(agg: pd.DataFrame, protocol: str = "balanced"):
    """TAET's Figure 2 from the aggregate, as the sweep report draws it, tall enough for 24 arms' legend."""
    return report.tradeoff_figure(agg, protocol).update_layout(height=760)


def write(sweep_root: str | Path, out: str | Path, *, command: str, wall_seconds: float | None,
          notes: str = "", a: str = "taet", b: str = "at_bsl") -> dict:
    """results/<name>/ from a finished sweep folder: aggregate.csv, claims.csv (every reading of the
    engine), tradeoff.png, README.md."""
    root, out = Path(sweep_root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agg = pd.read_csv(root / "aggregate.csv")
    metrics = pd.read_csv(root / "metrics.csv")
    runs = pd.read_csv(root / "runs.csv")
    gate = pd.read_csv(root / "health.csv") if (root / "health.csv").exists() else None
    readings = claim_readings(metrics, a, b)
    agg.to_csv(out / "aggregate.csv", index=False)
    compare.readings_table(readings).to_csv(out / "claims.csv", index=False)
    export_figure(figure(agg), out / "tradeoff.png", width=1100, height=760)
    done = runs[runs["status"].isin(["done", "skipped"])]
    wall = f"{wall_seconds / 60:.0f} min" if wall_seconds else "not measured (the sweep was resumed)"
    text = readme(agg, readings, command=command,
                  timing=f"Wall time: {wall} for {len(done)} of {len(runs)} runs, `--jobs 2` on 2 cores."
                  + (f" {notes}" if notes else ""),
                  rankings={p: leaders(metrics, p) for p in ("balanced", "long_tailed")},
                  health=healthlib.left_out(gate) if gate is not None else "No health records.")
    (out / "README.md").write_text(text)
    return {"aggregate": agg, "claims": readings, "readme": text}


SOURCES_NOTE = ("Numbers are % (mean over seeds [95 % interval]). Each interval says which variance it holds "
                "(`aggregate.csv`, column `interval`): {sources}. Intervals of one arm's score are computed on the "
                "logit scale and stay inside [0, 100]; a cell where every seed scored 0 gets the Wilson bound of "
                "its pooled images. Robustness is PGD-20 at eps 0.1, any-iterate reading. TAET tail: the rarer half "
                "of the classes; weakest-k: each run's weakest ceil(C/3) = 4 classes.\n")


def readme(agg, readings, *, command: str, timing: str, rankings: dict, health: str, cannot: tuple | list = ()) -> str:
    sources = "; ".join(dict.fromkeys(str(x) for x in agg["interval"].dropna() if x)) if "interval" in agg else ""
    parts = [
        "# Fashion-MNIST-LT: every method, measured on a CPU\n",
        f"```bash\n{command}\n```\n",
        timing + "\n",
        SOURCES_NOTE.format(sources=sources or "not recorded"),
        *(["## What these numbers cannot support\n", *[f"- {c}" for c in cannot], ""] if cannot else []),
        "## TAET's claims, as measured\n",
        "TAET - AT-BSL per seed, combined over seeds by the interval engine (random effects, Hartung-Knapp; "
        "`docs/statistics.md`). The preset declares the primary comparisons; only they can hold or be "
        f"contradicted. {verdicts.sentence({'kind': 'summary', 'readings': readings})}\n",
        "On the balanced test set:\n",
        *[f"- {line}" for line in verdict(readings, "balanced")],
        "\nOn the long-tailed test protocol (descriptive):\n",
        *[f"- {line}" for line in verdict(readings, "long_tailed")],
        "\n## Rankings (Holm-adjusted paired differences against the best arm)\n",
        *[f"- {line}" for p, lines in rankings.items() for line in lines],
        "\n## Runs that did not train\n",
        health + "\n",
        "## Balanced test set\n",
        "![balanced accuracy vs balanced robustness](tradeoff.png)\n",
        markdown(table(agg, "balanced")),
        "\n## Long-tailed test set\n",
        markdown(table(agg, "long_tailed")),
        "",
    ]
    return "\n".join(parts)


def readme_section(agg: pd.DataFrame, readings: list[dict], wall_seconds: float | None, note: str = "") -> str:
    """The top-level README's results section (between MARKERS): the balanced table and the verdicts of
    the primary comparisons (verdicts.sentence)."""
    wall = f" in {wall_seconds / 60:.0f} min on 2 cores" if wall_seconds else ""
    irs = " and ".join(f"{v:g}" for v in sorted(agg["imbalance_ratio"].unique()))
    return "\n".join([
        MARKERS[0],
        f"`make results` ran {agg['n'].max():.0f} seeds of every arm at IR {irs}{wall} "
        "([results/fmnist_lt/](../results/fmnist_lt/README.md): both test protocols, every metric, the figure, and "
        "what these numbers cannot support). Balanced test set, % with 95 % intervals (logit scale, inside [0, 100]); "
        "robustness is PGD-20 (any-iterate):\n",
        markdown(table(agg, "balanced", HEADLINE)),
        f"\nTAET's claims, as measured (TAET - AT-BSL; primary comparisons Holm-adjusted). "
        f"{verdicts.sentence({'kind': 'summary', 'readings': readings})}{(' ' + note) if note else ''}\n",
        *[f"- {verdicts.sentence(r)}" for r in readings if r["kind"] == "claim"],
        MARKERS[1],
    ])


def saved_images(protocol: str, ir: float, metric: str, per_class: int = 200, classes: int = 10) -> float:
    """Test images behind a saved metric of the fmnist_lt_results sweep (test_per_class 200): every class's
    200 on the balanced protocol, the long-tailed profile inside them on the other; a group metric its share
    (the rarer half for TAET's tail: its exact images; the weakest four and the worst class: their share)."""
    counts = np.array([per_class] * classes if protocol == "balanced" else data.longtail_counts(per_class, classes, ir))
    if metric == "taet_tail_robustness":
        return float(counts[classes // 2:].sum())
    return float(counts.sum() * IMAGES.get(metric, 1.0))


def reread_claims(saved: pd.DataFrame, agg: pd.DataFrame, primary) -> list[dict]:
    """Readings of TAET - AT-BSL from the per-seed differences' saved mean, std and n (no per-seed values were
    kept): the engine with equal weights (intervals.from_summary) plus the test-image variance the seeds
    shared (one fixed split), bounded by the binomial variance of each arm's mean on its images."""
    means = agg.set_index(["imbalance_ratio", "protocol", "metric", "arm"])["mean"]
    out = []
    for row in saved[saved["metric"].isin(list(CLAIMS))].itertuples():
        images = saved_images(row.protocol, row.imbalance_ratio, row.metric)
        shared = sum(means[(row.imbalance_ratio, row.protocol, row.metric, arm)] * (
            1 - means[(row.imbalance_ratio, row.protocol, row.metric, arm)]) / images for arm in (row.a, row.b))
        r = intervals.from_summary(row.difference, row.std, int(row.n), shared_var=shared)
        spec = next((p for p in primary if (p["a"], p["b"], p["metric"], float(p["imbalance_ratio"]), p["protocol"])
                     == (row.a, row.b, row.metric, float(row.imbalance_ratio), row.protocol)), None)
        out.append({**r, "a": row.a, "b": row.b, "imbalance_ratio": row.imbalance_ratio, "protocol": row.protocol,
                    "metric": row.metric, "label": CLAIMS[row.metric], "kind": "claim" if spec else "descriptive",
                    "claimed": spec.get("claimed") if spec else None, "mde": intervals.detectable(r["se"], r["k"])})
    return compare.holm_family(out)


def reread_aggregate(agg: pd.DataFrame, margin: float = 0.05) -> pd.DataFrame:
    """The saved aggregate with each cell's interval from the engine (logit scale, inside [0, 1]; Wilson for
    a cell where every seed scored 0), the seeds sharing one split; and `did_not_train` set for the arms
    whose balanced accuracy is not clearly above chance (arm level: the per-run values were not kept)."""
    cells = [intervals.proportion_from_summary(m, s, int(n), saved_images(p, ir, metric), shared=True)
             for m, s, n, p, ir, metric in zip(agg["mean"], agg["std"], agg["n"], agg["protocol"],
                                               agg["imbalance_ratio"], agg["metric"])]
    out = agg.assign(low=[c["low"] for c in cells], high=[c["high"] for c in cells], interval=intervals.SHARED)
    acc = out[(out["metric"] == "balanced_accuracy") & (out["protocol"] == "balanced")]
    weak = {(ir, arm) for ir, arm, lo in zip(acc["imbalance_ratio"], acc["arm"], acc["low"]) if lo <= 0.1 + margin}
    flag = [n if (ir, arm) in weak else 0 for ir, arm, n in zip(out["imbalance_ratio"], out["arm"], out["n"])]
    return out.assign(did_not_train=flag)


CANNOT = [
    "Every seed shared one split (split_seed 0): one training subsample and the same test images. The spread over "
    "seeds holds the model seed only; the test images' variance is added as a binomial bound, and the variance of "
    "a new draw of the data is not in any interval.",
    "Only means, std and n over seeds were kept, not per-seed values or per-run health records. So arms are not "
    "ranked (a ranking needs paired per-seed differences), and the health gate is read at the arm level: an arm "
    "whose balanced accuracy is not clearly above chance (its lower bound at most 10 % + 5 points) is marked "
    "'did not train' for all its runs.",
    "With 3 seeds the t quantile has 2 degrees of freedom (4.3), and each claim reading states the smallest effect "
    "it could detect with 80 % power: claims that do not settle say nothing either way beyond the bound given.",
    "These are short CPU runs of a small CNN (6 or 12 adversarial epochs, about 100 SGD steps): most arms had "
    "not converged, and TAET trained at about a tenth of the others' effective learning rate (HARL's weights of "
    "0.1 scale its gradient down; every arm shared lr 0.1). So a reading here says how TAET fared at this budget "
    "and step size, not whether its claims hold; nor do they test the papers' setting (ResNet-18, 100 epochs).",
    "The study built to settle the claims, with tuned arms, 960 SGD steps and seeds that resample the data, "
    "is fmnist_lt_study_a (results/fmnist_lt_study_a/, docs/studies.md); it replaces this table once it lands.",
]


def reread(folder: str | Path, command: str = "python -m taetlib results --reread") -> dict:
    """Re-read a results folder written before the engine from its saved numbers: aggregate.csv's intervals,
    claims.csv as the engine's readings (the saved per-seed differences move to seed_differences.csv), the
    figure, and README.md with what they cannot support."""
    folder = Path(folder)
    saved_diffs = folder / "seed_differences.csv"
    if not saved_diffs.exists():   # the first re-read: claims.csv still holds the saved differences
        (folder / "claims.csv").rename(saved_diffs)
    saved = pd.read_csv(saved_diffs)
    p = presets.get(PRESET)
    agg = reread_aggregate(pd.read_csv(folder / "aggregate.csv"), p.health.get("margin", 0.05))
    readings = reread_claims(saved, agg, p.primary)
    agg.to_csv(folder / "aggregate.csv", index=False)
    compare.readings_table(readings).to_csv(folder / "claims.csv", index=False)
    export_figure(figure(agg), folder / "tradeoff.png", width=1100, height=760)   # its error bars: the new intervals
    timing = json.loads((folder / "timing.json").read_text()) if (folder / "timing.json").exists() else {}
    wall = timing.get("wall_seconds")
    weak = agg[agg["did_not_train"] > 0].drop_duplicates(["imbalance_ratio", "arm"])
    health = (f"{len(weak)} arm-IR cells are marked 'did not train' (balanced accuracy not clearly above chance; "
              "read at the arm level): " + ", ".join(f"{a} (IR {ir:g})" for ir, a in zip(weak["imbalance_ratio"],
                                                                                         weak["arm"])) + ".")
    text = readme(agg, readings,
                  command=f"make results   # the runs\n{command}   # this re-read of their saved numbers",
                  timing=f"Wall time of the runs: {wall / 60:.0f} min for {timing.get('runs')} runs, `--jobs 2` on 2 "
                  f"cores. {timing.get('note', '')}" if wall else "Wall time: not recorded.",
                  rankings={"balanced": ["Not re-read: the per-seed values that paired differences need were "
                                         "not kept."]},
                  health=health, cannot=CANNOT)
    (folder / "README.md").write_text(text)
    return {"aggregate": agg, "claims": readings, "readme": text, "wall_seconds": wall}


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


def update_section(path: str | Path, section: str, markers=MARKERS) -> bool:
    """Replace the text between `markers` in `path` (the top-level README); False when it has none."""
    path = Path(path)
    text = path.read_text()
    if markers[0] not in text or markers[1] not in text:
        return False
    head, rest = text.split(markers[0], 1)
    tail = rest.split(markers[1], 1)[1]
    path.write_text(head + section + tail)
    return True
