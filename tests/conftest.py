"""Shared fixtures: one thread for the suite, RunConfigs that train in seconds, a smoke training run, small
files in the exact on-disk formats the real loaders read, and a notebook's cells run in this process."""
import math
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from taetlib.checkpoints import load_model
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.methods import model_head
from taetlib.models import classifier
from taetlib.train import fit

# ~160 synthetic images (IR 10, 40 in the head class), 3 batches of 64, two epochs of a 2-step attack, no
# in-training evaluation, on the CPU: a run in seconds. Tests override what they exercise.
TINY = dict(dataset="synthetic", imbalance_ratio=10.0, n_max=40, epochs=2, attack_steps=2, batch_size=64, lr=0.05,
            eval_every=0, device="cpu")


def free_port() -> int:
    """A localhost TCP port nobody holds now (for gloo ranks, a Jupyter server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_fake_cifar(root: Path, per_class_train: int = 60, per_class_test: int = 12, num_classes: int = 10,
                     seed: int = 0) -> Path:
    """A CIFAR-10 (or CIFAR-100 when num_classes=100) python-pickle folder as torchvision extracts it."""
    g = np.random.default_rng(seed)

    def batch(n_per_class, key):
        y = np.repeat(np.arange(num_classes), n_per_class)
        g.shuffle(y)
        return {"data": g.integers(0, 256, (y.size, 3072), dtype=np.uint8), key: y.tolist()}

    def dump(obj, path):
        with open(path, "wb") as f:
            pickle.dump(obj, f)

    if num_classes == 10:
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True)
        for i in range(1, 6):  # each batch holds a fifth of every class
            dump(batch(per_class_train // 5, "labels"), d / f"data_batch_{i}")
        dump(batch(per_class_test, "labels"), d / "test_batch")
        dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer",
                              "dog", "frog", "horse", "ship", "truck"]}, d / "batches.meta")
    else:
        d = root / "cifar-100-python"
        d.mkdir(parents=True)
        dump(batch(per_class_train, "fine_labels"), d / "train")
        dump(batch(per_class_test, "fine_labels"), d / "test")
        dump({"fine_label_names": [f"c{i}" for i in range(num_classes)]}, d / "meta")
    return d


def write_fake_dermamnist(root: Path, seed: int = 0) -> Path:
    """dermamnist.npz with medmnist's keys: {split}_images (N,28,28,3) uint8, {split}_labels (N,1)."""
    g = np.random.default_rng(seed)
    counts = {"train": [60, 90, 200, 20, 180, 800, 25], "val": [5] * 7, "test": [15, 20, 40, 5, 40, 160, 6]}
    arrays = {}
    for split, cs in counts.items():
        y = np.repeat(np.arange(7), cs)
        arrays[f"{split}_images"] = g.integers(0, 256, (y.size, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = y[:, None].astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "dermamnist.npz", **arrays)
    return root / "dermamnist.npz"


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The suite's models are tiny: one thread runs them fastest, and a second one only spins against
    the other jobs of a busy 2-core runner (measured under load: tests/test_train.py 189 s with the
    default threads, 28 s with one). Processes the tests start (ranks, kernels, jobs) inherit
    OMP_NUM_THREADS=1 from this one; both are restored at the end."""
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(scope="session")
def tiny_config():
    """A factory: tiny_config(data_root, **overrides) -> a RunConfig that trains in seconds (TINY)."""
    def make(root, **kw) -> RunConfig:
        return RunConfig(**{**TINY, "data_root": str(root), **kw})
    return make


@pytest.fixture
def smoke_fit(tiny_config):
    """A factory: smoke_fit(tmp_path, **overrides) trains two epochs of a method on TINY; checks the losses are
    finite and that load_model rebuilds the trained head and reproduces the trained model's outputs.
    Returns (cfg, FitResult, the loaded model, 8 test images)."""
    def run(tmp_path, **kw):
        cfg = tiny_config(tmp_path / "data", **{"robustlt_b": 1.0, **kw})
        data = load_lt(cfg)
        result = fit(cfg, data, tmp_path / "run", resume=False)
        assert all(math.isfinite(r["loss"]) for r in result.history)
        loaded = load_model(tmp_path / "run")
        head = type(classifier(loaded)).__name__
        assert head == {"fc": "Linear", "cosplus": "CosPlus", "he_norm": "HENorm"}[model_head(cfg)]
        x = data.test["balanced"].take(list(range(8))).float()
        with torch.no_grad():   # load_model gives the weights fit trained (its method's evaluation view aside)
            trained = result.model.eval()
            if cfg.method != "robal" or cfg.robal_variant == "R":
                assert torch.allclose(loaded(x), trained(x), atol=1e-5)
        return cfg, result, loaded, x
    return run


@pytest.fixture
def fake_cifar10(tmp_path):
    write_fake_cifar(tmp_path, per_class_train=5000, per_class_test=1000)
    return tmp_path


@pytest.fixture
def data_root(tmp_path):
    return tmp_path


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, params: dict, until: str | None = None) -> dict:
    """The notebook's code cells, in order, in this process, after papermill's parameter injection: what a
    kernel runs, without the seconds a kernel takes to start. Stops once a cell has defined `until`
    (e.g. "cfg": the validated settings). Returns the namespace the cells ran in."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOKS / f"{name}.ipynb")), params)
    ns: dict = {}
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        exec(compile(cell.source, f"<{name} code cell {i}>", "exec"), ns)
        if until is not None and until in ns:
            break
    return ns
