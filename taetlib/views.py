"""Notebook 05's views of saved runs: one run's (clean vs robust bars, robustness vs eps, the adversarial
confusion matrix) beside the cross-run views of report.py, browsed with dropdowns or written as HTML."""
from __future__ import annotations

import re
from pathlib import Path

import plotly.graph_objects as go

from . import figure_show, plots
from .figure_files import save_html
from .report import CROSS_VIEWS, cross_view, predictions

__all__ = ["RUN_VIEWS", "explorer", "run_view", "views", "write_views"]


RUN_VIEWS = ("clean_vs_robust", "eps_curves", "confusion")          # one run at a time


def run_view(tables: dict, name: str, label: str, attack: str, protocol: str) -> go.Figure:
    """One run's view: clean vs robust bars, robustness vs eps curves, or the adversarial confusion matrix."""
    pc, cur = tables["per_class"], tables["curves"]
    sel = (pc["label"] == label) & (pc["protocol"] == protocol)
    if name == "clean_vs_robust":
        t = pc[sel & pc["attack"].isin(["clean", attack])]
        return plots.per_class_bars(t, color="attack",
                                    title=f"{label}: clean vs {attack} recall per class ({protocol})")
    if name == "eps_curves":
        c = cur[(cur["label"] == label) & (cur["protocol"] == protocol)] if len(cur) else cur
        return plots.eps_curves(c, title=f"{label}: robustness vs eps per class ({protocol})")
    if name == "confusion":
        run = tables["runs"].set_index("label").loc[label, "run"]
        names = pc[sel].drop_duplicates("class").sort_values("class")["class_name"].tolist()
        y, pred = predictions(run, protocol, attack)
        return plots.confusion_heatmap(plots.confusion_table(y, pred, names),
                                       title=f"{label}: where {attack} sends each class ({protocol})")
    raise ValueError(f"view={name!r}: choose one of {RUN_VIEWS}")


def views(tables: dict, label: str, attack: str, protocol: str) -> dict[str, go.Figure]:
    out = {n: run_view(tables, n, label, attack, protocol) for n in RUN_VIEWS}
    out.update({n: cross_view(tables, n, attack, protocol) for n in CROSS_VIEWS})
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", s).strip("_")


def write_views(tables: dict, out_dir: str | Path, attack: str) -> list[Path]:
    """Every view as HTML: cross-run views per protocol, run views per run and protocol."""
    out_dir, paths = Path(out_dir), []
    protocols = list(dict.fromkeys(tables["per_class"]["protocol"]))
    for protocol in protocols:
        for n in CROSS_VIEWS:
            fig = cross_view(tables, n, attack, protocol)
            paths.append(save_html(fig, out_dir / f"{n}_{protocol}_{attack}.html"))
        for label in tables["runs"]["label"]:
            for n in RUN_VIEWS:
                paths.append(save_html(run_view(tables, n, label, attack, protocol),
                                             out_dir / "runs" / _slug(label) / f"{n}_{protocol}_{attack}.html"))
    return paths


def explorer(tables: dict, attack: str, protocol: str):
    """Dropdowns (run, attack, protocol) over the six views; returns the ipywidgets box it displays.
    Redrawn by observers into an Output widget (ipywidgets' `interact` can stall notebook runners)."""
    import ipywidgets as w  # interactive only; deferred for start-up time
    from IPython.display import clear_output, display  # interactive only; deferred for start-up time
    attacks = [a for a in dict.fromkeys(tables["per_class"]["attack"]) if a != "clean"]
    pick = {"label": w.Dropdown(options=list(tables["runs"]["label"]), description="run"),
            "attack": w.Dropdown(options=attacks, value=attack if attack in attacks else attacks[0],
                                 description="attack"),
            "protocol": w.Dropdown(options=list(dict.fromkeys(tables["per_class"]["protocol"])),
                                   value=protocol, description="protocol")}
    out = w.Output()

    def redraw(*_):
        with out:
            clear_output(wait=True)
            for fig in views(tables, **{k: d.value for k, d in pick.items()}).values():
                figure_show.show(fig, interactive=True)

    for d in pick.values():
        d.observe(redraw, "value")
    box = w.VBox([w.HBox(list(pick.values())), out])
    display(box)
    redraw()
    return box
