# %% [markdown]
# # 05 · Per-class comparison of saved runs
# Grouped per-class bars (clean vs robust; method vs method), head / medium / tail summaries,
# robustness-vs-eps curves per class, the confusion matrix of adversarial predictions (where the
# tail classes are sent) and balanced accuracy vs balanced robustness, one point per method
# (TAET's Figure 2). Interactive: dropdowns pick run, attack and protocol. Headless: every view is
# also written as HTML to `out_dir`.

# %% tags=["parameters"]
from typing import Optional  # for the annotations below

runs: list[str] = []  # run folders (empty: every evaluated run under runs_root)
runs_root: str = 'runs'
attack: str = 'pgd20'  # the robust attack to show
protocol: str = 'balanced'  # balanced | long_tailed
run: str = ''  # label of the run for the single-run views (empty: the first)
out_dir: str = ''  # where views go as HTML (empty: <runs_root>/report)
interactive: Optional[bool] = None  # None: widgets in JupyterLab, static when headless

# %%
from taetlib import notebook as nb

opts = nb.check_params(runs=(runs, list[str]), runs_root=(runs_root, str), attack=(attack, str),
                       protocol=(protocol, str), run=(run, str), out_dir=(out_dir, str),
                       interactive=(interactive, Optional[bool]))
tables = nb.load_runs([nb.resolve(r) for r in runs] or nb.find_runs(nb.resolve(runs_root)))
out = nb.resolve(out_dir or f"{runs_root}/report")
tables["runs"]

# %% [markdown]
# ## Views

# %%
if nb.is_headless(interactive):
    label = run or tables["runs"]["label"].iloc[0]
    for fig in nb.views(tables, label, attack, protocol).values():
        nb.show(fig, interactive=False)
    written = nb.write_views(tables, out, attack)
    print(f"{len(written)} views written under {out}")
else:
    nb.explorer(tables, attack, protocol)

# %% [markdown]
# ## Summary table of every run

# %%
tables["summary"].pivot_table(index=["imbalance_ratio", "arm", "seed"], columns=["protocol", "attack"],
                              values="balanced", sort=False)
