# %% [markdown]
# # 02 · TAET stage 1: initial stabilisation
# Clean cross-entropy for `stabilization_epochs` epochs (TAET's released code: 40 of 100), with a
# live plot that updates each epoch. The stage-1 checkpoint goes to `<run>/stage1/`; notebook 03
# continues from it. Give notebooks 02 and 03 the same parameters.

# %% tags=["parameters"]
from typing import Optional  # for the annotations below

dataset: str = 'fashion_mnist'  # fashion_mnist | cifar10 | cifar100 | dermamnist | synthetic
imbalance_ratio: float = 10.0  # n_max / n_min of the training set
n_max: Optional[int] = 800  # head-class size (None: the dataset's own)
test_per_class: Optional[int] = 300  # cap of the balanced test set per class (None: all)
data_root: str = 'data'  # dataset files and data/splits manifests
model: str = 'small_cnn'  # small_cnn | resnet18 | preact_resnet18 | wrn_28_10 | wrn_34_10
method: str = 'taet'  # ce | pgd_at | trades | mart | at_bsl | taet | reat | robal | he | gairat | awp | adt | las_at
robustlt: bool = False  # wrap the objective in RobustLT (class-wise eps, ramp)
stabilization_epochs: int = 4  # TAET stage 1 (clean CE) epochs
epochs: int = 10  # adversarial epochs (budget_rule equal_adversarial: TAET's stage 1 comes before them)
eps: Optional[float] = 0.1  # training L-inf radius in [0,1] pixels (None: the dataset's)
step_size: Optional[float] = 0.04  # PGD step (None: eps / 4)
attack_steps: int = 3  # PGD steps of the training attack
batch_size: int = 128
lr: float = 0.1  # SGD learning rate
eval_every: int = 2  # test clean and PGD per class every N epochs (0: never)
eval_per_class: Optional[int] = 100  # test images per class for that in-training check
device: str = 'auto'  # auto | cpu | cuda | cuda:N
seed: int = 0
extra: dict = {}  # any other RunConfig field, e.g. {'harl_absent_classes': 'exclude'}
run_dir: str = ''  # empty: runs/interactive/<dataset>-ir<IR>/<method>/seed<S>
interactive: Optional[bool] = None  # None: widgets in JupyterLab, static when headless

# %%
from taetlib import notebook as nb

params = dict(dataset=dataset, imbalance_ratio=imbalance_ratio, n_max=n_max,
              test_per_class=test_per_class, data_root=data_root, model=model, method=method,
              robustlt=robustlt, stabilization_epochs=stabilization_epochs, epochs=epochs, eps=eps,
              step_size=step_size, attack_steps=attack_steps, batch_size=batch_size, lr=lr,
              eval_every=eval_every, eval_per_class=eval_per_class, device=device, seed=seed)
cfg = nb.notebook_config(params, extra)
opts = nb.check_params(run_dir=(run_dir, str), interactive=(interactive, Optional[bool]))
run = nb.notebook_run_dir(run_dir, cfg)
print("run folder:", run)
cfg

# %%
lt = nb.load_lt(cfg)
lt.train_counts

# %% [markdown]
# ## Train stage 1

# %%
live = nb.live_plot({"stage1_loss": nb.loss_figure, "stage1_accuracy": nb.accuracy_figure,
                     "stage1_per_class": nb.per_class_figure},
                    out_dir=run / "figures", interactive=interactive, class_names=lt.classes)
result = nb.fit(cfg, lt, run / "stage1", stage="stabilization", callback=live)
live.finish(result.history);

# %%
print("stage-1 checkpoint:", run / "stage1" / "last.pt")
nb.history_tables(result.history)["scalars"].pivot_table(index="epoch", columns="metric", values="value")
