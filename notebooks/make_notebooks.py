"""Writes the five workbench notebooks (outputs stripped) from the cell sources below.

    .venv/bin/python notebooks/make_notebooks.py

Edit the notebooks here, not in JupyterLab, so they stay reviewable as code. Each notebook starts
with one cell tagged `parameters` (papermill) whose defaults are the CPU demo's settings
(taetlib.presets 'fmnist_lt_demo' over RunConfig's defaults); the next cell validates them
through taetlib, so a wrong type or unknown name fails at once with the parameter named.
Annotations are `Optional[...]`, not `X | None`: papermill's parameter inspection reads no `|`.
"""
from __future__ import annotations

import types
import typing
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from taetlib.config import RunConfig
from taetlib.methods import OBJECTIVES
from taetlib.presets import get as get_preset

HERE = Path(__file__).resolve().parent
DEFAULTS = {**RunConfig().to_dict(), **get_preset("fmnist_lt_demo").config,
            "eval_every": 2}  # the live per-class robust curves need some test points

# The RunConfig fields notebooks 02 and 03 show (the same list in both: stage 2 checks that stage 1
# ran with the same settings); any other field goes in `extra`.
TRAIN_FIELDS = {
    "dataset": "fashion_mnist | cifar10 | cifar100 | dermamnist | synthetic",
    "imbalance_ratio": "n_max / n_min of the training set",
    "n_max": "head-class size (None: the dataset's own)",
    "test_per_class": "cap of the balanced test set per class (None: all)",
    "data_root": "dataset files and data/splits manifests",
    "model": "small_cnn | resnet18 | preact_resnet18 | wrn_28_10 | wrn_34_10",
    "method": " | ".join(OBJECTIVES),
    "robustlt": "wrap the objective in RobustLT (class-wise eps, ramp)",
    "stabilization_epochs": "TAET stage 1 (clean CE) epochs",
    "epochs": "adversarial epochs (budget_rule equal_adversarial: TAET's stage 1 comes before them)",
    "eps": "training L-inf radius in [0,1] pixels (None: the dataset's)",
    "step_size": "PGD step (None: eps / 4)",
    "attack_steps": "PGD steps of the training attack",
    "batch_size": "",
    "lr": "SGD learning rate",
    "eval_every": "test clean and PGD per class every N epochs (0: never)",
    "eval_per_class": "test images per class for that in-training check",
    "device": "auto | cpu | cuda | cuda:N",
    "seed": "",
}
SPLIT_FIELDS = ("dataset", "n_max", "test_per_class", "split_seed", "data_root")


def _type(name: str) -> str:
    hint = typing.get_type_hints(RunConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return f"Optional[{_type_name(args[0])}]"
    return _type_name(hint)


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)


def param_line(name: str, type_: str, value, help_: str = "") -> str:
    assert "=" not in help_, "papermill's inspection splits parameters on '='"
    return f"{name}: {type_} = {value!r}" + (f"  # {help_}" if help_ else "")


def parameters_cell(lines: list[str]) -> nbformat.NotebookNode:
    src = "\n".join(["from typing import Optional  # for the annotations below", "", *lines])
    return new_code_cell(src, metadata={"tags": ["parameters"]})


def config_lines(fields) -> list[str]:
    items = fields.items() if isinstance(fields, dict) else ((f, "") for f in fields)
    return [param_line(f, _type(f), DEFAULTS[f], h) for f, h in items]


def config_dict(name: str, fields) -> str:
    """`name = dict(dataset=dataset, ...)`: the notebook's RunConfig parameters, passed on by name."""
    lines, line = [], f"{name} = dict("
    indent = " " * len(line)
    for f in fields:  # wrapped at ~100 columns
        item = f"{f}={f}, "
        if len(line) + len(item) > 100:
            lines.append(line.rstrip())
            line = indent
        line += item
    return "\n".join([*lines, line.rstrip(", ") + ")"])


