"""Comparing saved runs: load their evaluations as stacked tidy tables, their headline metrics and
means over seeds, the cross-run figures (views.py adds one run's and browses them), and a sweep's
report page.

A run is a folder holding config.json and eval/ (evaluate_run's per_class.csv, summary.csv,
curves.csv, flags.csv, predictions.npz). Stacked tables carry the run columns
run, label, dataset, imbalance_ratio, method, robustlt, arm, seed.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import compare, plots, verdicts
from . import health as healthlib
from .arms import arm_name
from .figure_files import PLOTLYJS, write_plotlyjs
from .paths import within
from .runs import ARM_FILE
from .tuning_choices import tuning_record

__all__ = ["CROSS_VIEWS", "LEAD", "METRICS", "METRIC_GROUPS", "NOT_STARTED", "RUN_COLUMNS", "STYLE", "TRADEOFF_TITLE",
           "aggregate", "arm_means", "class_order_line", "class_order_text", "counts_table", "cross_view",
           "find_runs", "load_runs", "paired_differences", "predictions", "primary_section", "robust_attack_in",
           "run_info", "status_counts", "sweep_figures", "tradeoff_figure", "tuning_section",
           "write_sweep_report"]

NOT_STARTED = "not started"   # a run's status when the sweep's --no-start-after had passed: left for the next call
RUN_COLUMNS = ["run", "label", "dataset", "imbalance_ratio", "method", "robustlt", "arm", "seed"]
CROSS_VIEWS = ("methods_per_class", "recall_vs_count", "groups", "tradeoff")   # every run, per arm
METRICS = ["clean_accuracy", "balanced_accuracy", "robust_accuracy", "balanced_robustness", "tail_robustness",
           "taet_tail_robustness", "robustlt_tail_robustness", "weakest_k_robustness", "worst_class_robustness"]
# which classes each group metric averages (metrics.class_groups / metrics.weakest_k): reports say it
METRIC_GROUPS = {
    "tail_robustness": "the rarest third of the classes by training count",
    "taet_tail_robustness": "TAET's tail: the rarer half of the classes (classes 5-9 of CIFAR-10-LT)",
    "robustlt_tail_robustness": "RobustLT's tail: the 80 % rarest classes",
    "weakest_k_robustness": "the ceil(C/3) classes with the lowest robust recall, whatever their frequency",
    "worst_class_robustness": "the single class with the lowest robust recall",
}


# ------------------------------------------------------------------------------ loading
def counts_table(splits: dict) -> pd.DataFrame:
    """{IR: LTData} -> tidy per-class counts: imbalance_ratio, split (train / balanced test /
    long_tailed test), class, class_name, count."""
    rows = []
    for ir, d in splits.items():
        parts = {"train": d.train_counts, **{f"{p} test": d.test[p].counts(d.num_classes) for p in d.test}}
        for split, counts in parts.items():
            rows += [(ir, split, c, d.classes[c], int(n)) for c, n in enumerate(counts)]
    return pd.DataFrame(rows, columns=["imbalance_ratio", "split", "class", "class_name", "count"])


def run_info(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    c = json.loads((run_dir / "config.json").read_text())
    arm_file = run_dir / ARM_FILE   # a sweep's arm label (e.g. taet_unit); else method[+robustlt]
    arm = json.loads(arm_file.read_text())["label"] if arm_file.exists() else arm_name(c["method"], c.get("robustlt"))
    label = f"{c['dataset']}-ir{c['imbalance_ratio']:g}/{arm}/seed{c['seed']}"
    return {"run": str(run_dir), "label": label, "dataset": c["dataset"], "imbalance_ratio": c["imbalance_ratio"],
            "method": c["method"], "robustlt": bool(c.get("robustlt")), "arm": arm, "seed": c["seed"]}


def find_runs(root: str | Path) -> list[Path]:
    """Every run folder under `root` with an evaluation, in path order."""
    runs = (p.parent.parent for p in Path(root).rglob("eval/per_class.csv"))
    return sorted(d for d in runs if (d / "config.json").exists())


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def load_runs(run_dirs) -> dict[str, pd.DataFrame]:
    """{'runs', 'per_class', 'summary', 'curves', 'flags'}: each run's tables stacked, run columns first."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise FileNotFoundError("no runs to compare: pass run folders, or a runs_root holding evaluated runs "
                                "(notebook 04 writes <run>/eval/).")
    frames: dict[str, list] = {k: [] for k in ("per_class", "summary", "curves", "flags")}
    infos: list[dict] = []
    for d in run_dirs:
        if not (d / "eval" / "per_class.csv").exists():
            raise FileNotFoundError(f"{d}: no eval/per_class.csv; run notebook 04 (or `python -m taetlib "
                                    f"evaluate --run {d}`) first.")
        info = run_info(d)
        if any(i["label"] == info["label"] for i in infos):  # same settings in two sweeps: name by folder
            info["label"] = f"{d.parent.parent.parent.parent.name}/{info['label']}"
        infos.append(info)
        for name in frames:
            f = d / "eval" / f"{name}.csv"
            if f.exists():
                t = _read(f)
                frames[name].append(t.assign(**info)[[*RUN_COLUMNS, *t.columns]])
    out = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=RUN_COLUMNS) for k, v in frames.items()}
    out["runs"] = pd.DataFrame(infos, columns=RUN_COLUMNS)
    return out


