"""Metrics against hand-computed values."""
import math

import numpy as np

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


def test_binary_summary():
    s = binary_summary(binary_scores(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])))
    assert s == {"iou": 33.33, "precision": 50.0, "recall": 50.0}


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
