"""Metrics against hand-computed values."""
import math

import numpy as np
import pytest

from seg_perception.metrics import ConfusionMatrix, binary_scores, binary_summary


def test_confusion_matrix_iou_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 9, 9]])  # 9 = ignore (>= num_classes)
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, truth)
    # class 0: tp 1, fp 1 (truth 2 -> 0), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    assert math.isclose(cm.miou(), (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert math.isclose(cm.pixel_accuracy(), 4 / 6)


def test_absent_class_is_not_averaged():
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    assert np.isnan(cm.iou()[2]) and cm.miou() == 1.0


def test_a_class_absent_from_the_truth_is_not_averaged_even_when_predicted():
    """A class the truth lacks has no IoU (it would be 0 with a stray prediction and undefined
    without one, so two models' means would cover different classes); its false positives still
    cost the class whose pixels they took."""
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 2, 2]), np.array([0, 0, 0, 0]))
    np.testing.assert_allclose(cm.iou(), [0.5, np.nan, np.nan])
    assert math.isclose(cm.miou(), 0.5) and list(cm.absent()) == [1, 2]
    clean = ConfusionMatrix(3)  # the same truth without the stray predictions: the same classes averaged
    clean.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0]))
    assert math.isclose(clean.miou(), 1.0) and list(clean.absent()) == [1, 2]
    assert cm.summary(["a", "b", "c"])["classes_absent"] == ["b", "c"]
    full = ConfusionMatrix(2)
    full.update(np.array([0, 1]), np.array([1, 0]))
    assert "classes_absent" not in full.summary(["a", "b"]) and full.miou() == 0.0


def test_out_of_range_prediction_is_no_class_and_shapes_must_match():
    cm = ConfusionMatrix(3)
    cm.update(np.array([7, 1]), np.array([2, 1]))
    assert cm.mat[2, 2] == 0 and cm.mat[1, 1] == 1 and cm.mat.sum() == 1 and cm.pred_unknown[2] == 1
    with pytest.raises(ValueError, match="differ in size"):
        cm.update(np.zeros((2, 3)), np.zeros((3, 2)))


def test_merged_matrices_score_as_one_pass():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 5, (2, 50)), rng.integers(0, 4, (2, 50))
    whole, a, b = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    whole.update(pred, truth)
    a.update(pred[0], truth[0])
    b.update(pred[1], truth[1])
    a.merge(b)
    np.testing.assert_array_equal(a.mat, whole.mat)
    assert a.miou() == whole.miou()


def test_binary_summary():
    """Counts unequal on each side (tp 1, fp 2, fn 1), so precision tp / (tp + fp) and recall
    tp / (tp + fn) differ and cannot be swapped unnoticed."""
    counts = binary_scores(np.array([1, 1, 1, 0, 0, 0]), np.array([1, 0, 0, 1, 0, 0]))
    assert counts == {"tp": 1, "fp": 2, "fn": 1, "tn": 2}
    assert binary_summary(counts) == {"iou": 25.0, "precision": 33.33, "recall": 50.0}


def test_class_errors_say_where_a_class_goes():
    # truth: 4 pixels of class 0, 2 of class 1; class 0 is predicted as 0 once, 1 twice, 2 once
    truth = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 1, 1, 2, 1, 0])
    cm = ConfusionMatrix(3)
    cm.update(pred, truth)
    e = cm.class_errors(["a", "b", "c"])
    assert e["a"]["recall"] == 25.0 and e["a"]["precision"] == 50.0  # 1 of 4 found; 1 of 2 called a are a
    assert list(e["a"]["predicted_as"].items()) == [("b", 50.0), ("c", 25.0)]
    assert e["b"] == {"recall": 50.0, "precision": round(100 / 3, 2), "predicted_as": {"a": 50.0}}
    assert e["c"]["recall"] is None and e["c"]["precision"] == 0.0


def test_predictions_past_the_table_are_wrong_not_the_last_class():
    """np.clip made a predicted 255 class n-1: against truth n-1 it scored IoU 1.0. It is a miss
    of the true class (its recall and IoU fall) and a hit of no class."""
    cm = ConfusionMatrix(3)
    cm.update(np.array([255, 255, 2, 0]), np.array([2, 2, 2, 0]))
    np.testing.assert_allclose(cm.iou(), [1.0, np.nan, 1 / 3])
    assert list(cm.pred_unknown) == [0, 0, 2] and cm.mat.sum() == 2
    assert math.isclose(cm.pixel_accuracy(), 2 / 4) and cm.summary(["a", "b", "c"])["pixels"] == 4
    assert cm.class_errors(["a", "b", "c"])["c"]["recall"] == round(100 / 3, 2)
    other = ConfusionMatrix(3)
    other.merge(cm)
    assert list(other.pred_unknown) == [0, 0, 2]


def test_fps_is_one_over_the_mean_not_over_the_rounded_mean():
    from seg_perception.timing import latency_stats
    s = latency_stats([1.235, 1.237])  # mean 1.236: 809.1 FPS; the rounded mean 1.24 would give 806.5
    assert s["mean"] == 1.24 and s["fps"] == 809.1, s
