import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score

from taetlib import metrics


@pytest.mark.parametrize("seed", range(5))
def test_balanced_robustness_matches_sklearn(seed):
    g = np.random.default_rng(seed)
    y = g.integers(0, 7, 300)
    pred = np.where(g.random(300) < 0.6, y, g.integers(0, 7, 300))
    assert metrics.balanced_robustness(y, pred, 7) == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    np.testing.assert_allclose(metrics.per_class_recall(y, pred, 7),
                               recall_score(y, pred, average=None, labels=range(7)))


def test_absent_class_is_left_out_and_reported():
    y = np.array([0, 0, 1, 1, 3])
    pred = np.array([0, 1, 1, 1, 0])
    r = metrics.per_class_recall(y, pred, 4)
    assert np.isnan(r[2]) and r[0] == 0.5 and r[1] == 1.0 and r[3] == 0.0
    s = metrics.summarize(y, pred, train_counts=[40, 30, 20, 10], num_classes=4)
    assert s["balanced"] == pytest.approx(0.5)
    assert s["absent_classes"] == [2]
    assert s["worst_class"] == 3 and s["worst_recall"] == 0.0


def test_groups_are_thirds_by_training_count():
    counts = [5, 500, 50, 100, 10, 1000]  # not in label order on purpose
    g = metrics.class_groups(counts)
    assert list(g["head"]) == [5, 1] and list(g["medium"]) == [3, 2] and list(g["tail"]) == [4, 0]
    recall = np.array([0.0, 0.8, 0.4, 0.6, 0.2, 1.0])
    assert metrics.group_means(recall, counts) == pytest.approx({"head": 0.9, "medium": 0.5, "tail": 0.1})


def test_overall_accuracy_and_shape_check():
    assert metrics.overall_accuracy([1, 2, 3], [1, 2, 0]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="must match"):
        metrics.per_class_recall([1, 2], [1], 3)
