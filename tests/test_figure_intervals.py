"""Every number drawn with its uncertainty: the error bars of the figures are the interval columns of
the tables (Wilson per class, bootstrap within classes for one run, the interval engine over seeds), the
sweep report leads with the answer and keeps its settings last and collapsed, and the README figure is the report's
first figure exported by plotly's own write_image. Runs here are written with the real table functions
(eval_result) from made-up predictions: no training."""
import base64
import html
import importlib.util
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taetlib import compare, eval_result, figure_files, headline, intervals, metrics, plan, plots, report, stats, study

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"c{i}" for i in range(6)]
COUNTS = [600, 300, 150, 80, 40, 20]
PER_CLASS = 40
PROTOCOLS = ("balanced", "long_tailed")
# per arm: the chance of a hit per class, clean and under pgd20
ARMS = {"pgd_at": (np.linspace(0.9, 0.5, 6), np.linspace(0.6, 0.2, 6)),
        "taet": (np.linspace(0.9, 0.6, 6), np.linspace(0.7, 0.4, 6))}


def evaluated_run(root: Path, arm: str, ir: float, seed: int, hit=None, index_shift: int = 0) -> Path:
    """A run folder as evaluate_run leaves it, its tables written by eval_result from drawn predictions."""
    d = root / f"synthetic-ir{ir:g}" / arm / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"dataset": "synthetic", "imbalance_ratio": ir, "method": arm,
                                               "robustlt": False, "seed": seed}))
    g = np.random.default_rng([seed, int(ir), len(arm)])
    y = np.repeat(np.arange(6), PER_CLASS)
    preds, tables = {}, []
    for protocol in PROTOCOLS:
        for attack, p in zip(("clean", "pgd20"), hit or ARMS[arm]):
            pred = np.where(g.random(y.size) < p[y], y, (y + 1) % 6)
            preds[(protocol, attack)] = {"y": y, "pred": pred, "index": np.arange(y.size) + index_shift}
            tables.append(eval_result.per_class_table(attack, protocol, 0.0 if attack == "clean" else 0.1, y, pred,
                                                      CLASSES).assign(train_count=lambda t: t["class"].map(
                                                          dict(enumerate(COUNTS)))))
    table = pd.concat(tables, ignore_index=True)
    flags = pd.DataFrame(columns=["flag", "attack", "protocol", "classes", "raised", "detail"]).astype({"raised": bool})
    summary = eval_result.summary_table(table, preds, COUNTS, CLASSES, flags, {})
    eval_result.EvalResult(table, summary, flags, table[table.attack == "pgd20"], preds, {}).save(d / "eval")
    return d


def status_of(runs) -> pd.DataFrame:
    return pd.DataFrame([{**report.run_info(d), "run": str(d), "status": "done", "seconds": 1.0, "error": "",
                          "notebook": ""} for d in runs])


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_seed")
    return root, [evaluated_run(root, arm, 10.0, 0) for arm in ARMS]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_seeds")
    return root, [evaluated_run(root, arm, ir, s) for ir in (10.0, 100.0) for arm in ARMS for s in (0, 1)]


def bars(trace, axis="y"):
    """(value, plus, minus) per point of a trace: its error bars as drawn."""
    e = getattr(trace, f"error_{axis}")
    return np.asarray(getattr(trace, axis), float), np.asarray(e.array, float), np.asarray(e.arrayminus, float)


