import json
import pickle

import numpy as np
import pytest
import torch
from conftest import write_fake_cifar, write_fake_dermamnist

from taetlib import batches, data, dataset_files
from taetlib.batches import Batches
from taetlib.config import RunConfig
from taetlib.data import ManifestError, load_lt, longtail_counts
from taetlib.dataset_files import MissingDataError
from taetlib.errors import ConfigError

CIFAR10_IR10 = [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
CIFAR10_IR100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
CIFAR10_LT_TEST_IR10 = [1000, 774, 599, 464, 359, 278, 215, 166, 129, 100]


def test_profile_formula():
    assert longtail_counts(5000, 10, 10) == CIFAR10_IR10 and sum(CIFAR10_IR10) == 20431
    assert longtail_counts(5000, 10, 100) == CIFAR10_IR100 and sum(CIFAR10_IR100) == 12406
    assert longtail_counts(500, 10, 1) == [500] * 10
    with pytest.raises(ConfigError, match="imbalance_ratio=0.5"):
        longtail_counts(5000, 10, 0.5)


@pytest.mark.parametrize("ir, expected", [(10, CIFAR10_IR10), (100, CIFAR10_IR100)])
def test_cifar10_lt_on_a_fake_cifar_folder(fake_cifar10, ir, expected):
    d = load_lt(RunConfig(dataset="cifar10", imbalance_ratio=ir, data_root=str(fake_cifar10)))
    assert d.train_counts == expected
    assert d.train.counts(10) == expected
    assert d.train.x.dtype == torch.uint8 and d.train.x.shape[1:] == (3, 32, 32)
    assert d.test["balanced"].counts(10) == [1000] * 10
    assert d.classes[0] == "airplane" and d.classes[9] == "truck"
    if ir == 10:
        assert d.test["long_tailed"].counts(10) == CIFAR10_LT_TEST_IR10 and len(d.test["long_tailed"]) == 4084


def test_cifar100_reader(tmp_path):
    write_fake_cifar(tmp_path, per_class_train=50, per_class_test=10, num_classes=100)
    d = load_lt(RunConfig(dataset="cifar100", imbalance_ratio=10, data_root=str(tmp_path)))
    assert d.train_counts == longtail_counts(50, 100, 10)
    assert d.num_classes == 100 and d.test["balanced"].counts(100) == [10] * 100


def test_dermamnist_reader_keeps_its_natural_imbalance(tmp_path):
    write_fake_dermamnist(tmp_path)
    d = load_lt(RunConfig(dataset="dermamnist", data_root=str(tmp_path)))
    assert d.train_counts == [60, 90, 200, 20, 180, 800, 25]
    assert d.test["long_tailed"].counts(7) == [15, 20, 40, 5, 40, 160, 6]
    assert d.test["balanced"].counts(7) == [5] * 7  # as many per class as the rarest test class has
    assert d.train.x.shape[1:] == (3, 28, 28) and d.classes[5] == "melanocytic nevi"
    assert d.manifest["profile"] == "natural"


def test_same_split_twice_is_identical(tmp_path):
    write_fake_cifar(tmp_path, per_class_train=100, per_class_test=20)
    cfg = RunConfig(dataset="cifar10", imbalance_ratio=10, data_root=str(tmp_path))
    a = data.build_manifest(cfg, data.DATASETS["cifar10"], dataset_files.read_cifar10(tmp_path))
    b = data.build_manifest(cfg, data.DATASETS["cifar10"], dataset_files.read_cifar10(tmp_path))
    assert a == b
    c = data.build_manifest(cfg.replace(split_seed=1), data.DATASETS["cifar10"], dataset_files.read_cifar10(tmp_path))
    assert c["indices"]["train"] != a["indices"]["train"]  # the seed does choose the images
    assert c["train_counts"] == a["train_counts"]


def test_manifest_is_saved_then_reused_and_hash_checked(tmp_path):
    folder = write_fake_cifar(tmp_path, per_class_train=100, per_class_test=20)
    cfg = RunConfig(dataset="cifar10", imbalance_ratio=20, data_root=str(tmp_path))
    first = load_lt(cfg)
    path = data.manifest_path(cfg)
    saved = json.loads(path.read_text())
    assert {"indices", "train_counts", "split_seed", "source_sha256", "test_counts"} <= set(saved)
    assert saved["train_counts"] == first.train_counts
    again = load_lt(cfg)
    assert torch.equal(again.train.index, first.train.index)
    # a changed data file no longer matches the manifest's hash
    batch = pickle.loads((folder / "data_batch_1").read_bytes())
    batch["data"][0, 0] ^= 1  # one pixel of one image
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(ManifestError, match="source_sha256"):
        load_lt(cfg)


def test_manifest_built_for_other_settings_is_refused(tmp_path):
    write_fake_cifar(tmp_path, per_class_train=100, per_class_test=20)
    cfg = RunConfig(dataset="cifar10", imbalance_ratio=10, data_root=str(tmp_path))
    load_lt(cfg)
    path = data.manifest_path(cfg)
    m = json.loads(path.read_text())
    m["split_seed"] = 7
    path.write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="split_seed"):
        load_lt(cfg)


