"""plots.py figures from hand-made tidy tables, the live plot's headless path, and report.py's views
over a hand-made run folder (no training: every table here is written by the test)."""
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from taetlib import compare, figure_files, figure_show, plots, report, stats, views
from taetlib.history import history_tables, read_history

CLASSES = [f"c{i}" for i in range(6)]
COUNTS = [60, 40, 25, 15, 10, 6]


def per_class(attack, protocol, recall, eps=0.1, n=10):
    correct = np.round(np.asarray(recall) * n).astype(int)
    return pd.DataFrame({"attack": attack, "protocol": protocol, "eps": eps, "class": range(6),
                         "class_name": CLASSES, "n": n, "correct": correct, "recall": correct / n})


def history(epochs=3, stage="adversarial"):
    """Records shaped as train.fit writes them (None where not measured)."""
    return [{"epoch": e, "stage": stage, "lr": 0.1, "loss": 2.0 / e, "loss_bcl": 1.0 / e, "loss_hdl": 0.1 / e,
             "loss_rcel": 0.2, "train_clean_acc": [0.5 + 0.05 * e] * 5 + [None],
             "train_adv_acc": [0.2 + 0.05 * e] * 6, "test_clean_acc": None if e % 2 else [0.6] * 6,
             "test_pgd_acc": None if e % 2 else [0.3] * 6, "seconds": 1.0, "images_per_s": 100.0}
            for e in range(1, epochs + 1)]


# ------------------------------------------------------------------------------ history
def test_history_tables_are_tidy():
    t = history_tables(history(), CLASSES)
    s, pc = t["scalars"], t["per_class"]
    assert list(s.columns) == ["epoch", "stage", "metric", "value"]
    assert {"loss", "loss_bcl", "loss_hdl", "loss_rcel", "lr", "train_clean_acc", "test_pgd_acc"} <= set(s.metric)
    assert list(pc.columns) == ["epoch", "stage", "split", "kind", "class", "value", "class_name"]
    assert set(zip(pc.split, pc.kind)) == {("train", "clean"), ("train", "adv"), ("test", "clean"), ("test", "pgd")}
    # a class not seen (None) is left out, not counted as 0; the test set only on eval epochs
    assert len(pc[(pc.split == "train") & (pc.kind == "clean") & (pc.epoch == 1)]) == 5
    assert set(pc[pc.split == "test"].epoch) == {2}
    mean_clean = s[(s.metric == "train_clean_acc") & (s.epoch == 1)].value.item()
    assert mean_clean == pytest.approx(0.55)
    assert pc.class_name.iloc[0] == "c0"


def test_history_figures_and_empty_history():
    t = history_tables(history())
    for fn in (plots.loss_figure, plots.accuracy_figure, plots.per_class_figure):
        assert isinstance(fn(t), go.Figure) and len(fn(t).data) > 0
    names = {tr.name for tr in plots.loss_figure(t).data}
    assert names == {"adversarial"}  # coloured by stage
    empty = history_tables([])
    for fn in (plots.loss_figure, plots.accuracy_figure, plots.per_class_figure):
        assert "no epoch yet" in fn(empty).layout.title.text


def test_read_history_puts_stage1_first(tmp_path):
    (tmp_path / "stage1").mkdir()
    s1, s2 = history(2, "stabilization"), [dict(r, epoch=r["epoch"] + 2) for r in history(2)]
    (tmp_path / "stage1" / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in s1))
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in s2))
    assert [r["epoch"] for r in read_history(tmp_path)] == [1, 2, 3, 4]


def test_live_plot_headless_writes_html(tmp_path, monkeypatch):
    monkeypatch.setenv("TAET_HEADLESS", "1")
    live = figure_show.live_plot({"loss": plots.loss_figure, "per_class": plots.per_class_figure}, out_dir=tmp_path)
    assert live.headless and not live.widgets
    for r in history():
        live(r)
    figs = live.finish()
    assert set(figs) == {"loss", "per_class"}
    assert (tmp_path / "loss.html").exists() and (tmp_path / "per_class.html").exists()
    assert (tmp_path / "plotly.min.js").exists()  # written once beside the figures: works offline
    assert "plotly.min.js" in (tmp_path / "loss.html").read_text()