# ------------------------------------------------------------------------------ figures
def test_per_class_bars_draw_the_wilson_interval_and_hatch_the_weakest(one_seed):
    t = report.load_runs(one_seed[1])["per_class"]
    t = t[(t.attack == "pgd20") & (t.protocol == "balanced")]
    fig = plots.per_class_bars(compare.with_weakest(t, ["arm"]), color="arm")
    assert {tr.name for tr in fig.data} == set(ARMS)
    for tr in fig.data:
        rows = t[t.arm == tr.name].set_index("class_name").loc[list(tr.x)]
        y, plus, minus = bars(tr)
        assert np.allclose(y, rows.recall) and (plus > 0).all() and (minus > 0).all()
        assert np.allclose(y + plus, rows.recall_high) and np.allclose(y - minus, rows.recall_low)
        for name, (k, n) in zip(tr.x, rows[["correct", "n"]].to_numpy()):   # Wilson, from scipy, not from the table
            assert np.allclose([y[list(tr.x).index(name)] + plus[list(tr.x).index(name)]], [stats.wilson(k, n)[1]])
        weakest, _ = metrics.weakest_k(rows.sort_values("class").recall.to_numpy())
        hatched = {c for c, s in zip(tr.x, tr.marker.pattern.shape) if s == plots.WEAK_PATTERN}
        assert hatched == {CLASSES[c] for c in weakest} and len(hatched) == 2


def test_methods_per_class_over_seeds_draws_the_t_interval(two_seeds):
    tables = report.load_runs(two_seeds[1])
    fig = report.cross_view(tables, "methods_per_class", "pgd20", "balanced")
    t = tables["per_class"]
    t = t[(t.attack == "pgd20") & (t.protocol == "balanced")]
    assert len(fig.data) == 4   # 2 arms x 2 IR panels
    for tr in fig.data:
        ir = 10.0 if tr.xaxis == "x" else 100.0
        y, plus, minus = bars(tr)
        for i, name in enumerate(tr.x):
            seeds = t[(t.arm == tr.name) & (t.imbalance_ratio == ir) & (t.class_name == name)].recall
            assert len(seeds) == 2 and y[i] == pytest.approx(seeds.mean())
            engine = intervals.proportion(seeds, PER_CLASS)   # the logit-scale interval around the mean: inside [0, 1]
            assert y[i] + plus[i] == pytest.approx(engine["high"]) and y[i] - minus[i] == pytest.approx(engine["low"])
            assert 0 <= engine["low"] < y[i] < engine["high"] <= 1


@pytest.fixture(scope="module")
def many_arms(tmp_path_factory):
    """More arms than grouped bars keep apart (plots.MANY), two seeds each, robust recall drawn per class."""
    root = tmp_path_factory.mktemp("many_arms")
    g = np.random.default_rng(7)
    hits = {f"arm{i:02d}": (np.full(6, 0.9), np.clip(0.25 + 0.04 * i + g.uniform(-0.15, 0.15, 6), 0.05, 0.95))
            for i in range(plots.MANY + 2)}
    return root, [evaluated_run(root, arm, 10.0, s, hit=h) for arm, h in hits.items() for s in (0, 1)]


def test_many_arms_per_class_is_a_cell_per_arm_and_class_with_its_interval_and_the_weakest_in_bold(many_arms):
    tables = report.load_runs(many_arms[1])
    (cells,) = report.cross_view(tables, "methods_per_class", "pgd20", "balanced").data
    assert cells.type == "heatmap" and len(cells.y) == plots.MANY + 2 and list(cells.x) == CLASSES
    t = tables["per_class"]
    t = t[(t.attack == "pgd20") & (t.protocol == "balanced")]
    arm_mean = {a: r.groupby("class").recall.mean().mean() for a, r in t.groupby("arm")}
    assert list(cells.y) == sorted(arm_mean, key=arm_mean.get, reverse=True)   # highest mean first
    bold = 0
    for i, arm in enumerate(cells.y):
        rows = t[t.arm == arm]
        weakest, _ = metrics.weakest_k(rows.groupby("class").recall.mean().to_numpy())
        for j, name in enumerate(cells.x):
            seeds = rows[rows.class_name == name].recall
            engine = intervals.proportion(seeds, PER_CLASS)
            assert cells.z[i][j] == pytest.approx(100 * seeds.mean())
            assert list(cells.customdata[i][j]) == pytest.approx([100 * engine["low"], 100 * engine["high"]])
            assert f"{100 * engine['low']:.0f}-{100 * engine['high']:.0f}" in cells.text[i][j]
            strong = cells.text[i][j].startswith(f"<b>{100 * seeds.mean():.0f}</b>")
            assert strong == (CLASSES.index(name) in weakest)
            bold += strong
    assert bold == 2 * len(cells.y)   # ceil(6 / 3) per arm