COMMON = [
    # None: widgets in JupyterLab, static figures headless (TAET_HEADLESS, set by the sweep, or papermill's
    # CLI). Calling papermill from Python: pass False, as widgets can stall nbclient.
    param_line("interactive", "Optional[bool]", None, "None: widgets in JupyterLab, static when headless"),
]


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


# ---------------------------------------------------------------------------------------- 01
NB01 = [
    md("""
# 01 · Dataset creation
Builds the long-tailed training split for each imbalance ratio (IR) and both test protocols
(balanced, and long-tailed with the same profile), saving one manifest per split under
`data_root/splits/`. Shows the per-class counts side by side and sample images per class.
"""),
    parameters_cell([
        *config_lines(SPLIT_FIELDS[:1]),
        param_line("irs", "list[float]", [10.0, 20.0, 50.0, 100.0], "imbalance ratios to build"),
        *config_lines(SPLIT_FIELDS[1:]),
        param_line("samples_per_class", "int", 8, "images per class in the sample grid"),
        param_line("out_dir", "str", "", "where figures go as HTML (empty: runs/interactive/datasets)"),
        *COMMON,
    ]),
    code(f"""
from taetlib import data, plots, report, sweep

opts = sweep.check_params(irs=(irs, list[float]), samples_per_class=(samples_per_class, int),
                          out_dir=(out_dir, str), interactive=(interactive, Optional[bool]))
{config_dict("split", SPLIT_FIELDS)}
configs = [sweep.notebook_config({{**split, "imbalance_ratio": ir}}) for ir in opts["irs"]]
figures = data.resolve(out_dir or "runs/interactive/datasets")
"""),
    md("## Build (or reuse) the splits"),
    code("""
splits = {cfg.imbalance_ratio: data.load_lt(cfg) for cfg in configs}
for ir, lt in splits.items():
    print(f"IR {ir:g}: {len(lt.train)} training images, test {[len(s) for s in lt.test.values()]} "
          f"-> {lt.manifest['path']}")
"""),
    md("## Per-class counts: training set and both test protocols"),
    code("""
counts = report.counts_table(splits)
counts.pivot_table(index=["class", "class_name"], columns=["split", "imbalance_ratio"], values="count", sort=False)
"""),
    code("""
plots.show(plots.counts_bars(counts), figures / "class_counts.html", interactive=interactive);
"""),
    md("## Sample training images per class"),
    code("""
first = next(iter(splits.values()))
plots.show(plots.sample_grid(first.train.x, first.train.y, first.classes, samples_per_class),
           figures / "samples.html", interactive=interactive);
"""),
]

# ---------------------------------------------------------------------------------------- 02 / 03
TRAIN_PARAMS = [
    *config_lines(TRAIN_FIELDS),
    param_line("extra", "dict", {}, "any other RunConfig field, e.g. {'harl_absent_classes': 'exclude'}"),
    param_line("run_dir", "str", "", "empty: runs/interactive/<dataset>-ir<IR>/<method>/seed<S>"),
    *COMMON,
]
VALIDATE_TRAIN = f"""
from taetlib import data, plots, sweep, train

{config_dict("params", TRAIN_FIELDS)}
cfg = sweep.notebook_config(params, extra)
opts = sweep.check_params(run_dir=(run_dir, str), interactive=(interactive, Optional[bool]))
run = sweep.notebook_run_dir(run_dir, cfg)
print("run folder:", run)
cfg
"""

NB02 = [
    md("""
# 02 · TAET stage 1: initial stabilisation
Clean cross-entropy for `stabilization_epochs` epochs (TAET's released code: 40 of 100), with a
live plot that updates each epoch. The stage-1 checkpoint goes to `<run>/stage1/`; notebook 03
continues from it. Give notebooks 02 and 03 the same parameters.
"""),
    parameters_cell(TRAIN_PARAMS),
    code(VALIDATE_TRAIN),
    code("lt = data.load_lt(cfg)\nlt.train_counts"),
    md("## Train stage 1"),
    code("""
live = plots.live_plot({"stage1_loss": plots.loss_figure, "stage1_accuracy": plots.accuracy_figure,
                        "stage1_per_class": plots.per_class_figure},
                       out_dir=run / "figures", interactive=interactive, class_names=lt.classes)
result = train.fit(cfg, lt, run / "stage1", stage="stabilization", callback=live)
live.finish(result.history);
"""),
    code("""
print("stage-1 checkpoint:", run / "stage1" / "last.pt")
plots.history_tables(result.history)["scalars"].pivot_table(index="epoch", columns="metric", values="value")
"""),
]

