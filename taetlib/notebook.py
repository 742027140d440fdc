"""The notebooks' one import: `from taetlib import notebook as nb`, then `nb.fit(...)`, `nb.show(fig)`.

Every name here lives in the module named on its import line; this module only gathers what the five
notebooks call, so a notebook needs one import and a reader finds the notebooks' whole vocabulary in
one place. Add a name here (and to __all__) before a notebook calls it.
"""
from .data import load_lt
from .evaluate import evaluate_run
from .figure_show import is_headless, live_plot, show
from .history import history_tables
from .paths import resolve
from .plots import (
                    accuracy_figure,
                    class_weight_figure,
                    counts_bars,
                    eps_curves,
                    loss_figure,
                    per_class_bars,
                    per_class_figure,
                    sample_grid,
)
from .report import counts_table, find_runs, load_runs
from .runs import check_params, notebook_config, notebook_run_dir, stage1_checkpoint
from .train import fit
from .views import explorer, views, write_views

__all__ = [
    # parameters and folders (runs.py, paths.py)
    "check_params", "notebook_config", "notebook_run_dir", "resolve", "stage1_checkpoint",
    # data, training, evaluation
    "evaluate_run", "fit", "load_lt",
    # figures (plots.py, figure_show.py, history.py)
    "accuracy_figure", "class_weight_figure", "counts_bars", "eps_curves", "history_tables", "is_headless",
    "live_plot", "loss_figure", "per_class_bars", "per_class_figure", "sample_grid", "show",
    # the comparison (report.py)
    "counts_table", "explorer", "find_runs", "load_runs", "views", "write_views",
]