@pytest.mark.parametrize("dataset, files", [
    ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"), ("dermamnist", "dermamnist.npz"),
])
def test_missing_data_says_where_and_how(tmp_path, dataset, files):
    with pytest.raises(MissingDataError) as e:
        load_lt(RunConfig(dataset=dataset, data_root=str(tmp_path)))
    msg = str(e.value)
    assert files in msg and str(tmp_path) in msg and "How to get them" in msg and "download" in msg


def test_missing_fashion_mnist_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_files, "FMNIST_SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("TAET_OFFLINE", "1")
    with pytest.raises(MissingDataError, match="apt-get install dataset-fashion-mnist"):
        load_lt(RunConfig(dataset="fashion_mnist", data_root=str(tmp_path)))


needs_fmnist = pytest.mark.skipif(not dataset_files.find_idx([dataset_files.FMNIST_SYSTEM_DIR]),
                                  reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@needs_fmnist
def test_real_fashion_mnist_lt(tmp_path):
    d = load_lt(RunConfig(dataset="fashion_mnist", imbalance_ratio=10, data_root=str(tmp_path)))
    assert d.train_counts == longtail_counts(6000, 10, 10)
    assert d.test["balanced"].counts(10) == [1000] * 10
    assert d.test["long_tailed"].counts(10) == CIFAR10_LT_TEST_IR10
    assert d.train.x.shape[1:] == (1, 28, 28) and d.classes[9] == "Ankle boot"


def image_keys(x) -> set[bytes]:
    """Each image's bytes: equal images, equal keys."""
    return {bytes(row) for row in np.ascontiguousarray(np.asarray(x)).reshape(len(x), -1)}


@pytest.fixture(scope="module")
def fmnist_raw():
    # a folder without the files: the reader falls back to the system copy
    return dataset_files.read_fashion_mnist(dataset_files.FMNIST_SYSTEM_DIR.parent / "not-here")


@needs_fmnist
@pytest.mark.parametrize("ir", (10, 100))
def test_real_fashion_mnist_splits_are_what_they_claim(fmnist_raw, tmp_path, ir):
    """The training split holds training-file images only and the test protocols test-file images only,
    each the image and label at its recorded index, none twice; no test image is in the training split
    (Fashion-MNIST's train and test files share no image); the long-tailed test set is a subset of the
    balanced one, with the profile's counts."""
    raw = fmnist_raw
    d = load_lt(RunConfig(dataset="fashion_mnist", imbalance_ratio=ir, data_root=str(tmp_path)))
    tests = {p: d.test[p] for p in ("balanced", "long_tailed")}
    for split, (x_src, y_src) in [(d.train, (raw.x_train, raw.y_train)),
                                  *[(t, (raw.x_test, raw.y_test)) for t in tests.values()]]:
        idx = split.index.numpy()
        assert len(np.unique(idx)) == len(idx)
        assert np.array_equal(split.x.numpy(), x_src[idx]) and np.array_equal(split.y.numpy(), y_src[idx])
    train_images = image_keys(d.train.x)
    assert len(train_images) == len(d.train)
    for t in tests.values():
        assert not train_images & image_keys(t.x)
    assert not image_keys(raw.x_train) & image_keys(raw.x_test)   # the control: the source files are disjoint
    assert set(tests["long_tailed"].index.tolist()) <= set(tests["balanced"].index.tolist())
    assert d.train_counts == d.train.counts(10) == longtail_counts(6000, 10, ir)
    assert tests["balanced"].counts(10) == [1000] * 10
    assert tests["long_tailed"].counts(10) == longtail_counts(1000, 10, ir)


def test_bad_inputs_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="dataset='mnist'.*choose one of"):
        load_lt(_unchecked(dataset="mnist", data_root=str(tmp_path)))
    with pytest.raises(ConfigError, match="imbalance_ratio=0.9"):
        load_lt(_unchecked(dataset="synthetic", imbalance_ratio=0.9, data_root=str(tmp_path)))
    with pytest.raises(ConfigError, match="n_max=100000"):
        load_lt(RunConfig(dataset="synthetic", n_max=100000, data_root=str(tmp_path)))
    with pytest.raises(ConfigError, match="no training sample"):
        load_lt(RunConfig(dataset="synthetic", n_max=20, imbalance_ratio=100, data_root=str(tmp_path)))


