# %% [markdown]
# # 01 · Dataset creation
# Builds the long-tailed training split for each imbalance ratio (IR) and both test protocols
# (balanced, and long-tailed with the same profile), saving one manifest per split under
# `data_root/splits/`. Shows the per-class counts side by side and sample images per class.

# %% tags=["parameters"]
from typing import Optional  # for the annotations below

dataset: str = 'fashion_mnist'
irs: list[float] = [10.0, 20.0, 50.0, 100.0]  # imbalance ratios to build
n_max: Optional[int] = 800
test_per_class: Optional[int] = 300
split_seed: int = 0
class_order: str = 'label'  # label | permutation | permutation:N | hard_rarest (which classes are rare)
data_root: str = 'data'
samples_per_class: int = 8  # images per class in the sample grid
out_dir: str = ''  # where figures go as HTML (empty: runs/interactive/datasets)
interactive: Optional[bool] = None  # None: widgets in JupyterLab, static when headless

# %%
from taetlib import notebook as nb

opts = nb.check_params(irs=(irs, list[float]), samples_per_class=(samples_per_class, int),
                       out_dir=(out_dir, str), interactive=(interactive, Optional[bool]))
split = dict(dataset=dataset, n_max=n_max, test_per_class=test_per_class, split_seed=split_seed,
             class_order=class_order, data_root=data_root)
configs = [nb.notebook_config({**split, "imbalance_ratio": ir}) for ir in opts["irs"]]
figures = nb.resolve(out_dir or "runs/interactive/datasets")

# %% [markdown]
# ## Build (or reuse) the splits

# %%
splits = {cfg.imbalance_ratio: nb.load_lt(cfg) for cfg in configs}
for ir, lt in splits.items():
    print(f"IR {ir:g}: {len(lt.train)} training images, test {[len(s) for s in lt.test.values()]} "
          f"-> {lt.manifest['path']}\n  class order {class_order}, most to least frequent: "
          f"{', '.join(lt.classes[c] for c in sorted(range(lt.num_classes), key=lambda c: -lt.train_counts[c]))}")

# %% [markdown]
# ## Per-class counts: training set and both test protocols

# %%
counts = nb.counts_table(splits)
counts.pivot_table(index=["class", "class_name"], columns=["split", "imbalance_ratio"], values="count", sort=False)

# %%
nb.show(nb.counts_bars(counts), figures / "class_counts.html", interactive=interactive);

# %% [markdown]
# ## Sample training images per class

# %%
first = next(iter(splits.values()))
nb.show(nb.sample_grid(first.train.x, first.train.y, first.classes, samples_per_class),
        figures / "samples.html", interactive=interactive);
