"""Each dataset's files on disk: where they are looked for, how each official format is read into uint8
arrays (Raw), and, when they are missing, one error that says where we looked and how to get them.
data.py registers each reader with its dataset's constants and builds the long-tailed splits."""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .paths import resolve

__all__ = ["DERMA_HOW", "FMNIST_FILES", "FMNIST_HOW", "FMNIST_SYSTEM_DIR", "MissingDataError", "Raw", "SYNTHETIC",
           "cifar_how", "ensure_fashion_mnist", "find_idx", "read_cifar10", "read_cifar100", "read_dermamnist",
           "read_fashion_mnist", "read_synthetic"]


class MissingDataError(FileNotFoundError):
    """The dataset's files are not on disk; the message says where we looked and how to get them."""


@dataclass(frozen=True)
class Raw:
    """A dataset as read from disk: uint8 images [N, C, H, W] and int64 labels."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sources: tuple[Path, ...]  # the files read, recorded in the manifest
    classes: tuple[str, ...]


def _missing(name: str, looked: list[Path], how: str) -> MissingDataError:
    where = "\n".join(f"  - {p}" for p in looked)
    return MissingDataError(f"dataset {name!r}: data files not found. Looked for:\n{where}\nHow to get them:\n{how}")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        buf = f.read()
    ndim = buf[3]
    dims = np.frombuffer(buf, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims)).copy()


FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


FMNIST_HOW = ("  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
              "(files land in /usr/share/datasets/fashion-mnist)\n"
              "  - or put the four idx files (optionally .gz) from https://github.com/zalandoresearch/fashion-mnist "
              "in data/fashion-mnist/\n"
              "  - or, with internet: python -c "
              "\"import torchvision; torchvision.datasets.FashionMNIST('data', download=True)\"")


def find_idx(dirs: list[Path]) -> tuple[Path, list[Path]] | None:
    for d in dirs:
        found = []
        for stem in FMNIST_FILES:
            hit = next((d / (stem + ext) for ext in (".gz", "") if (d / (stem + ext)).exists()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return d, found
    return None


def read_fashion_mnist(root: Path) -> Raw:
    dirs = [root / "fashion-mnist", root / "FashionMNIST" / "raw", FMNIST_SYSTEM_DIR]
    hit = find_idx(dirs)
    if hit is None and os.environ.get("TAET_OFFLINE") != "1":
        try:  # torchvision's own download, where there is network
            import torchvision  # only to download; deferred for start-up time
            torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
        except Exception:
            pass
        hit = find_idx(dirs)
    if hit is None:
        raise _missing("fashion_mnist", [d / (s + "[.gz]") for d in dirs for s in FMNIST_FILES], FMNIST_HOW)
    _, (xtr, ytr, xte, yte) = hit
    return Raw(_read_idx(xtr)[:, None], _read_idx(ytr).astype(np.int64), _read_idx(xte)[:, None],
               _read_idx(yte).astype(np.int64), (xtr, ytr, xte, yte),
               ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"))


def ensure_fashion_mnist(root: str | Path = "data", log=print) -> Path:
    """Find Fashion-MNIST (data/, the Debian package, torchvision's download); as root with apt,
    install the Debian package when it is missing. Returns the folder holding the idx files."""
    root = resolve(root)
    dirs = [root / "fashion-mnist", root / "FashionMNIST" / "raw", FMNIST_SYSTEM_DIR]
    hit = find_idx(dirs)
    if hit is None and os.geteuid() == 0 and shutil.which("apt-get"):
        log("Fashion-MNIST not found; installing the Debian package dataset-fashion-mnist ...")
        def apt(*words):
            return subprocess.run(["apt-get", *words], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        install = ("install", "-y", "-q", "dataset-fashion-mnist")
        if apt(*install) != 0:  # a stale package index: refresh it once, then try again
            apt("update", "-q")
            apt(*install)
        hit = find_idx(dirs)
    if hit is None:
        read_fashion_mnist(root)  # tries torchvision's download, else raises MissingDataError with the ways
        hit = find_idx(dirs)
    if hit is None:
        raise MissingDataError(f"Fashion-MNIST: no idx files in {', '.join(map(str, dirs))}. Get them:\n{FMNIST_HOW}")
    return hit[0]


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def cifar_how(folder: str, tv_class: str) -> str:
    return (f"  - with internet: python -c "
            f"\"import torchvision; torchvision.datasets.{tv_class}('data', download=True)\"\n"
            f"  - or download the python version from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
            f"so that data/{folder}/ holds its files")


def _read_cifar(root: Path, name: str, folder: str, train_files, test_files, meta_file, label_key, names_key,
                tv_class: str) -> Raw:
    d = root / folder
    files = [d / f for f in (*train_files, *test_files, meta_file)]
    if not all(f.exists() for f in files):
        raise _missing(name, files, cifar_how(folder, tv_class))

    def read(fs):
        batches = [_unpickle(d / f) for f in fs]
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
        return x, np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])

    xtr, ytr = read(train_files)
    xte, yte = read(test_files)
    return Raw(xtr, ytr, xte, yte, tuple(files), tuple(_unpickle(d / meta_file)[names_key]))


def read_cifar10(root: Path) -> Raw:
    return _read_cifar(root, "cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                       ["test_batch"], "batches.meta", "labels", "label_names", "CIFAR10")


def read_cifar100(root: Path) -> Raw:
    return _read_cifar(root, "cifar100", "cifar-100-python", ["train"], ["test"], "meta", "fine_labels",
                       "fine_label_names", "CIFAR100")


DERMA_HOW = ("  - with internet: python -c "
             "\"import medmnist; medmnist.DermaMNIST(split='train', root='data', download=True)\"\n"
             "  - or download dermamnist.npz from https://zenodo.org/records/10519652 and put it in data/")


def read_dermamnist(root: Path) -> Raw:
    path = root / "dermamnist.npz"
    if not path.exists():
        raise _missing("dermamnist", [path], DERMA_HOW)
    import medmnist  # the official reader of the npz format; deferred: only DermaMNIST needs it

    def split(name):
        ds = medmnist.DermaMNIST(split=name, root=str(root), download=False)
        return np.ascontiguousarray(np.asarray(ds.imgs, dtype=np.uint8).transpose(0, 3, 1, 2)), \
            np.asarray(ds.labels, dtype=np.int64).ravel()

    xtr, ytr = split("train")
    xte, yte = split("test")
    labels = medmnist.INFO["dermamnist"]["label"]
    return Raw(xtr, ytr, xte, yte, (path,), tuple(labels[str(i)] for i in range(len(labels))))


SYNTHETIC: dict = dict(classes=10, train_per_class=600, test_per_class=200, size=28, seed=1234, amplitude=0.22,
                       noise=0.12)


def read_synthetic(root: Path) -> Raw:
    """Seeded, learnable, small: each class is a smooth left-right symmetric template plus noise."""
    p = SYNTHETIC
    g = np.random.default_rng(p["seed"])
    coarse = g.standard_normal((p["classes"], 1, 7, 7)).astype(np.float32)
    smooth = F.interpolate(torch.from_numpy(coarse), size=p["size"], mode="bilinear", align_corners=False)
    templates = ((smooth + smooth.flip(-1)) / 2).numpy()  # symmetric: flips keep the class

    def make(n_per_class):
        y = np.repeat(np.arange(p["classes"]), n_per_class)
        noise = g.standard_normal((y.size, 1, p["size"], p["size"])).astype(np.float32)
        x = 0.5 + p["amplitude"] * templates[y] + p["noise"] * noise
        return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8), y.astype(np.int64)

    xtr, ytr = make(p["train_per_class"])
    xte, yte = make(p["test_per_class"])
    return Raw(xtr, ytr, xte, yte, (), tuple(f"class_{i}" for i in range(p["classes"])))