def traces(fig) -> list[tuple]:
    """What a figure plots: each trace's name, x and y."""
    return [(t.name, tuple(t.x), tuple(t.y)) for t in fig.data]


def test_live_plot_interactive_updates_widgets(capsys):
    figures = {"loss": plots.loss_figure, "per_class": plots.per_class_figure}
    live = figure_show.live_plot(figures, interactive=True)
    assert not live.headless and set(live.widgets) == {"loss", "per_class"}
    assert all(isinstance(w, go.FigureWidget) for w in live.widgets.values())   # anywidget is installed
    records = history()
    for k, r in enumerate(records, 1):
        live(r)  # each FigureWidget redrawn in place with every epoch so far
        tables = history_tables(records[:k])
        for name, fn in figures.items():
            assert traces(live.widgets[name]) == traces(fn(tables)), (name, k)
    loss = live.widgets["loss"].data[0]   # the first panel: the loss itself, per epoch
    assert loss.name == "adversarial" and list(loss.x) == [1, 2, 3] and list(loss.y) == [2.0, 1.0, 2 / 3]
    final = live.finish()
    assert set(final) == {"loss", "per_class"}
    assert traces(final["loss"]) == traces(plots.loss_figure(history_tables(records)))


def test_live_plot_without_figure_widgets_redraws_into_output_widgets(monkeypatch):
    """plotly >= 6 without anywidget: one Output widget per view, each record redrawn into it."""
    class NoAnywidget(go.FigureWidget):
        def __init__(self, *_a, **_k):
            raise ImportError("anywidget")

    shown = []
    monkeypatch.setattr(go, "FigureWidget", NoAnywidget)
    monkeypatch.setattr(figure_show, "show", lambda fig, *a, **k: shown.append(fig))
    live = figure_show.live_plot({"loss": plots.loss_figure}, interactive=True)
    assert type(live.widgets["loss"]).__name__ == "Output"
    records = history()
    for k, r in enumerate(records, 1):
        live(r)
        assert len(shown) == k and traces(shown[-1]) == traces(plots.loss_figure(history_tables(records[:k])))


def test_is_headless(monkeypatch):
    monkeypatch.delenv("TAET_HEADLESS", raising=False)
    assert figure_show.is_headless(False) and not figure_show.is_headless(True)   # the parameter wins
    assert figure_show.is_headless()                                         # plain Python, no kernel
    monkeypatch.setenv("TAET_HEADLESS", "1")
    assert figure_show.is_headless() and not figure_show.is_headless(True)


