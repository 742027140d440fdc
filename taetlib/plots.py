"""Plotly figures built from tidy tables (figure_show.py shows them, and grows them while a run trains).

Every figure function is pure: a tidy (long-format) pandas table in, a `go.Figure` out; the caller
filters the table to what it wants to see. The schemas:
- per-class evaluation (evaluate.py): attack, protocol, eps, class, class_name, n, correct, recall,
  plus run columns (run, label, imbalance_ratio, arm, seed) when several runs are stacked;
- training history (`history_tables`): scalars (epoch, stage, metric, value) and per-class
  (epoch, stage, split, kind, class, class_name, value);
- sweep aggregate (sweep.py): imbalance_ratio, arm, protocol, metric, mean, std, n, low, high.
Every number drawn with an interval beside it in its table is drawn with that interval as its error
bar (`<value>_low` / `<value>_high`, or `low` / `high` of the aggregate): 95 %, asymmetric.
`figure_show.show(fig, path)` displays a figure and, given a path, writes it as a stand-alone HTML file;
`figure_files.export_figure(fig, path)` writes it as PNG / SVG.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .metrics import class_groups

__all__ = ["GROUP_ORDER", "LOSS_PARTS", "MANY", "TEMPLATE", "WEAK_PATTERN", "accuracy_figure", "arm_forest",
           "class_weight_figure", "confusion_heatmap", "confusion_table", "counts_bars", "difference_forest",
           "eps_curves", "error_bars", "group_bars", "history_lines", "loss_figure", "per_class_bars",
           "per_class_figure", "per_class_lines", "radius_lines", "recall_vs_count", "sample_grid", "summary_groups",
           "sweep_lines", "tradeoff_scatter", "value_heatmap", "with_groups"]

TEMPLATE = "plotly_white"
GROUP_ORDER = ["head", "medium", "tail", "all"]


# ------------------------------------------------------------------------------ figures: data
def counts_bars(counts: pd.DataFrame) -> go.Figure:
    """Per-class image counts (columns: imbalance_ratio, split, class, class_name, count), log scale,
    the training set and each test protocol side by side."""
    df = counts.assign(IR=[f"IR {v:g}" for v in counts["imbalance_ratio"]])
    fig = px.bar(df, x="class_name", y="count", color="IR", facet_col="split", barmode="group", log_y=True,
                 category_orders={"split": list(dict.fromkeys(df["split"]))}, template=TEMPLATE,
                 hover_data=["class", "count"])
    fig.update_xaxes(title=None, tickangle=-45)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig.update_layout(title="Images per class (log scale)", yaxis_title="images")


def sample_grid(x, y, class_names, per_class: int = 8, seed: int = 0) -> go.Figure:
    """A grid of sample images, one row per class. x: uint8 [N, C, H, W] (array or tensor)."""
    x = np.asarray(x.cpu() if hasattr(x, "cpu") else x)
    y = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    n_cls, (ch, h, w), pad = len(class_names), x.shape[1:], 2
    grid = np.full((n_cls * (h + pad), per_class * (w + pad), 3), 255, np.uint8)
    rng = np.random.default_rng(seed)
    for c in range(n_cls):  # a handful of images drawn once: no need to vectorise
        for j, i in enumerate(rng.permutation(np.flatnonzero(y == c))[:per_class]):
            img = x[i].transpose(1, 2, 0)
            grid[c * (h + pad):c * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = img if ch == 3 else img[..., :1]
    fig = px.imshow(grid, binary_string=True)  # one PNG in the figure, not a JSON number per pixel
    fig.update_yaxes(tickmode="array", tickvals=[c * (h + pad) + h / 2 for c in range(n_cls)],
                     ticktext=list(class_names))
    fig.update_xaxes(showticklabels=False)
    return fig.update_layout(title="Sample training images per class", template=TEMPLATE,
                             height=max(300, 40 * n_cls + 80), margin=dict(l=110))


# ------------------------------------------------------------------------------ figures: training
def _empty(title: str) -> go.Figure:
    return go.Figure().update_layout(title=title, template=TEMPLATE)


def history_lines(scalars: pd.DataFrame, metrics: list[str] | None = None, title: str = "") -> go.Figure:
    """One panel per scalar metric against epoch (columns: epoch, stage, metric, value)."""
    df = scalars if metrics is None else scalars[scalars["metric"].isin(metrics)]
    if df.empty:
        return _empty(f"{title} (no epoch yet)")
    order = [m for m in (metrics or dict.fromkeys(df["metric"])) if m in set(df["metric"])]
    fig = px.line(df, x="epoch", y="value", color="stage", facet_col="metric", facet_col_wrap=3, markers=True,
                  category_orders={"metric": order}, template=TEMPLATE, facet_col_spacing=0.07,
                  facet_row_spacing=0.12)
    fig.update_yaxes(matches=None, showticklabels=True, title=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig.update_layout(title=title, height=130 + 250 * int(np.ceil(len(order) / 3)))


def per_class_lines(per_class: pd.DataFrame, title: str = "Per-class accuracy") -> go.Figure:
    """Per-class accuracy against epoch, a panel per split x kind (train clean, test pgd, ...)."""
    if per_class.empty:
        return _empty(f"{title} (no epoch yet)")
    df = per_class.assign(panel=per_class["split"] + " " + per_class["kind"])
    fig = px.line(df, x="epoch", y="value", color="class_name", facet_col="panel", facet_col_wrap=2,
                  markers=True, template=TEMPLATE, range_y=[-0.02, 1.02], facet_row_spacing=0.12,
                  category_orders={"panel": sorted(set(df["panel"]), key=lambda p: (p.split()[0] != "train", p))})
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig.update_layout(title=title, height=130 + 260 * int(np.ceil(df["panel"].nunique() / 2)))


LOSS_PARTS = ("loss", "loss_bcl", "loss_hdl", "loss_rcel")


def loss_figure(tables: dict) -> go.Figure:
    """The loss and its components (TAET's BCL / HDL / RCEL, TRADES' KL, ...) per epoch."""
    present = list(dict.fromkeys(tables["scalars"]["metric"]))
    parts = [m for m in present if m == "loss" or m.startswith("loss_")]
    return history_lines(tables["scalars"], parts, "Training loss and its components")


def accuracy_figure(tables: dict) -> go.Figure:
    """Balanced train / test accuracy, clean and robust, per epoch."""
    present = list(dict.fromkeys(tables["scalars"]["metric"]))
    return history_lines(tables["scalars"], [m for m in present if m.endswith("_acc")],
                         "Balanced accuracy (mean over classes)")


def class_weight_figure(tables: dict) -> go.Figure:
    """HARL's effective weight of each class, w_c = dloss/dL_c, per epoch (mean over the batches that
    hold the class), and below it the share of those batches in which it was negative, where recorded: a
    mean above zero can hide batches in which training ascended that class's adversarial loss."""
    cw = tables.get("class_weight")
    if cw is None or cw.empty:
        return _empty("HARL per-class weight w_c: recorded once HARL trains")
    panels = {"value": "mean w_c", "negative_batches": "batches with w_c < 0"}
    if cw["negative_batches"].isna().all():   # runs that recorded the mean alone
        panels.pop("negative_batches")
    long = cw.melt(id_vars=["epoch", "class_name"], value_vars=list(panels), var_name="panel", value_name="y")
    fig = px.line(long.assign(panel=long["panel"].map(panels)), x="epoch", y="y", color="class_name",
                  facet_row="panel" if len(panels) > 1 else None, markers=True, template=TEMPLATE,
                  labels={"y": "", "class_name": "class"},
                  title="HARL per-class weight w_c = dloss / dL_c (below 0: gradient ascent on that class)")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))   # the panel's name, not "=name"
    return fig.update_yaxes(matches=None).add_hline(y=0, line_dash="dot", line_color="gray")