def test_many_arms_radius_is_a_cell_per_arm_and_radius_and_few_stay_lines():
    g = np.random.default_rng(3)
    rows = [{"arm": f"arm{a:02d}", "eps": e, "mean": m, "low": m - 0.05, "high": m + 0.04, "n": 2}
            for a in range(plots.MANY + 1) for e, m in zip((0.0, 0.1, 0.2), np.sort(g.uniform(0.1, 0.9, 3))[::-1])]
    table = pd.DataFrame(rows)
    (cells,) = plots.radius_lines(table).data
    assert cells.type == "heatmap" and list(cells.x) == ["0.0", "0.1", "0.2"]
    for i, arm in enumerate(cells.y):
        r = table[table.arm == arm]
        assert list(cells.z[i]) == pytest.approx(100 * r["mean"].to_numpy())
        assert [list(c) for c in cells.customdata[i]] == pytest.approx(100 * r[["low", "high"]].to_numpy())
    few = plots.radius_lines(table[table.arm.isin(["arm00", "arm01"])])
    assert {tr.type for tr in few.data} == {"scatter"} and len(few.data) == 2


def test_the_ranking_figure_sorts_by_mean_draws_the_interval_and_reads_only_the_runs_that_trained(many_arms):
    status = status_of(many_arms[1])
    gate = status[["run"]].assign(trained=[not r.endswith("arm03/seed1") for r in status["run"]])
    metrics_ = headline.collect(status, None, gate)
    fig = study.ranking_figure(metrics_, "pgd20")
    assert "did not train: arm03 seed 1" in fig.layout.title.text
    rob = metrics_[(metrics_.protocol == "balanced") & (metrics_.metric == "balanced_robustness") & metrics_.trained]
    # the aggregate's interval over the seeds that trained (arm03: its one seed's own), not over every run
    trained = report.aggregate(metrics_[metrics_.trained].drop(columns="trained"))
    every = report.aggregate(metrics_.drop(columns="trained"))
    read = {name: a[(a.protocol == "balanced") & (a.metric == "balanced_robustness")].set_index("arm")
            for name, a in (("trained", trained), ("every", every))}
    assert read["every"].loc["arm03", "n"] == 2 and read["trained"].loc["arm03", "n"] == 1
    drawn = {}
    for tr in fig.data:
        v, plus, minus = bars(tr, "x")
        for arm, x, p, m in zip(tr.y, v, plus, minus):
            row = read["trained"].loc[arm]
            assert tr.name == ("2 seeds" if arm != "arm03" else "1 seed (test images only)")
            assert x == pytest.approx(rob[rob.arm == arm].value.mean()) == pytest.approx(row["mean"])
            assert x + p == pytest.approx(row["high"]) and x - m == pytest.approx(row["low"]) and p > 0 and m > 0
            drawn[arm] = x
    assert set(drawn) == set(rob.arm)
    assert drawn["arm03"] != pytest.approx(read["every"].loc["arm03", "mean"])   # the run that did not train: out
    top_down = list(fig.layout.yaxis.categoryarray)[::-1]   # plotly lists a category axis from the bottom
    assert top_down == sorted(drawn, key=drawn.get, reverse=True)


def test_tradeoff_scatter_has_error_bars_both_ways_from_the_aggregate(one_seed, two_seeds):
    for _, runs in (one_seed, two_seeds):
        agg = report.aggregate(headline.collect(status_of(runs), None))
        fig = report.tradeoff_figure(agg, "balanced")
        assert len(fig.data) == 2 * agg.imbalance_ratio.nunique()
        for tr in fig.data:
            ir = 10.0 if tr.xaxis == "x" else 100.0
            row = agg[(agg.arm == tr.name) & (agg.protocol == "balanced") & (agg.imbalance_ratio == ir)]
            row = row.set_index("metric")
            for axis, metric in (("x", "balanced_accuracy"), ("y", "balanced_robustness")):
                v, plus, minus = bars(tr, axis)
                assert v[0] == pytest.approx(row.loc[metric, "mean"])
                assert v[0] + plus[0] == pytest.approx(row.loc[metric, "high"])
                assert v[0] - minus[0] == pytest.approx(row.loc[metric, "low"])
                assert plus[0] > 0 and minus[0] > 0
    # one seed: the run's own bootstrap interval, as in its summary.csv
    s = pd.read_csv(one_seed[1][0] / "eval" / "summary.csv").set_index(["protocol", "attack"])
    agg = report.aggregate(headline.collect(status_of(one_seed[1]), None))
    row = agg[(agg.arm == "pgd_at") & (agg.protocol == "balanced") & (agg.metric == "balanced_robustness")].iloc[0]
    assert row.interval == intervals.ONE_SEED and row.low == s.loc[("balanced", "pgd20"), "balanced_low"]


