"""Datasets, the long-tail profile, split manifests: `load_lt(cfg)`.

Each registered dataset reads its official on-disk format into uint8 arrays (the readers and where they
look: dataset_files.py). `load_lt(cfg)` turns
one into a long-tailed training set plus two test protocols (balanced, long-tailed), recorded in a
manifest under data/splits/ with a sha256 of the source files. Split and the on-device batching
(Batches) live in batches.py.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .batches import Split, select_per_class
from .config import RunConfig
from .dataset_files import (
    DERMA_HOW,
    FMNIST_HOW,
    Raw,
    cifar_how,
    read_cifar10,
    read_cifar100,
    read_dermamnist,
    read_fashion_mnist,
    read_synthetic,
)
from .errors import Registry, bad, check_choice
from .paths import resolve

__all__ = ["CLASS_ORDERS", "DATASETS", "DatasetSpec", "LTData", "ManifestError", "PROTOCOLS", "build_manifest",
           "by_rank", "check_manifest", "class_ranking", "load_lt", "longtail_counts", "manifest_path", "register",
           "save_manifest", "source_hash", "split_key"]

PROTOCOLS = ("balanced", "long_tailed")


class ManifestError(ValueError):
    """A split manifest does not match its data or its configuration."""


# ---------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_eps: float
    natural: bool            # naturally imbalanced: the long-tail profile is not applied
    how_to_get: str
    read: Callable[[Path], Raw]


DATASETS: dict[str, DatasetSpec] = Registry("dataset")


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


# ---------------------------------------------------------------------------------------- the datasets
# each reader (dataset_files.py) with its dataset's constants: classes, shape, normalisation, default eps
_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
register(DatasetSpec("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), 0.1, False, FMNIST_HOW, read_fashion_mnist))
register(DatasetSpec("cifar10", 10, 3, 32, _CIFAR_MEAN, _CIFAR_STD, 8 / 255, False,
                     cifar_how("cifar-10-batches-py", "CIFAR10"), read_cifar10))
register(DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 8 / 255, False,
                     cifar_how("cifar-100-python", "CIFAR100"), read_cifar100))
register(DatasetSpec("dermamnist", 7, 3, 28, (0.7632, 0.5381, 0.5615), (0.1366, 0.1543, 0.1692), 8 / 255, True,
                     DERMA_HOW, read_dermamnist))
register(DatasetSpec("synthetic", 10, 1, 28, (0.5,), (0.25,), 0.1, False, "generated; nothing to get",
                     read_synthetic))


# ---------------------------------------------------------------------------------------- long tail
# Named class orders (RunConfig.class_order): per dataset, the classes the profile makes rarest, the
# rarest last; the other classes keep label order at the head end.
CLASS_ORDERS = Registry("class_order", {
    # Fashion-MNIST's weakest classes (Shirt, Pullover, Coat, T-shirt), which label order leaves mid-frequency
    # while the easy Sneaker, Bag and Ankle boot are rarest; Shirt, the weakest, is made the rarest
    "hard_rarest": {"fashion_mnist": ("T-shirt/top", "Coat", "Pullover", "Shirt")},
})


def class_ranking(class_order: str, classes: tuple[str, ...], dataset: str, split_seed: int) -> list[int]:
    """Class indices from the head (rank 0, n_max images) to the tail, as `class_order` says."""
    C = len(classes)
    if class_order == "label":
        return list(range(C))
    head, _, seed = class_order.partition(":")
    if head == "permutation":   # a stream of its own: the images drawn for each class do not change with it
        rng = np.random.default_rng([int(seed) if seed else split_seed, 0xC1A55])
        return [int(c) for c in rng.permutation(C)]
    check_choice("class_order", class_order, CLASS_ORDERS)
    if dataset not in CLASS_ORDERS[class_order]:
        raise bad("class_order", class_order, f"is defined for {sorted(CLASS_ORDERS[class_order])}, not {dataset!r}.")
    rare = [classes.index(name) for name in CLASS_ORDERS[class_order][dataset]]
    return [c for c in range(C) if c not in rare] + rare


def by_rank(profile: list[int], ranking: list[int]) -> list[int]:
    """Per-class counts from a profile in rank order: class ranking[r] gets profile[r]."""
    counts = [0] * len(profile)
    for r, c in enumerate(ranking):
        counts[c] = profile[r]
    return counts


def longtail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """n_i = floor(n_max * IR^(-i/(C-1))) for rank i (class i in label order; class_ranking reorders)."""
    if imbalance_ratio < 1:
        raise bad("imbalance_ratio", imbalance_ratio, "must be >= 1 (n_max / n_min; 1 means balanced).")
    if num_classes == 1:
        return [int(n_max)]
    # Same expression as the released code (n_max * (1/IR)^(i/(C-1))), so counts match it exactly.
    return [int(n_max * (1.0 / imbalance_ratio) ** (i / (num_classes - 1.0))) for i in range(num_classes)]


# ---------------------------------------------------------------------------------------- tensors
@dataclass
class LTData:
    spec: DatasetSpec
    classes: tuple[str, ...]
    train: Split
    test: dict[str, Split]
    train_counts: list[int]
    manifest: dict = field(repr=False)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes


# ---------------------------------------------------------------------------------------- manifests
def source_hash(spec: DatasetSpec, raw: Raw) -> str:
    """sha256 of the decoded source arrays (train and test images and labels), so a .gz and a plain
    copy of the same files agree, while any changed pixel or label does not."""
    h = hashlib.sha256(spec.name.encode())
    for a in (raw.x_train, raw.y_train, raw.x_test, raw.y_test):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def split_key(cfg: RunConfig) -> dict:
    """The configuration fields a split depends on: equal keys mean the same split. class_order joins
    only when it is not label order, so the keys (and manifests) of label-order splits stay as they were."""
    key = {"dataset": cfg.dataset, "imbalance_ratio": cfg.imbalance_ratio, "n_max": cfg.n_max,
           "test_per_class": cfg.test_per_class, "split_seed": cfg.split_seed}
    return key if cfg.class_order == "label" else {**key, "class_order": cfg.class_order}


def manifest_path(cfg: RunConfig) -> Path:
    ir = f"{cfg.imbalance_ratio:g}"
    extra = "".join(f"-{k}{v}" for k, v in (("nmax", cfg.n_max), ("test", cfg.test_per_class)) if v is not None)
    if cfg.class_order != "label":
        extra += "-order-" + cfg.class_order.replace(":", "")
    return resolve(cfg.data_root) / "splits" / f"{cfg.dataset}-ir{ir}{extra}-seed{cfg.split_seed}.json"


def build_manifest(cfg: RunConfig, spec: DatasetSpec, raw: Raw) -> dict:
    rng = np.random.default_rng(cfg.split_seed)
    C = spec.num_classes
    avail_train = np.bincount(raw.y_train, minlength=C)
    avail_test = np.bincount(raw.y_test, minlength=C)
    if not avail_train.all():
        absent = [f"{c} ({raw.classes[c]})" for c in np.flatnonzero(avail_train == 0)]
        files = ", ".join(map(str, raw.sources)) or "generated data"
        raise bad("dataset", cfg.dataset, f"its training data ({files}) holds no image of class(es) {absent}; every "
                  "class needs at least one training sample. Fix: check the files are complete and uncorrupted, "
                  "or get them again (see data/README.md).")
    if spec.natural and cfg.class_order != "label":
        raise bad("class_order", cfg.class_order, f"{spec.name} keeps its natural imbalance, so no order of classes "
                  "is imposed; use class_order='label'.")
    if spec.natural:  # e.g. DermaMNIST: keep its own imbalance
        train_counts = avail_train.tolist() if cfg.n_max is None else np.minimum(avail_train, cfg.n_max).tolist()
        lt_test_counts = avail_test.tolist()
        bal = int(avail_test.min()) if cfg.test_per_class is None else min(cfg.test_per_class, int(avail_test.min()))
    else:
        n_max = int(avail_train.min()) if cfg.n_max is None else cfg.n_max
        if n_max > avail_train.min():
            raise bad("n_max", cfg.n_max, f"larger than the smallest class of {spec.name} "
                      f"({int(avail_train.min())} images); use at most that.")
        ranking = class_ranking(cfg.class_order, raw.classes, spec.name, cfg.split_seed)
        train_counts = by_rank(longtail_counts(n_max, C, cfg.imbalance_ratio), ranking)
        bal = int(avail_test.min()) if cfg.test_per_class is None else min(cfg.test_per_class, int(avail_test.min()))
        lt_test_counts = by_rank(longtail_counts(bal, C, cfg.imbalance_ratio), ranking)
    empty = [c for c, n in enumerate(train_counts) if n == 0]
    if empty:
        raise bad("imbalance_ratio", cfg.imbalance_ratio,
                  f"leaves class(es) {empty} of {spec.name} with no training sample; "
                  "lower imbalance_ratio or raise n_max.")
    train_idx = select_per_class(raw.y_train, train_counts, rng)
    bal_idx = select_per_class(raw.y_test, [bal] * C, rng)
    if spec.natural or cfg.test_per_class is None:   # uncapped: the balanced set is the whole test set
        lt_idx = select_per_class(raw.y_test, lt_test_counts, rng)
    else:   # capped: the long-tailed set is drawn inside the balanced one, so each image is attacked once
        lt_idx = np.sort(bal_idx[select_per_class(raw.y_test[bal_idx], lt_test_counts, rng)])
    return {
        **split_key(cfg),
        "source_sha256": source_hash(spec, raw),
        "source_files": [str(p) for p in raw.sources],
        "profile": "natural" if spec.natural else "exponential",
        "class_order": cfg.class_order,   # and the classes from the most to the least frequent:
        "classes_by_frequency": [raw.classes[c] for c in np.argsort(-np.asarray(train_counts), kind="stable")],
        "train_counts": [int(v) for v in train_counts],
        "test_counts": {"balanced": [bal] * C, "long_tailed": [int(v) for v in lt_test_counts]},
        "indices": {"train": train_idx.tolist(), "balanced": bal_idx.tolist(), "long_tailed": lt_idx.tolist()},
    }


def save_manifest(manifest: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # per process: DDP ranks may write the same manifest at once
    tmp.write_text(json.dumps(manifest, separators=(",", ":")))
    os.replace(tmp, path)  # atomic: a half-written manifest is never read
    return path


def check_manifest(manifest: dict, cfg: RunConfig, spec: DatasetSpec, raw: Raw, path: Path) -> None:
    key = split_key(cfg)
    diff = {k: (manifest.get(k), v) for k, v in key.items() if manifest.get(k) != v}
    if diff:
        raise ManifestError(f"split manifest {path} was built for {diff} (manifest, config); "
                            "delete it or point data_root elsewhere to rebuild.")
    digest = source_hash(spec, raw)
    if manifest.get("source_sha256") != digest:
        raise ManifestError(f"split manifest {path}: source_sha256 {manifest.get('source_sha256')!r} does not match "
                            f"the data files on disk ({digest!r}). The data changed since the split was made; "
                            "delete the manifest to rebuild it, or restore the original files.")


# ---------------------------------------------------------------------------------------- entry point
def load_lt(cfg: RunConfig, *, save: bool = True) -> LTData:
    """The long-tailed training set and both test protocols for `cfg`, reusing a saved manifest."""
    check_choice("dataset", cfg.dataset, DATASETS)
    if cfg.imbalance_ratio < 1:
        raise bad("imbalance_ratio", cfg.imbalance_ratio, "must be >= 1 (n_max / n_min; 1 means balanced).")
    spec = DATASETS[cfg.dataset]
    root = resolve(cfg.data_root)
    raw = spec.read(root)
    path = manifest_path(cfg)
    if path.exists():
        manifest = json.loads(path.read_text())
        check_manifest(manifest, cfg, spec, raw, path)
    else:
        manifest = build_manifest(cfg, spec, raw)
        if save:
            save_manifest(manifest, path)
    manifest = {**manifest, "path": str(path)}
    ind = manifest["indices"]
    train_src = Split(torch.from_numpy(raw.x_train), torch.from_numpy(raw.y_train))
    test_src = Split(torch.from_numpy(raw.x_test), torch.from_numpy(raw.y_test))
    return LTData(spec=spec, classes=raw.classes, train=train_src.take(ind["train"]),
                  test={p: test_src.take(ind[p]) for p in PROTOCOLS},
                  train_counts=manifest["train_counts"], manifest=manifest)