def _unchecked(**fields):
    """A config that skipped validation, as a hand-edited one would: the loader still refuses it."""
    cfg = object.__new__(RunConfig)
    for f in RunConfig.__dataclass_fields__.values():
        setattr(cfg, f.name, f.default_factory() if callable(f.default_factory) else f.default)
    cfg.__dict__.update(fields)
    return cfg


def test_synthetic_is_seeded_and_small(tmp_path):
    a = load_lt(RunConfig(dataset="synthetic", data_root=str(tmp_path)))
    b = load_lt(RunConfig(dataset="synthetic", data_root=str(tmp_path / "other")))
    assert torch.equal(a.train.x, b.train.x) and a.train_counts == longtail_counts(600, 10, 10)


def test_batches_cover_the_split_once_and_are_reproducible(tmp_path):
    d = load_lt(RunConfig(dataset="synthetic", data_root=str(tmp_path)))
    b = Batches(d.train, 64, "cpu", shuffle=True, augment="none", seed=3)
    ys = torch.cat([y for _, y in b.epoch(1)])
    assert sorted(ys.tolist()) == sorted(d.train.y.tolist()) and len(list(b.epoch(1))) == len(b)
    x1 = torch.cat([x for x, _ in b.epoch(2)])
    x2 = torch.cat([x for x, _ in b.epoch(2)])
    x3 = torch.cat([x for x, _ in b.epoch(3)])
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert x1.dtype == torch.float32 and 0 <= x1.min() and x1.max() <= 1


def test_crop_flip_is_a_real_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    out = batches.crop_flip(x, 2, g)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # every output is some shifted window of the padded input, maybe mirrored
        windows = [xp[i, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_randaugment_path_keeps_shape_and_dtype(tmp_path):
    d = load_lt(RunConfig(dataset="synthetic", data_root=str(tmp_path), n_max=20, imbalance_ratio=2))
    b = Batches(d.train, 16, "cpu", shuffle=True, augment="randaugment", seed=0)
    x, y = next(iter(b))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32


def test_subset_per_class_is_stratified_and_seeded(tmp_path):
    d = load_lt(RunConfig(dataset="synthetic", data_root=str(tmp_path)))
    s1 = d.test["balanced"].subset_per_class(7, seed=1)
    s2 = d.test["balanced"].subset_per_class(7, seed=1)
    assert s1.counts(10) == [7] * 10 and torch.equal(s1.index, s2.index)
