"""Segmentation metrics from a confusion matrix: used by training, `evaluate`
and bag evaluation alike, so every number the project prints is computed once."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np


class ConfusionMatrix:
    """Accumulates a (num_classes x num_classes) matrix: rows = truth, cols = prediction.
    Pixels whose truth is the ignore id (or any id >= num_classes) are skipped. Predicted ids past
    the table are wrong for their true class and right for none: they are counted per true class
    in ``pred_unknown`` (a false negative of the row, a false positive of no class)."""

    def __init__(self, num_classes: int):
        self.n = int(num_classes)
        self.mat = np.zeros((self.n, self.n), np.int64)
        self.pred_unknown = np.zeros(self.n, np.int64)  # per true class: pixels predicted as no class

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        pred = np.asarray(pred)
        truth = np.asarray(truth)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in size")
        t = truth.reshape(-1).astype(np.int64)
        p = pred.reshape(-1).astype(np.int64)
        keep = (t >= 0) & (t < self.n)
        t, p = t[keep], p[keep]
        # An extra column n for predictions past the table, kept apart from the matrix (not clipped
        # into the last class, which scored a predicted 255 as a hit of class n-1).
        p = np.where((p >= 0) & (p < self.n), p, self.n)
        m = self.n + 1
        counts = np.bincount(t * m + p, minlength=self.n * m).reshape(self.n, m)
        self.mat += counts[:, :self.n]
        self.pred_unknown += counts[:, self.n]

    def merge(self, other: "ConfusionMatrix") -> None:
        self.mat += other.mat
        self.pred_unknown += other.pred_unknown

    def truth_pixels(self) -> np.ndarray:
        """Per class: its pixels in the truth, predictions past the table included."""
        return self.mat.sum(1) + self.pred_unknown

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from the truth. Its stray predictions still cost the
        classes whose pixels they took; counted as a 0 of their own, the mean would move with whether a
        model predicts a few pixels of a class the split lacks (fp32 against int8, epoch to epoch)."""
        tp = np.diag(self.mat).astype(np.float64)
        truth = self.truth_pixels()
        denom = self.mat.sum(0) + truth - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(truth > 0, tp / np.maximum(denom, 1), np.nan)

    def absent(self) -> np.ndarray:
        """Indices of the classes without a pixel in the truth (their IoU is NaN, not averaged)."""
        return np.flatnonzero(self.truth_pixels() == 0)

    def miou(self) -> float:
        """Mean over the classes present in the truth."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.truth_pixels().sum()
        return float(np.trace(self.mat) / total) if total else float("nan")

    def summary(self, class_names: Sequence[str]) -> Dict:
        iou = self.iou()
        return {
            "miou": round(100 * self.miou(), 2),
            "pixel_accuracy": round(100 * self.pixel_accuracy(), 2),
            "per_class_iou": {n: (None if np.isnan(v) else round(100 * float(v), 2))
                              for n, v in zip(class_names, iou)},
            "pixels": int(self.truth_pixels().sum()),
            **({"classes_absent": [class_names[i] for i in self.absent()]} if len(self.absent()) else {}),
        }

    def class_errors(self, class_names: Sequence[str], top: int = 2) -> Dict[str, Dict]:
        """Per class: recall, precision (percent) and the classes its true pixels are most often
        predicted as (percent of the class's pixels): what a low IoU is made of."""
        out = {}
        for i, name in enumerate(class_names):
            row, col, tp = self.mat[i], self.mat[:, i], int(self.mat[i, i])
            total = int(row.sum() + self.pred_unknown[i])
            wrong = [(int(row[j]), j) for j in range(self.n) if j != i and row[j] > 0]
            out[name] = {
                "recall": round(100 * tp / total, 2) if total else None,
                "precision": round(100 * tp / col.sum(), 2) if col.sum() else None,
                "predicted_as": {class_names[j]: round(100 * c / total, 2)
                                 for c, j in sorted(wrong, reverse=True)[:top]},
            }
        return out


def binary_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> Dict[str, int]:
    """True/false positive/negative counts of a boolean mask (e.g. drivable area)."""
    pred = np.asarray(pred, bool)
    truth = np.asarray(truth, bool)
    if valid is not None:
        pred, truth = pred[valid], truth[valid]
    return {"tp": int((pred & truth).sum()), "fp": int((pred & ~truth).sum()),
            "fn": int((~pred & truth).sum()), "tn": int((~pred & ~truth).sum())}


def binary_summary(counts: Dict[str, int]) -> Dict[str, float | None]:
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]

    def ratio(a, b):
        return round(100 * a / b, 2) if b else None
    return {"iou": ratio(tp, tp + fp + fn), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


def percentiles(values: List[float], qs=(50, 95)) -> Dict[str, float | None]:
    if not values:
        return {f"p{q}": None for q in qs} | {"max": None, "mean": None}
    arr = np.asarray(values, np.float64)
    out = {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}
    out["max"] = round(float(arr.max()), 2)
    out["mean"] = round(float(arr.mean()), 2)
    return out


def no_nan(v):
    """null for a figure that has no value (a mIoU of frames whose ground truth is all ignore):
    NaN is not JSON, and strict readers (jq, browsers) refuse the whole file."""
    if isinstance(v, (float, np.floating)) and v != v:
        return None
    if isinstance(v, dict):
        return {k: no_nan(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [no_nan(x) for x in v]
    return v