def test_sweep_lines_error_bars_are_the_seed_intervals(two_seeds):
    agg = report.aggregate(headline.collect(status_of(two_seeds[1]), None))
    a = agg[(agg.protocol == "balanced") & agg.metric.isin(["balanced_accuracy", "balanced_robustness"])]
    fig = plots.sweep_lines(a)
    assert len(fig.data) == 4
    for tr in fig.data:
        metric = "balanced_accuracy" if tr.xaxis == "x" else "balanced_robustness"
        want = a[(a.arm == tr.name) & (a.metric == metric)].sort_values("imbalance_ratio")
        assert (want.interval == intervals.SHARED).all()   # both seeds on split_seed 0
        assert list(tr.x) == list(want.imbalance_ratio)
        y, plus, minus = bars(tr)
        assert np.allclose(y + plus, want.high) and np.allclose(y - minus, want.low)


def test_paired_differences_read_only_where_the_interval_excludes_zero(tmp_path):
    strong = (np.full(6, 0.95), np.full(6, 0.8))
    runs = [evaluated_run(tmp_path, "weak", 10.0, 0, (np.full(6, 0.6), np.full(6, 0.3))),
            evaluated_run(tmp_path, "strong", 10.0, 0, strong),
            evaluated_run(tmp_path, "twin", 10.0, 0, strong),    # the same draws as strong: the same predictions
            evaluated_run(tmp_path, "close", 10.0, 0, strong)]   # as strong, other draws: a difference near 0
    shutil.copy(runs[1] / "eval" / "predictions.npz", runs[2] / "eval" / "predictions.npz")
    d = report.paired_differences(report.load_runs(runs), "pgd20")
    d = d[d.protocol == "balanced"].set_index(["metric", "a", "b"])
    row = d.loc[("balanced_robustness", "strong", "weak")]
    y, ps, pw = (report.predictions(runs[i], "balanced", "pgd20")[k] for i, k in ((1, 0), (1, 1), (0, 1)))
    assert (row.difference, row.low, row.high) == pytest.approx(stats.paired_difference(y, ps, pw))
    assert row.low > 0 and row.reading == "strong higher" and row.interval == intervals.ONE_SEED
    assert d.loc[("balanced_robustness", "twin", "strong")].reading == ""   # 0 inside: no word
    close = d.loc[("balanced_robustness", "close", "strong")]
    assert close.low < 0 < close.high and close.reading == ""
    assert d.loc[("balanced_robustness", "twin", "weak")].reading == "twin higher"
    forest = plots.difference_forest(d.reset_index().query("metric == 'balanced_robustness'"), facet_col=None)
    x, plus, minus = bars(forest.data[0], "x")
    assert list(forest.data[0].y) == ["strong - weak", "twin - weak", "close - weak", "twin - strong", "close - strong",
                                      "close - twin"]   # later minus earlier, in run order
    assert x[0] + plus[0] == pytest.approx(row.high) and x[0] - minus[0] == pytest.approx(row.low)

    moved = evaluated_run(tmp_path / "other", "moved", 10.0, 0, strong, index_shift=1000)  # other test images
    d = report.paired_differences(report.load_runs([runs[0], moved]), "pgd20")
    assert set(d.note) == {"not on the same test images"} and d.difference.isna().all() and set(d.reading) == {""}


