# %% [markdown]
# # 04 · Evaluation
# Runs the attack suite on a trained run and saves per-class and summary tables, the eps sweep,
# sanity flags and per-sample predictions to `<run>/eval/`. Both test protocols are shown side by
# side: numbers on the balanced and the long-tailed test set are not comparable.

# %% tags=["parameters"]
from typing import Optional  # for the annotations below

run_dir: str = 'runs/interactive/fashion_mnist-ir10/taet/seed0'  # a trained run
attacks: list[str] = ['clean', 'fgsm', 'pgd20', 'cw20']  # clean, fgsm, pgd20, pgd100, cw20, autoattack, apgd_ce, apgd_t
protocols: list[str] = ['balanced', 'long_tailed']
eps: Optional[float] = None  # L-inf radius (None: the dataset's default)
eps_sweep: Optional[list[float]] = None  # radii of the robustness curves (None: 0, eps/2, eps)
per_class: Optional[int] = None  # at most this many test images per class (None: all)
curve_per_class: Optional[int] = None  # the same cap for the eps curves only
attack_params: dict = {}  # e.g. {'autoattack': {'version': 'rand'}}
worst_case: list[str] = []  # two or more of attacks read per image as the row worst_case
eval_seed: int = 0
interactive: Optional[bool] = None  # None: widgets in JupyterLab, static when headless

# %%
from taetlib import notebook as nb

opts = nb.check_params(run_dir=(run_dir, str), attacks=(attacks, list[str]), protocols=(protocols, list[str]),
                       eps=(eps, Optional[float]), eps_sweep=(eps_sweep, Optional[list[float]]),
                       per_class=(per_class, Optional[int]), curve_per_class=(curve_per_class, Optional[int]),
                       attack_params=(attack_params, dict), worst_case=(worst_case, list[str]),
                       eval_seed=(eval_seed, int), interactive=(interactive, Optional[bool]))
run = nb.resolve(run_dir)

# %%
result = nb.evaluate_run(run, attacks, protocols, eps=eps, eps_sweep=eps_sweep, per_class=per_class,
                         curve_per_class=curve_per_class, seed=eval_seed, attack_params=attack_params or None,
                         worst_case=worst_case)
result

# %% [markdown]
# ## Summary: both protocols side by side

# %%
result.summary.pivot_table(index="attack", columns="protocol", values=["overall", "balanced", "head", "tail"],
                           sort=False)

# %% [markdown]
# ## Sanity flags (raised first)

# %%
result.flags.sort_values("raised", ascending=False)

# %% [markdown]
# ## Per-class recall

# %%
result.table.pivot_table(index=["class", "class_name"], columns=["protocol", "attack"], values="recall", sort=False)

# %%
nb.show(nb.per_class_bars(result.table, color="attack", facet_col="protocol"),
        run / "figures" / "eval_per_class.html", interactive=interactive);
nb.show(nb.eps_curves(result.curves, facet_col="protocol"), run / "figures" / "eval_eps_curves.html",
        interactive=interactive);