# ------------------------------------------------------------------------------ data figures
def test_counts_bars_and_sample_grid():
    counts = pd.DataFrame([(ir, split, c, CLASSES[c], n) for ir in (10.0, 100.0)
                           for split in ("train", "balanced test", "long_tailed test")
                           for c, n in enumerate(COUNTS)],
                          columns=["imbalance_ratio", "split", "class", "class_name", "count"])
    fig = plots.counts_bars(counts)
    assert fig.layout.yaxis.type == "log"
    assert {tr.name for tr in fig.data} == {"IR 10", "IR 100"}
    assert {a.text for a in fig.layout.annotations} == {"train", "balanced test", "long_tailed test"}

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 10)
    for channels in (1, 3):
        x = rng.integers(0, 256, (60, channels, 8, 8), dtype=np.uint8)
        grid = plots.sample_grid(x, y, CLASSES, per_class=4)
        assert list(grid.layout.yaxis.ticktext) == CLASSES
        img = png_pixels(grid)
        assert img.shape == (6 * 10, 4 * 10, 3)   # 8x8 images, 2 px of white between them
        for c in range(6):
            cells = [img[c * 10:c * 10 + 8, j * 10:j * 10 + 8] for j in range(4)]
            # each cell is an image of its row's class, drawn once; grey images fill all three channels
            images = [x[i].transpose(1, 2, 0).repeat(3 // channels, axis=2) for i in np.flatnonzero(y == c)]
            hits = [next((i for i, im in enumerate(images) if np.array_equal(cell, im)), None) for cell in cells]
            assert None not in hits and len(set(hits)) == 4, (channels, c, hits)
            assert (img[c * 10 + 8:c * 10 + 10] == 255).all()


def png_pixels(fig) -> np.ndarray:
    """The RGB pixels of the PNG inside px.imshow(binary_string=True)."""
    import base64
    import io

    from PIL import Image
    data = fig.data[0].source.split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


# ------------------------------------------------------------------------------ evaluation figures
def test_per_class_and_group_bars():
    table = pd.concat([per_class("clean", "balanced", [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]),
                       per_class("pgd20", "balanced", [0.5, 0.4, 0.3, 0.2, 0.1, 0.0])])
    fig = plots.per_class_bars(table, color="attack")
    assert {tr.name for tr in fig.data} == {"clean", "pgd20"}
    assert list(fig.data[0].x) == CLASSES
    grouped = plots.with_groups(table, COUNTS)
    assert grouped.groupby("group")["class"].apply(set).to_dict() == {"head": {0, 1}, "medium": {2, 3},
                                                                    "tail": {4, 5}}
    summary = pd.DataFrame({"attack": ["clean", "pgd20"], "head": [0.85, 0.45], "medium": [0.65, 0.25],
                            "tail": [0.45, 0.05], "balanced": [0.65, 0.25]})
    g = plots.summary_groups(summary, ["attack"])
    assert set(g.group) == {"head", "medium", "tail", "all"} and len(g) == 8
    bars = plots.group_bars(g)
    assert traces(bars) == [("clean", ("head", "medium", "tail", "all"), (0.85, 0.65, 0.45, 0.65)),
                            ("pgd20", ("head", "medium", "tail", "all"), (0.45, 0.25, 0.05, 0.25))]
    assert bars.layout.yaxis.title.text == "mean recall" and list(bars.layout.yaxis.range) == [0, 1.05]
    assert "nothing" in plots.per_class_bars(table.iloc[:0]).layout.title.text


def test_eps_curves_confusion_and_tradeoff():
    curves = pd.concat([per_class("pgd20", "balanced", np.linspace(0.9, 0.4, 6) - e, eps=e) for e in (0, 0.05, 0.1)])
    fig = plots.eps_curves(curves)
    assert len(fig.data) == 6 and list(fig.data[0].x) == [0, 0.05, 0.1]
    assert fig.data[0].error_y.array is None   # no interval columns, no bars
    low, high = np.array([stats.wilson(k, m) for k, m in zip(curves["correct"], curves["n"])]).T
    fig = plots.eps_curves(curves.assign(recall_low=low, recall_high=high))   # evaluate's curves carry Wilson's
    first = curves.assign(recall_low=low, recall_high=high).query("`class` == 0").sort_values("eps")
    assert list(fig.data[0].error_y.array) == pytest.approx(list(first.recall_high - first.recall))
    assert list(fig.data[0].error_y.arrayminus) == pytest.approx(list(first.recall - first.recall_low))

    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 0])
    conf = plots.confusion_table(y, pred, ["a", "b", "c"])
    assert conf["count"].sum() == 6
    row_c = conf[conf.true == "c"].set_index("pred")["share"]
    assert row_c["a"] == 1.0 and row_c["c"] == 0.0  # every 'c' was sent to 'a'
    heat = plots.confusion_heatmap(conf)
    assert np.asarray(heat.data[0].z).shape == (3, 3)

    pts = pd.DataFrame({"arm": ["taet", "at_bsl"], "balanced_accuracy": [0.75, 0.72],
                        "balanced_robustness": [0.35, 0.27], "balanced_accuracy_low": [0.74, np.nan],
                        "balanced_accuracy_high": [0.77, np.nan], "balanced_robustness_low": [0.33, 0.26],
                        "balanced_robustness_high": [0.36, 0.29]})
    sc = plots.tradeoff_scatter(pts)
    assert [t.name for t in sc.data] == ["at_bsl", "taet"] and sc.layout.xaxis.title.text == "balanced accuracy"
    taet = sc.data[1]   # intervals as error bars both ways (asymmetric); none where the table has none
    assert (taet.error_x.array[0], taet.error_x.arrayminus[0]) == pytest.approx((0.02, 0.01))
    assert (taet.error_y.array[0], taet.error_y.arrayminus[0]) == pytest.approx((0.01, 0.02))
    assert np.isnan(sc.data[0].error_x.array[0]) and sc.data[0].error_y.array[0] == pytest.approx(0.02)