def predictions(run_dir: str | Path, protocol: str, attack: str, with_index: bool = False) -> tuple:
    """(y, pred) of one attack on one protocol from eval/predictions.npz; (y, pred, index) with_index
    (index: which test images, None where not saved)."""
    with np.load(Path(run_dir) / "eval" / "predictions.npz") as z:
        key = f"{protocol}/{attack}"
        if f"{key}/y" not in z.files:
            have = sorted({k.rsplit("/", 1)[0] for k in z.files})
            raise KeyError(f"{run_dir}: no predictions for {key!r}; saved: {have}")
        out = (z[f"{key}/y"], z[f"{key}/pred"])
        return (*out, z[f"{key}/index"] if f"{key}/index" in z.files else None) if with_index else out


# ------------------------------------------------------------------------------ headline metrics per run and over seeds


def robust_attack_in(table: pd.DataFrame) -> str:
    """The robust attack a sweep's metrics or aggregate table was read with (pgd20 where it names none)."""
    named = table["robust_attack"].dropna() if "robust_attack" in table else pd.Series(dtype=object)
    return named.iloc[0] if len(named) else "pgd20"


def aggregate(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds (ddof=1: NaN for one seed) per dataset, IR, arm, protocol and metric, with
    a 95 % interval (low, high, inside [0, 1]) and the variance it holds (`interval`: model seed, data
    draw, test images; taetlib.intervals)."""
    keys = ["dataset", "imbalance_ratio", "arm", "method", "robustlt", "protocol", "metric", "robust_attack"]
    # 95 % interval: the seeds' t-interval on the logit scale around the mean (intervals.proportion); for a single run,
    # its own interval (bootstrap within classes, Wilson) where it has one, else Wilson on its images
    agg = compare.seed_means(metrics, keys, "value", "low", "high", n="images" if "images" in metrics else None)
    if "trained" in metrics:   # the health gate: how many of the cell's runs did not train (kept, and marked)
        bad = (~metrics["trained"].astype(bool)).groupby([metrics[k] for k in keys], sort=False, dropna=False).sum()
        agg = agg.merge(bad.rename("did_not_train").reset_index(), on=keys, how="left")
    rank = {m: i for i, m in enumerate(METRICS)}
    agg["_m"] = agg["metric"].map(rank)
    return agg.sort_values(["protocol", "imbalance_ratio", "arm", "_m"]).drop(columns="_m").reset_index(drop=True)


# ------------------------------------------------------------------------------ views
def arm_means(table: pd.DataFrame, by: list[str], value: str = "recall") -> pd.DataFrame:
    """Mean, std and 95 % interval (value_low, value_high) of `value` over seeds for each arm and IR,
    keeping the `by` columns: a t-interval over seeds, or one run's own (Wilson for per-class recall)."""
    low, high = f"{value}_low", f"{value}_high"
    return compare.means_as(table, ["imbalance_ratio", "arm", *by], value, low if low in table else None,
                            high if high in table else None, n="n" if value == "recall" and "n" in table else None)


def paired_differences(tables: dict, attack: str) -> pd.DataFrame:
    """Arm minus arm (later minus earlier in run order) on balanced accuracy (clean) and balanced
    robustness (`attack`), per protocol and IR: per seed the paired bootstrap over the same test images,
    then over seeds (compare.difference_means), with a plain reading where the interval excludes 0."""
    def saved(run, protocol, att):
        try:
            return predictions(run, protocol, att, with_index=True)
        except KeyError:   # not evaluated under this attack: its pairs carry a note
            return None

    rows = []
    for (ir, seed), runs in tables["runs"].groupby(["imbalance_ratio", "seed"], sort=False):
        for protocol in dict.fromkeys(tables["per_class"]["protocol"]):
            for metric, att in (("balanced_accuracy", "clean"), ("balanced_robustness", attack)):
                got = {r.arm: saved(r.run, protocol, att) for r in runs.itertuples()}
                rows += [{"imbalance_ratio": ir, "protocol": protocol, "metric": metric, "seed": seed, **d}
                         for d in compare.paired_rows(got)]
    keys = ["imbalance_ratio", "protocol", "metric"]
    if not rows:
        return pd.DataFrame(columns=[*keys, "a", "b", "note", "difference", "std", "n", "low", "high", "interval",
                                     "reading"])
    return compare.difference_means(pd.DataFrame(rows), keys)


def _ir_facet(df: pd.DataFrame) -> str | None:
    return "IR" if "IR" in df and df["IR"].nunique() > 1 else None


def _with_ir(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(IR=[f"IR {v:g}" for v in df["imbalance_ratio"]]) if len(df) else df.assign(IR=[])


TRADEOFF_TITLE = "Balanced accuracy vs balanced robustness ({attack}, {protocol} test set; 95 % intervals)"


def tradeoff_figure(agg: pd.DataFrame, protocol: str) -> go.Figure:
    """The sweep report's first figure, and the README's: TAET's Figure 2 read off the aggregate table,
    one point per arm (a panel per IR when several), its 95 % intervals as error bars both ways; an arm
    with runs that did not train is named so."""
    p = _with_ir(compare.tradeoff_from_aggregate(compare.marked(agg), protocol))
    attack = robust_attack_in(agg)
    return plots.tradeoff_scatter(p, facet_col=_ir_facet(p), title=TRADEOFF_TITLE.format(attack=attack,
                                                                                         protocol=protocol))


def cross_view(tables: dict, name: str, attack: str, protocol: str) -> go.Figure:
    """A view over every run, seeds averaged per arm and IR."""
    if name == "methods_per_class":
        t = tables["per_class"]
        t = t[(t["attack"] == attack) & (t["protocol"] == protocol)]
        m = _with_ir(compare.with_weakest(arm_means(t, ["class", "class_name"]), ["imbalance_ratio", "arm"]))
        if m["arm"].nunique() > plots.MANY:   # grouped bars of that many arms blur: a cell per arm and class
            rows = m["arm"] if _ir_facet(m) is None else m["IR"] + " · " + m["arm"]
            return plots.value_heatmap(m.assign(row=rows).sort_values("class"), "row", "class_name", "recall",
                                       "recall_low", "recall_high", bold="weakest", col_title=None,
                                       value_title="recall (%)",
                                       title=f"{attack} recall per class ({protocol}, mean over seeds), arms by "
                                             "their mean<br><sup>% with its 95 % interval beneath; bold: each arm's "
                                             "weakest third</sup>")
        return plots.per_class_bars(m, color="arm", facet_col=_ir_facet(m),
                                    title=f"{attack} recall per class, method vs method ({protocol}, mean over seeds, "
                                          "95 % intervals; hatched: each arm's weakest third)")
    if name == "recall_vs_count":
        t = tables["per_class"]
        t = t[(t["attack"] == attack) & (t["protocol"] == protocol)]
        by = ["class", "class_name", *(["train_count"] if "train_count" in t else [])]
        m = _with_ir(arm_means(t, by))
        return plots.recall_vs_count(m, title=f"{attack} recall per class vs its training count ({protocol}, "
                                              "mean over seeds): weak is not always rare")
    if name == "groups":
        s = tables["summary"]
        s = s[(s["protocol"] == protocol) & s["attack"].isin(["clean", attack])]
        g = plots.summary_groups(s, ["imbalance_ratio", "arm", "seed", "attack"])
        m = arm_means(g, ["attack", "group"])
        return plots.group_bars(m, color="arm", facet_col="attack",
                                title=f"Head / medium / tail mean recall, clean and {attack} ({protocol})")
    if name == "tradeoff":
        p = _with_ir(compare.tradeoff_points(tables["summary"], protocol, attack))
        return plots.tradeoff_scatter(p, facet_col=_ir_facet(p), title=TRADEOFF_TITLE.format(attack=attack,
                                                                                             protocol=protocol))
    raise ValueError(f"view={name!r}: choose one of {CROSS_VIEWS}")


# ------------------------------------------------------------------------------ the sweep report
def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4f}", border=0, classes="tbl")


STYLE = ("body{font-family:sans-serif;margin:2em} .tbl td,.tbl th{padding:2px 8px;text-align:left} "
         ".bad{color:#b00} pre{background:#f6f6f6;padding:1em}")
LEAD = {   # the report's first three sections: the answer, each number with its 95 % interval
    "tradeoff": ("Balanced accuracy vs balanced robustness", "One point per arm; error bars: 95 % intervals in "
                 "both directions (over seeds: the interval engine on the logit scale, taetlib.intervals; for one "
                 "run, the bootstrap within classes, test images only)."),
    "per_class": ("Per-class robust recall per arm", "Error bars: 95 % intervals (Wilson for one run; over seeds "
                  "the interval engine on the logit scale). Hatched: each arm's weakest ceil(C/3) classes by robust "
                  "recall (metrics.weakest_k), whatever their frequency."),
    "differences": ("Paired differences between arms (descriptive)", "a - b on the same test images: per seed "
                    "a paired bootstrap within classes (stats.paired_difference), over seeds the interval engine "
                    "(Hartung-Knapp, taetlib.intervals). Not corrected for multiple comparisons: descriptive only; "
                    "the primary comparisons above are the ones that can hold or be contradicted."),
}


def primary_section(sweep, metrics: pd.DataFrame | None, health: pd.DataFrame | None) -> list[str]:
    """The page's first section: the pre-declared primary comparisons with Holm-adjusted p-values and their
    verdicts (verdicts.sentence), the rankings by paired differences against the best arm, and the runs the
    health gate left out."""
    parts = ["<h2 id='primary'>Primary comparisons</h2>"]
    if health is not None and len(health):
        parts.append(f"<p>{html.escape(healthlib.left_out(health))}</p>")
        bad = health[~health["trained"].astype(bool)]
        if len(bad):
            parts.append(_table_html(bad[["arm", "imbalance_ratio", "seed", "reason"]]))
    if metrics is None or not len(metrics):
        return parts + ["<p>No finished runs.</p>"]
    primary = list(getattr(sweep, "primary", []) or [])
    if not primary:
        parts.append("<p>This sweep declares no primary comparisons: every comparison on this page is "
                     "descriptive.</p>")
    for a, b in dict.fromkeys((p["a"], p["b"]) for p in primary):
        if not {a, b} <= set(metrics["arm"]):
            parts.append(f"<p class='bad'>Primary comparison {html.escape(a)} - {html.escape(b)}: not read, this "
                         "sweep has no finished runs of " + html.escape(", ".join(sorted({a, b} - set(metrics["arm"]))))
                         + ".</p>")
    # one Holm family over every primary comparison, whatever its pair of arms
    declared = len(getattr(sweep, "seeds", None) or []) or None
    readings = [r for r in compare.primary_readings(metrics, primary, declared=declared) if r["k"] > 0]
    if readings:
        parts += ["<ul>" + "".join(f"<li>{html.escape(verdicts.sentence(r))}</li>" for r in readings) + "</ul>",
                  _table_html(compare.readings_table(readings))]
    parts.append("<h3>Rankings</h3><ul>" + "".join(
        f"<li>{html.escape(verdicts.sentence(r))}</li>" for p in dict.fromkeys(metrics["protocol"])
        for r in compare.rankings(metrics, "balanced_robustness", p)) + "</ul>")
    return parts


def _link(root: Path, p: Path) -> str:
    rel = p.relative_to(root).as_posix()
    return f"<li><a href='{html.escape(rel)}'>{html.escape(rel)}</a></li>"


def sweep_figures(agg: pd.DataFrame, tables: dict | None, diffs: pd.DataFrame,
                  attack: str) -> list[tuple[str, str, go.Figure]]:
    """(section, title, figure) in page order: the LEAD sections per protocol, then the rest ('more')."""
    protocols = list(dict.fromkeys(agg["protocol"])) if len(agg) else []
    evaluated = list(dict.fromkeys(tables["per_class"]["protocol"])) if tables is not None else []
    figs = [("tradeoff", f"{p} test set", tradeoff_figure(agg, p)) for p in protocols]
    figs += [("per_class", f"{p} test set", cross_view(tables or {}, "methods_per_class", attack, p))
             for p in evaluated]
    for p in evaluated:
        d = _with_ir(diffs[diffs["protocol"] == p])
        figs.append(("differences", f"{p} test set", plots.difference_forest(
            d, color=_ir_facet(d), title=f"Paired differences a - b ({attack}, {p} test set; 95 % intervals)")))
    figs += [("more", f"Headline metrics vs IR ({p})", plots.sweep_lines(
        agg[agg["protocol"] == p], title=f"Mean over seeds, 95 % intervals ({p})")) for p in protocols]
    return figs + [("more", f"{n} ({p})", cross_view(tables or {}, n, attack, p)) for p in evaluated
                   for n in CROSS_VIEWS if n not in ("methods_per_class", "tradeoff")]   # those two: above


def status_counts(status: pd.DataFrame) -> dict[str, int]:
    """Runs done by this invocation, skipped (finished by an earlier one: runs.csv's `resumed`, or the
    older status 'skipped'), failed, and not started (the sweep's --no-start-after had passed)."""
    resumed = (status["resumed"].fillna(False).astype(bool) if "resumed" in status
               else pd.Series(False, index=status.index)) | (status["status"] == "skipped")
    done = status["status"] == "done"
    return {"done": int((done & ~resumed).sum()), "skipped": int(resumed.sum()),
            "failed": int((status["status"] == "failed").sum()),
            NOT_STARTED: int((status["status"] == NOT_STARTED).sum())}


def class_order_text(status: pd.DataFrame) -> str:
    """Which classes the profile made rare (RunConfig.class_order), per arm where the arms differ."""
    orders = status.get("class_order", pd.Series(["label"] * len(status))).fillna("label")
    per_arm = dict(zip(status["arm"], orders)) if "arm" in status else {}
    if len(set(orders)) <= 1:
        return f"Class order: {orders.iloc[0] if len(orders) else 'label'} (which classes the profile makes rare)."
    return "Class order per arm: " + ", ".join(f"{a}: {o}" for a, o in per_arm.items()) + "."


def class_order_line(status: pd.DataFrame) -> str:
    return f"<p>{html.escape(class_order_text(status))}</p>"


def tuning_section(root: Path) -> str:
    """tuning_record as the report's section; empty when the sweep did not tune."""
    got = tuning_record(root)
    if got is None:
        return ""
    rows, text = got
    return f"<h2 id='tuning'>Tuning</h2><p>{html.escape(text)}</p>" + _table_html(rows)


def write_sweep_report(root: Path, sweep, status: pd.DataFrame, agg: pd.DataFrame, notes=(),
                       metrics: pd.DataFrame | None = None, health: pd.DataFrame | None = None) -> Path:
    """root/report.html, the answer first: the primary comparisons with Holm-adjusted p-values, the
    rankings and the runs left out by the health gate; then (1) balanced accuracy vs balanced robustness
    per arm, (2) per-class robust recall per arm with the weakest classes marked, (3) the paired
    differences between arms (figure; the full pairwise table collapsed, on request); then the
    aggregated tables, the other figures, the runs (failures with their errors), the files, and last the
    settings, collapsed."""
    root = Path(root)
    done = [d for d in status[status["status"].isin(["done", "skipped"])]["run"]
            if (Path(d) / "eval" / "per_class.csv").exists()]
    tables = load_runs(done) if done else None
    attack = robust_attack_in(agg)
    diffs = paired_differences(tables, attack) if tables is not None else pd.DataFrame()
    counts = status_counts(status)
    runs = status.assign(run=[within(r, root) for r in status["run"]], seconds=status["seconds"].round(0).astype(int))
    figs = [(name, f"<h3>{html.escape(title)}</h3>" + fig.to_html(full_html=False, include_plotlyjs=False,
                                                                   div_id=f"fig{i}"))
            for i, (name, title, fig) in enumerate(sweep_figures(agg, tables, diffs, attack))]

    parts = [f"<h1>Sweep report: {html.escape(root.name)}</h1>",
             f"<p>{html.escape(str(root))} &middot; written {time.strftime('%Y-%m-%d %H:%M:%S')} &middot; runs: "
             + ", ".join(f"{counts[s]} {s}" for s in ("done", "skipped", "failed")) + "</p>",
             *[f"<p class='bad'>{html.escape(n)}</p>" for n in notes], *primary_section(sweep, metrics, health),
             class_order_line(status), tuning_section(root)]
    for name, (title, text) in LEAD.items():
        parts += [f"<h2 id='{name}'>{title}</h2><p>{html.escape(text)} Robust attack: {html.escape(attack)}.</p>",
                  *[f for n, f in figs if n == name]]
    if len(diffs):
        parts.append("<details id='pairwise'><summary>Every pair of arms (descriptive, uncorrected): the full "
                     f"table, {len(diffs)} rows</summary>{_table_html(compare.differences_table(diffs))}</details>")
    for protocol in (dict.fromkeys(agg["protocol"]) if len(agg) else []):
        held = "; ".join(dict.fromkeys(str(x) for x in agg.loc[agg["protocol"] == protocol, "interval"] if x and
                                       isinstance(x, str))) if "interval" in agg else ""
        parts += [f"<h2>Aggregate, {html.escape(protocol)} test set (robust attack: {html.escape(attack)})</h2>",
                  f"<p>What the intervals hold: {html.escape(held or 'not recorded')}.</p>",
                  _table_html(compare.aggregate_wide(agg, protocol, METRICS))]
    if len(agg):
        parts.append("<p>Groups: " + "; ".join(f"<b>{m}</b>: {html.escape(d)}" for m, d in METRIC_GROUPS.items())
                     + ".</p>")
    parts += ["<h2 id='more'>More figures</h2>", *[f for n, f in figs if n == "more"],
              "<h2 id='runs'>Runs</h2>", _table_html(runs[["run", "status", "seconds", "error"]])]
    files = [root / f for f in ("report/05_per_class_plots.ipynb", "aggregate.csv", "metrics.csv", "runs.csv")]
    files += sorted((root / "report").glob("*.html"))
    files += [p for p in sorted(root.rglob("*.ipynb")) if "report" not in p.relative_to(root).parts]
    parts.append("<h2 id='files'>Files</h2><ul>" + "".join(_link(root, p) for p in files if p.exists()) + "</ul>")
    settings = html.escape(json.dumps(sweep.to_dict(), indent=2, default=str))
    parts.append(f"<details id='settings'><summary>Settings</summary><pre>{settings}</pre></details>")

    write_plotlyjs(root)  # one copy beside the page: it works offline
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sweep report</title>"
            f"<script src='{PLOTLYJS}'></script><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    path = root / "report.html"
    path.write_text(page)
    return path