def per_class_figure(tables: dict) -> go.Figure:
    return per_class_lines(tables["per_class"], "Per-class accuracy: clean and robust, train and test")


# ------------------------------------------------------------------------------ figures: evaluation
def _sorted(df: pd.DataFrame, col: str | None) -> dict:
    """category_orders for `col`: its values sorted, so an arm has one colour in every figure of a page."""
    return {col: sorted(dict.fromkeys(df[col].astype(str)))} if col else {}


MANY = 10   # more arms than this outrun plotly's 10 default colours, and grouped bars or lines of them blur


def _palette(df: pd.DataFrame, col: str | None) -> dict:
    """More than MANY values of `col` (the results grid's 24 arms) outrun plotly's default 10 colours: then
    the 26 of Alphabet, so no two arms share one."""
    return {"color_discrete_sequence": px.colors.qualitative.Alphabet} if col and df[col].nunique() > MANY else {}


def value_heatmap(df: pd.DataFrame, row: str, col: str, value: str, low: str, high: str, *, title: str,
                  col_title: str | None, bold: str | None = None, value_title: str = "%") -> go.Figure:
    """One cell per (`row`, `col`) for more arms than bars or lines keep apart: the value in %, its 95 %
    interval printed beneath it, rows by their mean over the columns (highest first), cells where `bold` is
    true in bold. `col` keeps the table's order."""
    rows = df.groupby(row, sort=False)[value].mean().sort_values(ascending=False).index.tolist()
    cols = list(dict.fromkeys(df[col]))
    grid = {c: df.pivot_table(index=row, columns=col, values=c, aggfunc="first").reindex(index=rows, columns=cols)
            for c in (value, low, high)}
    z, lo, hi = (100 * grid[c].to_numpy(float) for c in (value, low, high))
    strong = (df.assign(_b=df[bold].astype(bool)).pivot_table(index=row, columns=col, values="_b", aggfunc="first")
              .reindex(index=rows, columns=cols).fillna(False).to_numpy(bool) if bold else np.zeros(z.shape, bool))
    text = [[("" if np.isnan(v) else (f"<b>{v:.0f}</b>" if b else f"{v:.0f}") +
              ("" if np.isnan(a) else f"<br><span style='font-size:9px'>{a:.0f}-{h:.0f}</span>"))
             for v, a, h, b in zip(*r)] for r in zip(z, lo, hi, strong)]
    fig = go.Figure(go.Heatmap(z=z, x=[str(c) for c in cols], y=rows, zmin=0, zmax=100, colorscale="Viridis",
                               text=text, texttemplate="%{text}", textfont_size=11, customdata=np.dstack([lo, hi]),
                               colorbar_title=value_title, hovertemplate="%{y}, %{x}: %{z:.1f} [%{customdata[0]:.1f}, "
                                                                         "%{customdata[1]:.1f}]<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title=None)
    fig.update_xaxes(title=col_title, type="category", side="top")
    return fig.update_layout(title=title, template=TEMPLATE, height=36 * len(rows) + 220,
                             margin_t=150)


def error_bars(df: pd.DataFrame, value: str, low: str | None = None, high: str | None = None,
               axis: str = "y") -> tuple[pd.DataFrame, dict]:
    """(df, px keyword arguments) for error bars from the interval [low, high] around `value` (default
    columns `<value>_low` / `<value>_high`); no bars where the table holds no interval."""
    low, high = low or f"{value}_low", high or f"{value}_high"
    if low not in df or high not in df or not (df[low].notna() & df[high].notna()).any():
        return df, {}
    plus, minus = f"{value} + ({axis})", f"{value} - ({axis})"
    df = df.assign(**{plus: df[high] - df[value], minus: df[value] - df[low]})
    return df, {f"error_{axis}": plus, f"error_{axis}_minus": minus}


def with_groups(table: pd.DataFrame, train_counts) -> pd.DataFrame:
    """Adds `group` (head / medium / tail by training count, metrics.class_groups) to a per-class table."""
    group_of = {int(c): g for g, idx in class_groups(train_counts).items() for c in idx}
    return table.assign(group=table["class"].map(group_of))


WEAK_PATTERN = "/"   # hatching of a bar whose class is among its arm's weakest (compare.with_weakest)


def per_class_bars(table: pd.DataFrame, color: str = "attack", facet_col: str | None = None,
                   title: str = "Per-class recall") -> go.Figure:
    """Grouped bars of recall per class; `color` picks what is compared (attack: clean vs robust;
    label or arm: method vs method). Error bars: the interval recall_low / recall_high (Wilson for
    one run, t over seeds for a mean); bars with `weakest` true are hatched."""
    if table.empty:
        return _empty(f"{title} (nothing to show)")
    df = table.assign(**{color: table[color].astype(str)})
    df = df.assign(weakest=df["weakest"].astype(bool)) if "weakest" in df else df.assign(weakest=False)
    df, err = error_bars(df, "recall")
    hover = [c for c in ("n", "correct", "eps", "recall_low", "recall_high", "weakest") if c in df]
    fig = px.bar(df, x="class_name", y="recall", color=color, facet_col=facet_col, barmode="group",
                 custom_data=["weakest"], hover_data=hover, template=TEMPLATE, range_y=[0, 1.02],
                 category_orders={"class_name": list(dict.fromkeys(df.sort_values("class")["class_name"])),
                                  **_sorted(df, color)}, **_palette(df, color), **err)
    fig.for_each_trace(lambda t: t.update(marker_pattern_shape=[WEAK_PATTERN if w else "" for w in t.customdata[:, 0]]))
    fig.update_xaxes(title=None, tickangle=-45)
    return fig.update_layout(title=title, yaxis_title="recall")


def recall_vs_count(table: pd.DataFrame, color: str = "arm",
                    title: str = "Robust recall vs training count") -> go.Figure:
    """One point per class (and `color`): recall against the class's training count on a log axis, so a
    weak class that is not rare (Shirt in Fashion-MNIST-LT, cat in CIFAR-10-LT) stands out from the tail."""
    if table.empty or "train_count" not in table:
        return _empty(f"{title} (nothing to show)")
    df, err = error_bars(table.assign(**{color: table[color].astype(str)}), "recall")
    fig = px.scatter(df, x="train_count", y="recall", color=color, log_x=True, text="class_name",
                     hover_data=[c for c in ("n", "recall_std", "recall_low", "recall_high") if c in df],
                     template=TEMPLATE, range_y=[0, 1.02], category_orders=_sorted(df, color), **_palette(df, color),
                     **err)
    fig.update_traces(textposition="top center", mode="markers+text")
    return fig.update_layout(title=title, xaxis_title="training images of the class (log)", yaxis_title="recall")


def group_bars(groups: pd.DataFrame, color: str = "attack", facet_col: str | None = None,
               title: str = "Head / medium / tail mean recall") -> go.Figure:
    """Bars of mean recall per group (columns: group, recall, `color`), e.g. from evaluate's summary;
    error bars where the table holds recall_low / recall_high (a mean over seeds)."""
    if groups.empty:
        return _empty(f"{title} (nothing to show)")
    df, err = error_bars(groups.assign(**{color: groups[color].astype(str)}), "recall")
    fig = px.bar(df, x="group", y="recall", color=color, facet_col=facet_col, barmode="group", text_auto=".2f",
                 category_orders={"group": GROUP_ORDER, **_sorted(df, color)}, template=TEMPLATE, range_y=[0, 1.05],
                 **err)
    return fig.update_layout(title=title, yaxis_title="mean recall")


def summary_groups(summary: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """evaluate's summary (one row per attack x protocol, columns head / medium / tail / balanced)
    -> tidy group means: `by` columns, group, recall."""
    df = summary.rename(columns={"balanced": "all"})
    return df.melt(id_vars=by, value_vars=GROUP_ORDER, var_name="group", value_name="recall")


def eps_curves(curves: pd.DataFrame, facet_col: str | None = None,
               title: str = "Robustness vs eps per class") -> go.Figure:
    """Recall against the attack radius, one line per class (evaluate's curves table), with each
    point's Wilson interval (recall_low / recall_high) as its error bar."""
    if curves.empty:
        return _empty(f"{title} (no eps sweep)")
    df, err = error_bars(curves.sort_values(["class", "eps"]), "recall")
    fig = px.line(df, x="eps", y="recall", color="class_name", facet_col=facet_col, markers=True,
                  template=TEMPLATE, range_y=[-0.02, 1.02],
                  hover_data=[c for c in ("n", "correct", "recall_low", "recall_high") if c in df], **err)
    return fig.update_layout(title=title, xaxis_title="eps (L-inf, pixel units)", yaxis_title="recall")


def radius_lines(table: pd.DataFrame, title: str = "Balanced robustness vs eps") -> go.Figure:
    """Balanced robustness against the attack radius, one line per arm (columns eps, arm, mean, low, high:
    means over seeds with their 95 % intervals as error bars)."""
    if table.empty:
        return _empty(f"{title} (no eps sweep)")
    if table["arm"].nunique() > MANY:
        return value_heatmap(table.sort_values("eps"), "arm", "eps", "mean", "low", "high", col_title="eps (L-inf, "
                             "pixel units)", title=f"{title}, arms by their mean over the radii<br><sup>% with its 95 "
                             "% interval beneath</sup>", value_title="robust (%)")
    df, err = error_bars(table.sort_values(["arm", "eps"]), "mean", "low", "high")
    fig = px.line(df, x="eps", y="mean", color="arm", markers=True, template=TEMPLATE, range_y=[-0.02, 1.02],
                  category_orders=_sorted(df, "arm"), **_palette(df, "arm"),
                  hover_data=[c for c in ("n", "low", "high") if c in df], **err)
    return fig.update_layout(title=title, xaxis_title="eps (L-inf, pixel units)", yaxis_title="balanced robustness")


def confusion_table(y_true, y_pred, class_names) -> pd.DataFrame:
    """Tidy confusion counts: true, pred (class names), count, and share of the true class's row."""
    k = len(class_names)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    m = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    t, p = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    names = np.asarray(class_names, dtype=object)
    return pd.DataFrame({"true": names[t.ravel()], "pred": names[p.ravel()], "count": m.ravel(),
                         "share": share.ravel()})


def confusion_heatmap(conf: pd.DataFrame, title: str = "Where adversarial examples are sent") -> go.Figure:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) from `confusion_table`."""
    names = list(dict.fromkeys(conf["true"]))
    share = conf.pivot(index="true", columns="pred", values="share").reindex(index=names, columns=names)
    count = conf.pivot(index="true", columns="pred", values="count").reindex(index=names, columns=names)
    fig = go.Figure(go.Heatmap(z=share.values, x=names, y=names, customdata=count.values, colorscale="Blues",
                               zmin=0, zmax=1, text=np.round(share.values, 2), texttemplate="%{text}",
                               hovertemplate="true %{y}<br>pred %{x}<br>share %{z:.2f} (%{customdata})<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="true class")
    fig.update_xaxes(title="predicted class", tickangle=-45)
    return fig.update_layout(title=title, template=TEMPLATE, height=max(400, 45 * len(names) + 150))


def tradeoff_scatter(points: pd.DataFrame, label: str = "arm", facet_col: str | None = None,
                     title: str = "Balanced accuracy vs balanced robustness") -> go.Figure:
    """TAET's Figure 2: one point per method. Columns: `label`, balanced_accuracy, balanced_robustness and,
    for error bars in both directions, their 95 % intervals balanced_accuracy_low / _high and
    balanced_robustness_low / _high (compare.tradeoff_points)."""
    if points.empty:
        return _empty(f"{title} (nothing to show)")
    df, err_x = error_bars(points, "balanced_accuracy", axis="x")
    df, err_y = error_bars(df, "balanced_robustness", axis="y")
    hover = [c for c in ("n", "balanced_accuracy_low", "balanced_accuracy_high", "balanced_robustness_low",
                         "balanced_robustness_high", "interval") if c in df]
    fig = px.scatter(df, x="balanced_accuracy", y="balanced_robustness", color=label, facet_col=facet_col,
                     hover_data=hover, template=TEMPLATE, category_orders=_sorted(df, label), **_palette(df, label),
                     **err_x, **err_y)
    fig.update_traces(marker_size=11)   # named in the legend: labels beside the points would sit on the bars
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_xaxes(title_text="balanced accuracy")   # every panel's axis, not only the first
    return fig.update_layout(title=title, yaxis_title="balanced robustness")


def arm_forest(points: pd.DataFrame, value: str, title: str, label: str = "arm") -> go.Figure:
    """One row per arm, highest mean first: `value` with its 95 % interval (`<value>_low` / `_high`) as an
    error bar, coloured by the seeds behind it (`n`): one seed's interval holds its test images only."""
    df = points.dropna(subset=[value]).sort_values(value, ascending=False)
    if df.empty:
        return _empty(f"{title} (nothing to show)")
    df = df.assign(seeds=[f"{n:.0f} seeds" if n > 1 else "1 seed (test images only)" for n in df["n"]])
    df, err = error_bars(df, value, axis="x")
    fig = px.scatter(df, x=value, y=label, color="seeds", symbol="seeds", template=TEMPLATE,
                     category_orders={label: list(df[label]), "seeds": sorted(set(df["seeds"]), reverse=True)},
                     hover_data=[c for c in (f"{value}_low", f"{value}_high", "n") if c in df], **err)
    fig.update_traces(marker_size=10)
    fig.update_yaxes(title=None)
    return fig.update_layout(title=title, xaxis_title=value.replace("_", " "), height=26 * len(df) + 200)


def difference_forest(diffs: pd.DataFrame, facet_col: str | None = "metric", color: str | None = None,
                      title: str = "Paired differences between arms") -> go.Figure:
    """One row per pair of arms: a - b with its 95 % interval (columns a, b, difference, low, high;
    compare.paired_rows), a line at 0: an interval clear of it is a difference the data show."""
    df = diffs.dropna(subset=["difference"]) if len(diffs) else diffs
    if df.empty:
        return _empty(f"{title} (no pair of arms on the same images)")
    df, err = error_bars(df.assign(pair=[f"{a} - {b}" for a, b in zip(df["a"], df["b"])]), "difference",
                         "low", "high", axis="x")
    fig = px.scatter(df, x="difference", y="pair", color=color, facet_col=facet_col, template=TEMPLATE,
                     hover_data=[c for c in ("low", "high", "n", "interval", "reading") if c in df],
                     category_orders={"pair": list(dict.fromkeys(df["pair"]))}, **err)
    fig.add_vline(x=0, line_dash="dot", line_color="gray")
    fig.update_yaxes(title=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig.update_layout(title=title, xaxis_title="difference (a - b)",
                             height=max(300, 28 * df["pair"].nunique() + 160))


def sweep_lines(aggregate: pd.DataFrame, metrics: list[str] | None = None,
                title: str = "Sweep: mean over seeds, 95 % intervals") -> go.Figure:
    """Metric against imbalance ratio per arm (method[+robustlt]), a panel per metric, the aggregate's
    interval low / high as error bars (t over seeds; one run: its own). Columns: imbalance_ratio, arm,
    metric, mean, low, high (one protocol: filter first)."""
    df = aggregate if metrics is None else aggregate[aggregate["metric"].isin(metrics)]
    if df.empty:
        return _empty(f"{title} (nothing to show)")
    order = [m for m in (metrics or dict.fromkeys(df["metric"])) if m in set(df["metric"])]
    df, err = error_bars(df.sort_values("imbalance_ratio"), "mean", "low", "high")
    fig = px.line(df, x="imbalance_ratio", y="mean", color="arm", facet_col="metric",
                  hover_data=[c for c in ("std", "n", "low", "high", "interval") if c in df],
                  facet_col_wrap=3, markers=True, log_x=True, template=TEMPLATE,
                  category_orders={"metric": order, **_sorted(df, "arm")}, **_palette(df, "arm"),
                  facet_col_spacing=0.07, facet_row_spacing=0.15, **err)
    fig.update_yaxes(matches=None, showticklabels=True, title=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig.update_layout(title=title, height=130 + 270 * int(np.ceil(len(order) / 3)))