def test_sweep_lines():
    agg = pd.DataFrame([(ir, arm, m, v, 0.01) for ir in (10.0, 100.0) for arm in ("taet", "pgd_at")
                        for m, v in (("balanced_accuracy", 0.7), ("balanced_robustness", 0.3))],
                       columns=["imbalance_ratio", "arm", "metric", "mean", "std"])
    fig = plots.sweep_lines(agg)
    assert {tr.name for tr in fig.data} == {"taet", "pgd_at"}
    assert fig.layout.xaxis.type == "log"


# ------------------------------------------------------------------------------ report views
def fake_run(root, method, ir, seed, good):
    """A run folder as train + evaluate_run leave it: config.json and eval/ tables."""
    d = root / f"synthetic-ir{ir:g}" / method / f"seed{seed}"
    (d / "eval").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"dataset": "synthetic", "imbalance_ratio": ir, "method": method,
                                               "robustlt": False, "seed": seed}))
    rec = np.linspace(0.9, 0.4, 6) * good
    table = pd.concat([per_class(a, p, rec * f) for p in ("balanced", "long_tailed")
                       for a, f in (("clean", 1.0), ("pgd20", 0.5))])
    table["train_count"] = table["class"].map(dict(enumerate([600, 300, 150, 80, 40, 20])))
    table.to_csv(d / "eval" / "per_class.csv", index=False)
    curves = pd.concat([per_class("pgd20", p, rec * (1 - e * 5), eps=e) for p in ("balanced", "long_tailed")
                        for e in (0.0, 0.05, 0.1)])
    curves.to_csv(d / "eval" / "curves.csv", index=False)
    summ = (table.groupby(["attack", "protocol"], as_index=False, sort=False)
            .agg(overall=("recall", "mean"), balanced=("recall", "mean")))
    summ = summ.assign(head=summ.balanced + 0.1, medium=summ.balanced, tail=summ.balanced - 0.1, eps=0.1)
    summ.to_csv(d / "eval" / "summary.csv", index=False)
    y = np.repeat(np.arange(6), 10)
    preds = {f"{p}/{a}/{k}": v for p in ("balanced", "long_tailed") for a in ("clean", "pgd20")
             for k, v in (("y", y), ("pred", (y + (a == "pgd20")) % 6), ("index", np.arange(60)))}
    np.savez_compressed(d / "eval" / "predictions.npz", **preds)
    return d


@pytest.fixture
def runs(tmp_path):
    return [fake_run(tmp_path, m, ir, s, g) for ir in (10.0, 100.0) for m, g in (("taet", 1.0), ("pgd_at", 0.8))
            for s in (0, 1)]


def test_load_runs_stacks_tables(runs, tmp_path):
    assert report.find_runs(tmp_path) == sorted(runs)
    t = report.load_runs(runs)
    assert len(t["runs"]) == 8 and set(t["runs"].arm) == {"taet", "pgd_at"}
    assert list(t["per_class"].columns[:8]) == report.RUN_COLUMNS
    assert len(t["per_class"]) == 8 * 2 * 2 * 6
    assert t["runs"].label.iloc[0] == "synthetic-ir10/taet/seed0"
    y, pred = report.predictions(runs[0], "balanced", "pgd20")
    assert (pred == (y + 1) % 6).all()
    with pytest.raises(KeyError, match="no predictions"):
        report.predictions(runs[0], "balanced", "autoattack")
    with pytest.raises(FileNotFoundError, match="notebook 04"):
        report.load_runs([tmp_path])


