"""A class legend (colour swatch + class name, from the model card) drawn into an overlay
image, so that a picture the package writes says which colour is which class.

The legend is rendered once per (classes, image height) and then pasted into the image's
top-right corner, half transparent: a per-frame cost of one small blend, not of text drawing.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence, Tuple

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


@lru_cache(maxsize=16)
def _render(names: Tuple[str, ...], colors: Tuple[Tuple[int, int, int], ...], image_height: int) -> np.ndarray:
    """The legend panel (RGB uint8), its rows sized so that every class fits the image height."""
    row = int(np.clip((image_height - 8) // max(len(names), 1), 8, 16))
    scale = row / 28.0
    thick = 1
    width = max(cv2.getTextSize(n, FONT, scale, thick)[0][0] for n in names) + row + 12
    panel = np.full((row * len(names) + 8, width, 3), 32, np.uint8)
    for i, (name, color) in enumerate(zip(names, colors)):
        y = 4 + i * row
        cv2.rectangle(panel, (4, y + 2), (4 + row - 4, y + row - 2), tuple(int(c) for c in color), -1)
        cv2.putText(panel, name, (row + 6, y + row - max(row // 4, 2)), FONT, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return panel


def legend_panel(names: Sequence[str], colors: Sequence[Sequence[int]], image_height: int) -> np.ndarray:
    return _render(tuple(names), tuple(tuple(int(v) for v in c) for c in colors), int(image_height))


def draw_legend(image: np.ndarray, names: Sequence[str], colors: Sequence[Sequence[int]],
                alpha: float = 0.8) -> np.ndarray:
    """``image`` (RGB uint8, H x W x 3) with the legend in its top-right corner, clipped to the
    image where the image is smaller than the legend. Returns a new array."""
    out = np.array(image, np.uint8, copy=True)
    if not len(names):
        return out
    panel = legend_panel(names, colors, out.shape[0])
    h, w = min(panel.shape[0], out.shape[0]), min(panel.shape[1], out.shape[1])
    region = out[:h, out.shape[1] - w:]
    region[:] = cv2.addWeighted(panel[:h, :w], alpha, region, 1.0 - alpha, 0.0)
    return out