NB03 = [
    md("""
# 03 · TAET stage 2: HARL (or any baseline)
TAET: loads the stage-1 checkpoint from notebook 02 and trains HARL on adversarial inputs
(loss = alpha BCL + beta HDL + gamma RCEL), optionally inside RobustLT (`robustlt=True`).
Any other method (""" + ", ".join(f"`{m}`" for m in OBJECTIVES if m != "taet") + """)
trains here from scratch; its own settings (`awp_gamma`, `adt_steps`, `lasat_interval`, ...) go
in `extra`. Live per-class clean and robust curves and the loss components per epoch.
"""),
    parameters_cell(TRAIN_PARAMS),
    code(VALIDATE_TRAIN),
    code("lt = data.load_lt(cfg)\nlt.train_counts"),
    md("## Train"),
    code("""
two_stage = cfg.method == "taet" and cfg.stabilization_epochs > 0
init = sweep.stage1_checkpoint(run, cfg) if two_stage else None
views = {"loss": plots.loss_figure, "accuracy": plots.accuracy_figure, "per_class": plots.per_class_figure}
if cfg.method == "taet":   # HARL's w_c: below zero, that class's adversarial loss is pushed up
    views["class_weight"] = plots.class_weight_figure
live = plots.live_plot(views, out_dir=run / "figures", interactive=interactive, class_names=lt.classes)
result = train.fit(cfg, lt, run, stage="adversarial" if two_stage else "all", init_checkpoint=init,
                   callback=live)
live.finish(result.history);
"""),
    md("## Last epoch per class"),
    code("""
per_class = plots.history_tables(result.history[-1:], lt.classes)["per_class"]
per_class.pivot_table(index=["class", "class_name"], columns=["split", "kind"], values="value")
"""),
]

# ---------------------------------------------------------------------------------------- 04
NB04 = [
    md("""
# 04 · Evaluation
Runs the attack suite on a trained run and saves per-class and summary tables, the eps sweep,
sanity flags and per-sample predictions to `<run>/eval/`. Both test protocols are shown side by
side: numbers on the balanced and the long-tailed test set are not comparable.
"""),
    parameters_cell([
        param_line("run_dir", "str", "runs/interactive/fashion_mnist-ir10/taet/seed0", "a trained run"),
        param_line("attacks", "list[str]", ["clean", "fgsm", "pgd20", "cw20"],
                   "clean, fgsm, pgd20, pgd100, cw20, autoattack"),
        param_line("protocols", "list[str]", ["balanced", "long_tailed"]),
        param_line("eps", "Optional[float]", None, "L-inf radius (None: the dataset's default)"),
        param_line("eps_sweep", "Optional[list[float]]", None, "radii of the robustness curves (None: 0, eps/2, eps)"),
        param_line("per_class", "Optional[int]", None, "at most this many test images per class (None: all)"),
        param_line("curve_per_class", "Optional[int]", None, "the same cap for the eps curves only"),
        param_line("attack_params", "dict", {}, "e.g. {'autoattack': {'version': 'rand'}}"),
        param_line("eval_seed", "int", 0),
        *COMMON,
    ]),
    code("""
from taetlib import data, evaluate, plots, sweep

opts = sweep.check_params(run_dir=(run_dir, str), attacks=(attacks, list[str]), protocols=(protocols, list[str]),
                          eps=(eps, Optional[float]), eps_sweep=(eps_sweep, Optional[list[float]]),
                          per_class=(per_class, Optional[int]), curve_per_class=(curve_per_class, Optional[int]),
                          attack_params=(attack_params, dict), eval_seed=(eval_seed, int),
                          interactive=(interactive, Optional[bool]))
run = data.resolve(run_dir)
"""),
    code("""
result = evaluate.evaluate_run(run, attacks, protocols, eps=eps, eps_sweep=eps_sweep, per_class=per_class,
                               curve_per_class=curve_per_class, seed=eval_seed, attack_params=attack_params or None)
result
"""),
    md("## Summary: both protocols side by side"),
    code("""
result.summary.pivot_table(index="attack", columns="protocol", values=["overall", "balanced", "head", "tail"],
                           sort=False)
"""),
    md("## Sanity flags (raised first)"),
    code('result.flags.sort_values("raised", ascending=False)'),
    md("## Per-class recall"),
    code("""
result.table.pivot_table(index=["class", "class_name"], columns=["protocol", "attack"], values="recall", sort=False)
"""),
    code("""
plots.show(plots.per_class_bars(result.table, color="attack", facet_col="protocol"),
           run / "figures" / "eval_per_class.html", interactive=interactive);
plots.show(plots.eps_curves(result.curves, facet_col="protocol"), run / "figures" / "eval_eps_curves.html",
           interactive=interactive);
"""),
]

