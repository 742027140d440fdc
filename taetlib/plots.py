"""Plotly figures built from tidy tables, plus `live_plot` for figures that grow while training.

Every figure function is pure: a tidy (long-format) pandas table in, a `go.Figure` out; the caller
filters the table to what it wants to see. The schemas:
- per-class evaluation (evaluate.py): attack, protocol, eps, class, class_name, n, correct, recall,
  plus run columns (run, label, imbalance_ratio, arm, seed) when several runs are stacked;
- training history (`history_tables`): scalars (epoch, stage, metric, value) and per-class
  (epoch, stage, split, kind, class, class_name, value);
- sweep aggregate (sweep.py): imbalance_ratio, arm, protocol, metric, mean, std, n.
`show(fig, path)` displays a figure and, given a path, writes it as a stand-alone HTML file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .history import history_tables, read_history  # noqa: F401  (plots.read_history: as before)
from .metrics import class_groups

HEADLESS_ENV = "TAET_HEADLESS"  # the sweep sets it: papermill gives the kernel no sign of its own
TEMPLATE = "plotly_white"
GROUP_ORDER = ["head", "medium", "tail", "all"]


# ------------------------------------------------------------------------------ display
def is_headless(interactive: bool | None = None) -> bool:
    """True under papermill, CI or plain Python. `interactive` (a notebook parameter) wins when given;
    else TAET_HEADLESS=1 means headless; else a kernel started by a batch runner's command line
    (papermill, nbconvert) is headless; else only a Jupyter kernel (ZMQ shell) is interactive."""
    if interactive is not None:
        return not interactive
    if os.environ.get(HEADLESS_ENV, "").lower() in ("1", "true", "yes"):
        return True
    try:
        from IPython import get_ipython  # optional (Jupyter); deferred for start-up time
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or type(shell).__name__ != "ZMQInteractiveShell" or _started_by_batch_runner()


def _started_by_batch_runner() -> bool:
    """The kernel's parent is papermill's or nbconvert's CLI (Linux /proc; False where unknown)."""
    try:
        cmd = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
    except OSError:
        return False
    return any(k in cmd for k in ("papermill", "nbconvert", "jupyter-execute", "nbclient"))


PLOTLYJS = "plotly.min.js"


def write_plotlyjs(folder: str | Path) -> Path:
    """plotly.js (4.6 MB) into `folder`, once: HTML figures there and below link to it."""
    target = Path(folder) / PLOTLYJS
    if not target.exists():
        from plotly.offline import get_plotlyjs  # 4.6 MB of JS; deferred until it is written
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(get_plotlyjs())
    return target


def plotlyjs_src(folder: Path, levels: int = 4) -> str:
    """Relative link to the nearest plotly.min.js in `folder` or up to `levels` folders above (a
    sweep keeps one at its root for all its runs); a new copy in `folder` if there is none."""
    for up, d in enumerate([folder, *folder.parents][:levels + 1]):
        if (d / PLOTLYJS).exists():
            return "../" * up + PLOTLYJS
    write_plotlyjs(folder)
    return PLOTLYJS