def test_views_and_tradeoff_points(runs, tmp_path):
    t = report.load_runs(runs)
    pts = compare.tradeoff_points(t["summary"], "balanced", "pgd20")
    assert len(pts) == 4  # one point per arm and IR, seeds averaged
    taet = pts[(pts.arm == "taet") & (pts.imbalance_ratio == 10)].iloc[0]
    assert taet.balanced_accuracy == pytest.approx(np.linspace(0.9, 0.4, 6).mean(), abs=0.02)
    assert taet.balanced_robustness < taet.balanced_accuracy
    figs = views.views(t, "synthetic-ir10/taet/seed0", "pgd20", "balanced")
    assert set(figs) == set(views.RUN_VIEWS) | set(report.CROSS_VIEWS)
    assert all(isinstance(f, go.Figure) and len(f.data) for f in figs.values())
    paths = views.write_views(t, tmp_path / "views", "pgd20")
    assert len(paths) == 2 * (len(report.CROSS_VIEWS) + 8 * len(views.RUN_VIEWS))
    assert all(p.exists() for p in paths)


def test_explorer_redraws_the_views_the_dropdowns_pick(runs, monkeypatch):
    t = report.load_runs(runs)
    shown = []
    monkeypatch.setattr(figure_show, "show", lambda fig, *a, **k: shown.append(fig.to_json()))

    def drawn(label, attack, protocol):
        return [f.to_json() for f in views.views(t, label, attack, protocol).values()]

    box = views.explorer(t, "pgd20", "long_tailed")
    run, attack, protocol = box.children[0].children
    assert list(run.options) == list(t["runs"].label) and attack.value == "pgd20"
    assert protocol.value == "long_tailed"
    first = t["runs"].label.iloc[0]
    assert shown == drawn(first, "pgd20", "long_tailed")   # drawn once when built
    shown.clear()
    protocol.value = "balanced"                            # an observer redraws every view
    assert shown == drawn(first, "pgd20", "balanced") and shown != drawn(first, "pgd20", "long_tailed")
    shown.clear()
    run.value = t["runs"].label.iloc[-1]
    assert shown == drawn(run.value, "pgd20", "balanced") and shown != drawn(first, "pgd20", "balanced")


def test_html_figures_share_one_plotlyjs(tmp_path):
    figure_files.write_plotlyjs(tmp_path)
    fig = plots.per_class_bars(per_class("clean", "balanced", [0.5] * 6))
    deep = figure_files.save_html(fig, tmp_path / "ir10" / "taet" / "seed0" / "figures" / "x.html")
    assert 'src="../../../../plotly.min.js"' in deep.read_text()
    assert not (deep.parent / "plotly.min.js").exists()
    far = figure_files.save_html(fig, tmp_path / "a" / "b" / "c" / "d" / "e" / "x.html")  # beyond 4 levels: own copy
    assert (far.parent / "plotly.min.js").exists()


def test_many_arms_get_distinct_colours_and_every_panel_its_axis_title():
    # 24 arms (the results grid) outrun plotly's 10 default colours: no two may share one
    arms = [f"arm{i:02d}" for i in range(24)]
    pts = pd.DataFrame({"arm": arms * 2, "imbalance_ratio": [10] * 24 + [100] * 24,
                        "IR": ["IR 10"] * 24 + ["IR 100"] * 24, "balanced_accuracy": 0.5, "balanced_robustness": 0.3})
    fig = plots.tradeoff_scatter(pts, facet_col="IR")
    colours = {t.name: t.marker.color for t in fig.data}
    assert len(colours) == 24 and len(set(colours.values())) == 24
    assert [ax.title.text for ax in (fig.layout.xaxis, fig.layout.xaxis2)] == ["balanced accuracy"] * 2