# ------------------------------------------------------------------------------ the report page
class Outline(HTMLParser):
    """The page's h2 ids, plotly divs and details blocks, in order."""
    def __init__(self):
        super().__init__()
        self.items, self.details = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self.items.append(("h2", a.get("id")))
        elif tag == "div" and (a.get("id") or "").startswith("fig"):
            self.items.append(("fig", a["id"]))
        elif tag == "details":
            self.items.append(("details", a.get("id")))
            self.details.append(a)


def decoded(v):
    """plotly's JSON arrays: plain lists, or typed arrays {'dtype', 'bdata'} (base64)."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v, float)


def plotted(page: str, div_id: str) -> list[dict]:
    m = re.search(r'Plotly\.newPlot\(\s*"' + div_id + r'",\s*', page)
    return json.JSONDecoder().raw_decode(page, m.end())[0]


def test_report_leads_with_the_answer_and_ends_with_collapsed_settings(two_seeds):
    root, runs = two_seeds
    status = status_of(runs)
    agg = report.aggregate(headline.collect(status, None))
    s = plan.Sweep(root, "synthetic", [10, 100], [("pgd_at", False), ("taet", False)], [0, 1])
    page = report.write_sweep_report(root, s, status, agg, []).read_text()
    outline = Outline()
    outline.feed(page)
    h2 = [i for k, i in outline.items if k == "h2"]
    assert h2[:4] == ["primary", "tradeoff", "per_class", "differences"] and h2[-3:] == ["more", "runs", "files"]
    assert outline.items[-1] == ("details", "settings") and not any("open" in d for d in outline.details)
    assert page.index("<summary>Settings</summary>") > page.index("<h2 id='files'>")
    irs = "&quot;irs&quot;"   # a settings key, as the escaped JSON shows it: only inside the collapsed block
    settings = page.index("<details id='settings'>")
    assert page.count(irs) == 1 and settings < page.index(irs) < page.index("</details>", settings)
    # the first figure stands under the first heading, and is the trade-off with the aggregate's intervals
    assert outline.items[2] == ("fig", "fig0")
    under, head = {}, None
    for k, i in outline.items:
        head = i if k == "h2" else head
        if k == "fig":
            under.setdefault(head, []).append(i)
    assert len(under["tradeoff"]) == len(under["per_class"]) == len(under["differences"]) == 2   # per protocol
    data = plotted(page, "fig0")
    a = agg[(agg.protocol == "balanced") & (agg.metric == "balanced_robustness")]
    for tr in data:
        ir = 10.0 if tr.get("xaxis", "x") == "x" else 100.0
        row = a[(a.arm == tr["name"]) & (a.imbalance_ratio == ir)].iloc[0]
        y = decoded(tr["y"])[0]
        assert y + decoded(tr["error_y"]["array"])[0] == pytest.approx(row.high)
        assert y - decoded(tr["error_y"]["arrayminus"])[0] == pytest.approx(row.low)
    # the paired differences: figure, then the table with a reading only where the interval excludes 0
    diffs = report.paired_differences(report.load_runs(runs), "pgd20")
    assert "taet - pgd_at" in page and len(diffs) == 2 * 2 * 2
    for r in diffs.itertuples():
        assert (r.reading != "") == (r.low > 0 or r.high < 0)
    assert page.index("<h2 id='differences'>") < page.index("<details id='pairwise'>") < page.index(
        "difference [95 % interval]") < page.index("Aggregate,")   # the full pairwise table: collapsed, on request


def test_report_leads_with_the_primary_comparisons_and_the_runs_left_out(tmp_path):
    """Primary comparisons first with Holm-adjusted p-values and verdicts from verdicts.sentence; a run of
    constant predictions did not train: named in the aggregate, left out of the ranking, counted."""
    from taetlib import compare as cmp
    from taetlib import health, verdicts
    runs = [evaluated_run(tmp_path, arm, 10.0, s) for arm in ARMS for s in (0, 1, 2)]
    runs.append(evaluated_run(tmp_path, "dead", 10.0, 0, (np.zeros(6), np.zeros(6))))   # never right: below chance
    status = status_of(runs)
    gate = health.sweep_health(status)
    assert gate.set_index("arm").loc["dead", "trained"] == False and gate["trained"].sum() == 6   # noqa: E712
    metrics = headline.collect(status, None, gate)
    agg = report.aggregate(metrics)
    assert (agg[agg.arm == "dead"]["did_not_train"] == 1).all()
    primary = [{"a": "taet", "b": "pgd_at", "metric": "balanced_robustness", "imbalance_ratio": 10.0,
                "protocol": "balanced", "claimed": 0.05}]
    s = plan.Sweep(tmp_path, "synthetic", [10], [("pgd_at", False), ("taet", False)], [0, 1, 2], primary=primary)
    page = report.write_sweep_report(tmp_path, s, status, agg, [], metrics=metrics, health=gate).read_text()
    (claim,) = [r for r in cmp.claim_readings(metrics, "taet", "pgd_at", {"balanced_robustness": "balanced robustness"},
                                              primary) if r["kind"] == "claim"]
    assert claim["family"] == 1 and claim["p_holm"] == pytest.approx(claim["p"])
    first = page.index("<h2 id='primary'>")
    assert first < page.index(html.escape(verdicts.sentence(claim))) < page.index("<h2 id='tradeoff'>")
    assert "1 of 7 runs did not train" in page and "p_holm" in page
    (rank,) = [r for r in cmp.rankings(metrics) if r["imbalance_ratio"] == 10.0]
    assert rank["arms"] == 2 and "dead" not in [rank["best"], *rank["tied"]]
    assert "dead (did not train)" in page


# ------------------------------------------------------------------------------ static export and the README figure
def test_export_figure_writes_png_and_svg_and_names_the_fix_without_a_browser(tmp_path, monkeypatch):
    fig = plots.tradeoff_scatter(pd.DataFrame({"arm": ["a", "b"], "balanced_accuracy": [0.7, 0.6],
                                               "balanced_robustness": [0.4, 0.5]}), title="export me")
    png = figure_files.export_figure(fig, tmp_path / "f.png", width=400, height=300, scale=1, timeout=60)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(head[16:20], "big") == 400
    svg = figure_files.export_figure(fig, tmp_path / "f.svg", width=400, height=300, timeout=60).read_text()
    assert svg.startswith("<svg") and "export me" in svg
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))   # what a machine without a browser sees
    with pytest.raises(RuntimeError, match=r"apt-get install chromium.*make setup"):
        figure_files.export_figure(fig, tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


def test_the_figures_are_the_reports_first_figure_on_committed_numbers():
    """The demo's figure (docs/results.md) is drawn by a script from the committed demo numbers; the README's is
    a study's first figure, which `python -m taetlib study` draws from the aggregate.csv committed beside it."""
    spec = importlib.util.spec_from_file_location("make_demo_figure", ROOT / "docs" / "make_demo_figure.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    agg = pd.read_csv(script.NUMBERS)
    assert script.figure(agg).to_json() == report.tradeoff_figure(agg, "balanced").to_json()
    results_page = (ROOT / "docs" / "results.md").read_text()
    assert "](demo.png)" in results_page and script.FIGURE.exists() and "hand" not in script.__doc__
    readme = (ROOT / "README.md").read_text()
    figure = ROOT / re.search(r"!\[[^\]]*\]\(([^)]+)\)", readme).group(1)
    assert figure.parent.parent == ROOT / "results" and figure.name == next(iter(study.FIGURES)), figure
    assert figure.exists() and (figure.parent / "aggregate.csv").exists()
    # the intervals the README quotes are those of the committed numbers
    rob = agg[(agg.protocol == "balanced") & (agg.metric == "balanced_robustness")].set_index("arm")
    quoted = dict(re.findall(r"^(\S+)\s+(\d+\.\d \[\d+\.\d, \d+\.\d\])$", readme, re.M))
    assert set(quoted) == set(rob.index)
    for arm, text in quoted.items():
        r = rob.loc[arm]
        assert text == f"{100 * r['mean']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"