def save_html(fig: go.Figure, path: str | Path) -> Path:
    """A stand-alone HTML file that works offline, linking a shared plotly.min.js (`plotlyjs_src`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=plotlyjs_src(path.parent), full_html=True)
    return path


def show(fig: go.Figure, path: str | Path | None = None, *, interactive: bool | None = None) -> go.Figure:
    """Display `fig` and, given `path`, write it as HTML. Headless it is shown as plotly's JSON
    mimetype only: small in the saved notebook (no 4 MB of plotly.js), drawn by JupyterLab."""
    if path is not None:
        save_html(fig, path)
    try:
        from IPython import get_ipython  # optional (Jupyter); deferred for start-up time
        in_kernel = get_ipython() is not None
    except ImportError:
        in_kernel = False
    if in_kernel:
        fig.show(renderer="plotly_mimetype" if is_headless(interactive) else None)
    return fig


class LivePlot:
    """Figures that grow each epoch. Call it with each history record (fit's `callback`).

    views: {name: fn(history tables) -> go.Figure}. Interactive: one plotly FigureWidget per view
    in an ipywidgets box, redrawn in place (Output widgets where FigureWidget's `anywidget` is
    missing). Headless: nothing per epoch (fit prints a progress line); `finish()` shows the final
    static figures and writes each as <out_dir>/<name>.html.
    """

    def __init__(self, views: dict, *, out_dir: str | Path | None = None, interactive: bool | None = None,
                 class_names=None):
        self.views, self.out_dir, self.class_names = dict(views), out_dir, class_names
        self.records: list[dict] = []
        self.headless = is_headless(interactive)
        self.widgets: dict = {}
        if self.headless:
            return
        import ipywidgets  # interactive only; deferred for start-up time
        from IPython.display import display  # interactive only; deferred for start-up time
        tables = self.tables()
        try:
            self.widgets = {name: go.FigureWidget(fn(tables)) for name, fn in self.views.items()}
        except ImportError:  # plotly >= 6 needs anywidget for FigureWidget
            self.widgets = {name: ipywidgets.Output() for name in self.views}
        display(ipywidgets.VBox(list(self.widgets.values())))

    def tables(self) -> dict[str, pd.DataFrame]:
        return history_tables(self.records, self.class_names)

    def __call__(self, record: dict) -> None:
        self.records.append(record)
        if self.headless:
            return
        tables = self.tables()
        for name, fn in self.views.items():
            fig, w = fn(tables), self.widgets[name]
            if isinstance(w, go.FigureWidget):
                with w.batch_update():
                    w.data = []
                    w.add_traces(fig.data)
                    w.layout = fig.layout
            else:
                from IPython.display import clear_output  # interactive only; deferred for start-up time
                with w:
                    clear_output(wait=True)
                    show(fig, interactive=True)

    update = __call__

    def finish(self, records: list[dict] | None = None) -> dict[str, go.Figure]:
        """The final figures, from `records` when given (e.g. the full history of a resumed run)."""
        if records is not None:
            self.records = list(records)
        tables = self.tables()
        figs = {name: fn(tables) for name, fn in self.views.items()}
        for name, fig in figs.items():
            path = Path(self.out_dir) / f"{name}.html" if self.out_dir is not None else None
            if self.headless:
                show(fig, path, interactive=False)
            elif path is not None:
                save_html(fig, path)
        return figs


def live_plot(views: dict, *, out_dir=None, interactive: bool | None = None, class_names=None) -> LivePlot:
    return LivePlot(views, out_dir=out_dir, interactive=interactive, class_names=class_names)


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
    hold the class). Below zero, training ascends that class's adversarial loss."""
    cw = tables.get("class_weight")
    if cw is None or cw.empty:
        return _empty("HARL per-class weight w_c: recorded once HARL trains")
    fig = px.line(cw, x="epoch", y="value", color="class_name", markers=True, template=TEMPLATE,
                  labels={"value": "w_c = dloss / dL_c", "class_name": "class"},
                  title="HARL per-class weight w_c (below 0: gradient ascent on that class)")
    return fig.add_hline(y=0, line_dash="dot", line_color="gray")


def per_class_figure(tables: dict) -> go.Figure:
    return per_class_lines(tables["per_class"], "Per-class accuracy: clean and robust, train and test")


# ------------------------------------------------------------------------------ figures: evaluation
def with_groups(table: pd.DataFrame, train_counts) -> pd.DataFrame:
    """Adds `group` (head / medium / tail by training count, metrics.class_groups) to a per-class table."""
    group_of = {int(c): g for g, idx in class_groups(train_counts).items() for c in idx}
    return table.assign(group=table["class"].map(group_of))


def per_class_bars(table: pd.DataFrame, color: str = "attack", facet_col: str | None = None,
                   title: str = "Per-class recall") -> go.Figure:
    """Grouped bars of recall per class; `color` picks what is compared (attack: clean vs robust;
    label or arm: method vs method)."""
    if table.empty:
        return _empty(f"{title} (nothing to show)")
    df = table.assign(**{color: table[color].astype(str)})
    fig = px.bar(df, x="class_name", y="recall", color=color, facet_col=facet_col, barmode="group",
                 hover_data=[c for c in ("n", "correct", "eps") if c in df], template=TEMPLATE, range_y=[0, 1.02],
                 category_orders={"class_name": list(dict.fromkeys(df.sort_values("class")["class_name"]))})
    fig.update_xaxes(title=None, tickangle=-45)
    return fig.update_layout(title=title, yaxis_title="recall")


def recall_vs_count(table: pd.DataFrame, color: str = "arm", title: str = "Robust recall vs training count") -> go.Figure:
    """One point per class (and `color`): recall against the class's training count on a log axis, so a
    weak class that is not rare (Shirt in Fashion-MNIST-LT, cat in CIFAR-10-LT) stands out from the tail."""
    if table.empty or "train_count" not in table:
        return _empty(f"{title} (nothing to show)")
    df = table.assign(**{color: table[color].astype(str)})
    fig = px.scatter(df, x="train_count", y="recall", color=color, log_x=True, text="class_name",
                     hover_data=[c for c in ("n", "recall_std") if c in df], template=TEMPLATE, range_y=[0, 1.02])
    fig.update_traces(textposition="top center", mode="markers+text")
    return fig.update_layout(title=title, xaxis_title="training images of the class (log)", yaxis_title="recall")


def group_bars(groups: pd.DataFrame, color: str = "attack", facet_col: str | None = None,
               title: str = "Head / medium / tail mean recall") -> go.Figure:
    """Bars of mean recall per group (columns: group, recall, `color`), e.g. from evaluate's summary."""
    if groups.empty:
        return _empty(f"{title} (nothing to show)")
    df = groups.assign(**{color: groups[color].astype(str)})
    fig = px.bar(df, x="group", y="recall", color=color, facet_col=facet_col, barmode="group", text_auto=".2f",
                 category_orders={"group": GROUP_ORDER}, template=TEMPLATE, range_y=[0, 1.05])
    return fig.update_layout(title=title, yaxis_title="mean recall")


def summary_groups(summary: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """evaluate's summary (one row per attack x protocol, columns head / medium / tail / balanced)
    -> tidy group means: `by` columns, group, recall."""
    df = summary.rename(columns={"balanced": "all"})
    return df.melt(id_vars=by, value_vars=GROUP_ORDER, var_name="group", value_name="recall")


def eps_curves(curves: pd.DataFrame, facet_col: str | None = None,
               title: str = "Robustness vs eps per class") -> go.Figure:
    """Recall against the attack radius, one line per class (evaluate's curves table)."""
    if curves.empty:
        return _empty(f"{title} (no eps sweep)")
    df = curves.sort_values(["class", "eps"])
    fig = px.line(df, x="eps", y="recall", color="class_name", facet_col=facet_col, markers=True,
                  template=TEMPLATE, range_y=[-0.02, 1.02], hover_data=["n", "correct"])
    return fig.update_layout(title=title, xaxis_title="eps (L-inf, pixel units)", yaxis_title="recall")


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
    """TAET's Figure 2: one point per method. Columns: `label`, balanced_accuracy, balanced_robustness,
    optionally balanced_accuracy_std / balanced_robustness_std for error bars."""
    if points.empty:
        return _empty(f"{title} (nothing to show)")
    std = {f"error_{a}": f"balanced_{m}_std" for a, m in (("x", "accuracy"), ("y", "robustness"))
           if f"balanced_{m}_std" in points and points[f"balanced_{m}_std"].notna().any()}
    fig = px.scatter(points, x="balanced_accuracy", y="balanced_robustness", color=label, text=label,
                     facet_col=facet_col, template=TEMPLATE, **std)
    fig.update_traces(textposition="top center", marker_size=12)
    return fig.update_layout(title=title, xaxis_title="balanced accuracy", yaxis_title="balanced robustness",
                             showlegend=False)


def sweep_lines(aggregate: pd.DataFrame, metrics: list[str] | None = None,
                title: str = "Sweep: mean and std over seeds") -> go.Figure:
    """Metric against imbalance ratio per arm (method[+robustlt]), a panel per metric, std as error bars.
    Columns: imbalance_ratio, arm, metric, mean, std (one protocol: filter first)."""
    df = aggregate if metrics is None else aggregate[aggregate["metric"].isin(metrics)]
    if df.empty:
        return _empty(f"{title} (nothing to show)")
    order = [m for m in (metrics or dict.fromkeys(df["metric"])) if m in set(df["metric"])]
    fig = px.line(df.sort_values("imbalance_ratio"), x="imbalance_ratio", y="mean",
                  error_y="std" if df["std"].notna().any() else None, color="arm", facet_col="metric",
                  facet_col_wrap=3, markers=True, log_x=True, template=TEMPLATE, category_orders={"metric": order},
                  facet_col_spacing=0.07, facet_row_spacing=0.15)
    fig.update_yaxes(matches=None, showticklabels=True, title=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig.update_layout(title=title, height=130 + 270 * int(np.ceil(len(order) / 3)))
