"""Showing figures: whether this kernel is headless (papermill, CI, plain Python) or a user's, `show`
for one figure, and `live_plot` for the figures that grow while a run trains. The figures themselves
are built in plots.py."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from .figure_files import save_html
from .history import history_tables

__all__ = ["HEADLESS_ENV", "LivePlot", "is_headless", "live_plot", "show"]
HEADLESS_ENV = "TAET_HEADLESS"  # the sweep sets it: papermill gives the kernel no sign of its own


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