# ---------------------------------------------------------------------------------------- 05
NB05 = [
    md("""
# 05 · Per-class comparison of saved runs
Grouped per-class bars (clean vs robust; method vs method), head / medium / tail summaries,
robustness-vs-eps curves per class, the confusion matrix of adversarial predictions (where the
tail classes are sent) and balanced accuracy vs balanced robustness, one point per method
(TAET's Figure 2). Interactive: dropdowns pick run, attack and protocol. Headless: every view is
also written as HTML to `out_dir`.
"""),
    parameters_cell([
        param_line("runs", "list[str]", [], "run folders (empty: every evaluated run under runs_root)"),
        param_line("runs_root", "str", "runs"),
        param_line("attack", "str", "pgd20", "the robust attack to show"),
        param_line("protocol", "str", "balanced", "balanced | long_tailed"),
        param_line("run", "str", "", "label of the run for the single-run views (empty: the first)"),
        param_line("out_dir", "str", "", "where views go as HTML (empty: <runs_root>/report)"),
        *COMMON,
    ]),
    code("""
from taetlib import data, plots, report, sweep

opts = sweep.check_params(runs=(runs, list[str]), runs_root=(runs_root, str), attack=(attack, str),
                          protocol=(protocol, str), run=(run, str), out_dir=(out_dir, str),
                          interactive=(interactive, Optional[bool]))
tables = report.load_runs([data.resolve(r) for r in runs] or report.find_runs(data.resolve(runs_root)))
out = data.resolve(out_dir or f"{runs_root}/report")
tables["runs"]
"""),
    md("## Views"),
    code("""
if plots.is_headless(interactive):
    label = run or tables["runs"]["label"].iloc[0]
    for fig in report.views(tables, label, attack, protocol).values():
        plots.show(fig, interactive=False)
    written = report.write_views(tables, out, attack)
    print(f"{len(written)} views written under {out}")
else:
    report.explorer(tables, attack, protocol)
"""),
    md("## Summary table of every run"),
    code("""
tables["summary"].pivot_table(index=["imbalance_ratio", "arm", "seed"], columns=["protocol", "attack"],
                              values="balanced", sort=False)
"""),
]

NOTEBOOKS = {"01_dataset_creation": NB01, "02_stabilization_stage": NB02, "03_harl_stage": NB03,
             "04_evaluation": NB04, "05_per_class_plots": NB05}


def build(out_dir: Path = HERE) -> list[Path]:
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells)
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"c{i:02d}"  # stable ids: regenerating gives the same file
        nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                      "name": "python3"}, "language_info": {"name": "python"}}
        nbformat.validate(nb)
        path = Path(out_dir) / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print("wrote", p.relative_to(HERE.parent))
