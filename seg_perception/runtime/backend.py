"""The one small interface every inference backend implements.

A backend takes one uint8 RGB frame already at the model resolution (H x W x 3)
and returns (labels uint8 H x W, confidence float32 H x W or None); ``infer_batch``
does the same for N frames stacked (N x H x W x 3) in one call where the backend
can (several cameras in one node), else frame by frame. All of
them run the same graph: normalisation inside, argmax at the end (see
nets/deployable.py), so switching backends never changes pre/post-processing.
The backends themselves are in backends.py (ONNX Runtime, PyTorch) and
tensorrt_backend.py; both import this module, never each other's.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..card import ModelCard, check_precision


# The symbolic input/output dims of a dynamic-shape export (`seg-perception export --dynamic`, what
# ships): one graph serves any resolution; each backend pins them to its own size at load time.
DYNAMIC_DIMS = ("batch", "height", "width")


class BackendError(RuntimeError):
    """A backend that cannot start as configured; the message says what to change."""


class Backend(ABC):
    name: str = "?"
    precisions: Tuple[str, ...] = ()  # the precisions this backend can run

    def __init__(self, card: ModelCard, width: int, height: int, precision: str):
        self.card = card
        self.width, self.height = int(width), int(height)
        self.precision = precision

    @abstractmethod
    def infer(self, image: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """image: uint8 (height, width, 3) RGB -> (labels uint8, confidence float32 | None)."""

    def infer_batch(self, images: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """images: uint8 (N, height, width, 3) -> (labels uint8 (N, h, w), confidence (N, h, w) | None).
        This default runs the frames one by one; backends that can batch override it."""
        outs = [self.infer(img) for img in images]
        labels = np.stack([o[0] for o in outs])
        conf = None if any(o[1] is None for o in outs) else np.stack([o[1] for o in outs])
        return labels, conf

    def warmup(self, runs: int = 2) -> None:
        blank = np.zeros((self.height, self.width, 3), np.uint8)
        for _ in range(runs):
            self.infer(blank)

    def describe(self) -> str:
        return f"{self.name} {self.precision} {self.width}x{self.height}"

    @property
    def on_gpu(self) -> bool:
        """Runs on a GPU, where a batch of N frames costs much less than N frames (on a CPU it costs
        about N: batching then only adds latency)."""
        return False

    def close(self) -> None:
        pass


def backend_precision(precision: str) -> str:
    """card.check_precision, failing as a BackendError (what the node and commands catch)."""
    try:
        return check_precision(precision)
    except ValueError as e:
        raise BackendError(str(e)) from None


def need_file(path: Optional[Path], what: str, hint: str) -> Path:
    """``path`` when it is an existing file, else a BackendError that says how to make one."""
    if path is None:
        raise BackendError(f"no {what} for this model: {hint}")
    if not Path(path).is_file():
        raise BackendError(f"{what} {path} not found: {hint}")
    return Path(path)


def onnx_file(card: ModelCard, precision: str, override: Optional[str | Path] = None,
              target: str = "tensorrt") -> Path:
    """The ONNX graph to run at ``precision`` on ``target`` (tensorrt | cpu): ``override``, else
    the one the card lists for it (``card.onnx_for``)."""
    if precision == "int8":
        what, hint = "int8 ONNX file", "run 'seg-perception quantize' to make one"
    else:
        # --dynamic where the card's ONNX took any size: export refuses to make a fixed one over it
        dynamic = " --dynamic" if (card.training.get("export") or {}).get("dynamic") else ""
        what, hint = "fp32 ONNX file", (f"run 'seg-perception export --model {card.path or card.name}{dynamic}' "
                                        "to make one, "
                                        "point the onnx parameter at one (--onnx; the node: -p onnx:=FILE), or "
                                        "run the .pt weights with backend torch (--backend torch; the node: "
                                        "-p backend:=torch)")
    return need_file(Path(override) if override else card.onnx_for(precision, target), what, hint)
