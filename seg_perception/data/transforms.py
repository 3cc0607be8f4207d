"""Training augmentation and evaluation resizing, on numpy arrays with OpenCV.

Images are RGB uint8 HxWx3, labels uint8 HxW of class ids. Normalisation is
not done here: it belongs to the model (see model card ``normalization``) so
the exported graph can take raw uint8 frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np


LABEL_RESIZE = {"nearest": cv2.INTER_NEAREST, "centred": cv2.INTER_NEAREST_EXACT}


@dataclass
class TrainAugment:
    """Random scale, crop (padded with the ignore id), flip, small translation, colour jitter."""

    size: Tuple[int, int]  # (width, height) of the crop fed to the network
    ignore_index: int
    scale: Tuple[float, float] = (0.75, 1.75)
    translate_px: int = 2
    jitter: float = 0.25
    # Probability that the crop is placed around a pixel of one class of the frame, the class drawn
    # uniformly among those present: a pole or a cyclist fills crops as often as the road does.
    class_crop: float = 0.0
    seed: int | None = None
    # How labels are resized with the frame. "nearest" (cv2.INTER_NEAREST, the recipe so far) takes
    # source pixel floor(x / s), up to half a pixel off INTER_LINEAR's centre-aligned image, in a
    # direction the flip reverses: on CamVid at scales 0.5-2 it relabels 13 % of Pole's pixels and
    # 7 % of Pedestrian's. "centred" (INTER_NEAREST_EXACT) keeps pixel centres on the image's.
    label_resize: str = "nearest"
    # Scale 1.0 shows the frame as the model sees it at run time: resized to this size (the
    # model's resolution), stretched as the pipeline stretches a camera frame of another shape.
    # Crops smaller than it are windows at that scale, not shrunk frames.
    base: Tuple[int, int] | None = None

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, img: np.ndarray, lab: np.ndarray, rng: np.random.Generator | None = None):
        rng = self.rng if rng is None else rng
        cw, ch = self.size
        h, w = lab.shape
        bw, bh = self.base or self.size
        s = rng.uniform(*self.scale)
        nw, nh = max(1, round(s * bw)), max(1, round(s * bh))
        # A frame wider or taller than the model's input is shrunk by the pipeline with INTER_AREA
        # (no aliasing), so training shrinks it the same way: at scale 1.0 the crop is the run-time
        # input. Frames at the model's size (CamVid at 480x360) are resized linearly, as always.
        larger = w > bw or h > bh
        img = resize_frame(img, (nw, nh)) if larger else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        lab = cv2.resize(lab, (nw, nh), interpolation=LABEL_RESIZE[self.label_resize])
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        # Pad to at least the crop, then crop at a random place (+ a small shift).
        ph, pw = max(0, ch - nh), max(0, cw - nw)
        if ph or pw:
            img = cv2.copyMakeBorder(np.ascontiguousarray(img), 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
            lab = cv2.copyMakeBorder(np.ascontiguousarray(lab), 0, ph, 0, pw, cv2.BORDER_CONSTANT,
                                     value=self.ignore_index)
        y0, x0 = self._crop_corner(lab, ch, cw, rng)
        img = np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])
        lab = np.ascontiguousarray(lab[y0:y0 + ch, x0:x0 + cw])
        if self.translate_px:
            tx, ty = (int(v) for v in rng.integers(-self.translate_px, self.translate_px + 1, 2))
            m = np.float32([[1, 0, tx], [0, 1, ty]])
            img = cv2.warpAffine(img, m, (cw, ch), flags=cv2.INTER_NEAREST, borderValue=0)
            lab = cv2.warpAffine(lab, m, (cw, ch), flags=cv2.INTER_NEAREST, borderValue=self.ignore_index)
        if self.jitter:
            img = color_jitter(img, rng, self.jitter)
        return img, lab

    def _crop_corner(self, lab: np.ndarray, ch: int, cw: int, rng: np.random.Generator) -> Tuple[int, int]:
        """Top-left corner of the crop: anywhere, or (with probability class_crop) anywhere that
        keeps one random pixel of a class drawn among those in the frame inside the crop."""
        h, w = lab.shape
        # class_crop 0 draws nothing extra, so runs without it see the crops they always did
        if self.class_crop and rng.random() < self.class_crop:
            present = np.unique(lab)
            present = present[present != self.ignore_index]
            if present.size:
                ys, xs = np.nonzero(lab == rng.choice(present))
                k = int(rng.integers(len(ys)))
                y, x = int(ys[k]), int(xs[k])
                return (int(rng.integers(max(0, y - ch + 1), min(y, h - ch) + 1)),
                        int(rng.integers(max(0, x - cw + 1), min(x, w - cw) + 1)))
        return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))


def color_jitter(img: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Brightness, contrast and saturation, each scaled by 1 +- amount."""
    b, c, s = rng.uniform(1 - amount, 1 + amount, 3)
    x = img.astype(np.float32) * b
    mean = x.mean()
    x = (x - mean) * c + mean
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * s + gray
    return np.clip(x, 0, 255).astype(np.uint8)


def resize_frame(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A camera frame to ``size`` (width, height) as the pipeline feeds the network: averaged
    (INTER_AREA) along a side that shrinks, no aliasing; linear along one that grows. OpenCV's
    INTER_AREA averages only when both sides shrink, so a frame that shrinks along one side and
    grows along the other (a portrait frame into a landscape input) takes two steps."""
    w, h = size
    ih, iw = img.shape[:2]
    if iw <= w and ih <= h:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    if iw >= w and ih >= h:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    img = cv2.resize(img, (min(iw, w), min(ih, h)), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass
class EvalResize:
    """Resize the image to the model resolution; labels stay at full size (metrics are
    computed at the label's resolution, as the pipeline delivers them)."""

    size: Tuple[int, int]  # (width, height)

    def __call__(self, img: np.ndarray, lab: np.ndarray):
        if img.shape[1::-1] != tuple(self.size):
            # as Pipeline.preprocess does, so that training's val figure is the one evaluate prints
            img = resize_frame(img, tuple(self.size))
        return img, lab
