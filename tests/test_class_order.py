"""class_order: which classes the long-tail profile makes rare, and nothing else."""
import numpy as np
import pytest

from taetlib import data, dataset_files
from taetlib.config import RunConfig
from taetlib.data import load_lt, longtail_counts
from taetlib.errors import ConfigError

HARD = ("Shirt", "Pullover", "Coat", "T-shirt/top")   # the weakest Fashion-MNIST classes, Shirt the weakest
needs_fmnist = pytest.mark.skipif(not dataset_files.find_idx([dataset_files.FMNIST_SYSTEM_DIR]),
                                  reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def per_class_indices(split, num_classes: int) -> list[set[int]]:
    y, idx = split.y.numpy(), split.index.numpy()
    return [set(idx[y == c].tolist()) for c in range(num_classes)]


def assert_only_the_order_differs(a, b, C: int) -> None:
    """Same profile (as a multiset), same balanced test images, and each class's images in one split
    nested in the other's: the order decides how many images a class gets, never which ones."""
    assert sorted(a.train_counts) == sorted(b.train_counts)
    assert sorted(a.test["long_tailed"].counts(C)) == sorted(b.test["long_tailed"].counts(C))
    assert np.array_equal(a.test["balanced"].index.numpy(), b.test["balanced"].index.numpy())
    for name in ("train", "long_tailed"):
        sa = per_class_indices(a.train if name == "train" else a.test[name], C)
        sb = per_class_indices(b.train if name == "train" else b.test[name], C)
        for ia, ib in zip(sa, sb):
            assert ia <= ib or ib <= ia
    assert set(b.test["long_tailed"].index.tolist()) <= set(b.test["balanced"].index.tolist())


@needs_fmnist
@pytest.mark.parametrize("ir", (10, 100))
def test_hard_rarest_puts_the_named_classes_at_the_rare_end_and_changes_nothing_else(tmp_path, ir):
    common = dict(dataset="fashion_mnist", imbalance_ratio=ir, n_max=1000, test_per_class=200,
                  data_root=str(tmp_path))
    label, hard = load_lt(RunConfig(**common)), load_lt(RunConfig(**common, class_order="hard_rarest"))
    names = label.classes
    rarest_first = sorted(range(10), key=lambda c: hard.train_counts[c])
    assert {names[c] for c in rarest_first[:4]} == set(HARD)
    assert names[rarest_first[0]] == "Shirt"
    assert hard.train_counts == hard.train.counts(10)
    # label order: the rare end is Sneaker, Bag, Ankle boot; the profile itself is the same
    assert label.train_counts == longtail_counts(1000, 10, ir)
    assert sorted(hard.train_counts, reverse=True) == longtail_counts(1000, 10, ir)
    # the other classes keep label order at the head end
    others = [c for c in range(10) if names[c] not in HARD]
    assert [hard.train_counts[c] for c in others] == longtail_counts(1000, 10, ir)[:6]
    assert_only_the_order_differs(label, hard, 10)
    assert hard.manifest["class_order"] == "hard_rarest" and hard.manifest["classes_by_frequency"][-1] == "Shirt"
    assert label.manifest["path"] != hard.manifest["path"]


def test_a_seeded_permutation_is_reproducible_and_changes_only_the_order(tmp_path):
    common = dict(dataset="synthetic", imbalance_ratio=10, data_root=str(tmp_path))
    label = load_lt(RunConfig(**common))
    perms = {s: load_lt(RunConfig(**common, class_order="permutation", split_seed=s)) for s in (0, 1)}
    again = load_lt(RunConfig(**common, class_order="permutation", split_seed=0), save=False)
    assert perms[0].train_counts == again.train_counts
    assert perms[0].train_counts != perms[1].train_counts != label.train_counts
    assert_only_the_order_differs(label, perms[0], 10)
    # permutation:N fixes the order whatever the split seed (a multi-seed sweep keeps one order)
    fixed = [load_lt(RunConfig(**common, class_order="permutation:5", split_seed=s)).train_counts for s in (0, 3)]
    assert fixed[0] == fixed[1]


def test_label_order_keeps_the_split_keys_and_manifests_of_before(tmp_path):
    cfg = RunConfig(dataset="synthetic", imbalance_ratio=10, data_root=str(tmp_path))
    assert "class_order" not in data.split_key(cfg) and "order" not in data.manifest_path(cfg).name
    d = load_lt(cfg)
    assert d.train_counts == longtail_counts(600, 10, 10) and d.manifest["class_order"] == "label"
    other = cfg.replace(class_order="permutation:1")
    assert data.split_key(other)["class_order"] == "permutation:1"


@pytest.mark.parametrize("order, dataset, match", [
    ("hard_rarest", "cifar10", "class_order='hard_rarest': is defined for \\['fashion_mnist'\\]"),
    ("permutation:x", "synthetic", "class_order='permutation:x'.*seed N"),
    ("hardest_rarest", "fashion_mnist", "class_order='hardest_rarest'.*Did you mean 'hard_rarest'"),
])
def test_bad_class_orders_are_refused_by_name(order, dataset, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig(dataset=dataset, class_order=order)


def test_a_natural_dataset_takes_no_order(tmp_path):
    from conftest import write_fake_dermamnist
    write_fake_dermamnist(tmp_path)
    with pytest.raises(ConfigError, match="class_order='permutation'.*natural imbalance"):
        load_lt(RunConfig(dataset="dermamnist", class_order="permutation", data_root=str(tmp_path)))


def test_the_sweep_report_says_which_classes_are_rare():
    import pandas as pd

    from taetlib.report import class_order_line
    one = pd.DataFrame({"arm": ["taet", "at_bsl"], "class_order": ["label", "label"]})
    assert "Class order: label" in class_order_line(one)
    two = pd.DataFrame({"arm": ["taet", "taet-hard_rarest"], "class_order": ["label", "hard_rarest"]})
    assert "taet-hard_rarest: hard_rarest" in class_order_line(two)
