"""ONNX export: `seg-perception export`.

The exported graph takes raw frames, uint8 RGB NHWC at the model resolution,
normalises inside, and ends in ArgMax, so runtimes do no per-pixel work in
Python. Outputs: ``labels`` (uint8 N x H x W) and ``confidence`` (float32, the
max softmax probability). ``--logits`` exports the raw logits (N x C x H x W)
instead, for evaluation.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ..card import ModelCard, load_card
from ..nets import build_model
from ..train.checkpoint import load_weights

OPSET = 17
INPUT_NAME = "image"


class DeployWrapper(nn.Module):
    """uint8 NHWC RGB -> (labels uint8, confidence float32), or -> logits."""

    def __init__(self, net: nn.Module, mean, std, logits: bool = False):
        super().__init__()
        self.net = net
        self.logits = logits
        # Folding 1/255 into the scale keeps normalisation a single Mul + Sub.
        scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
        shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, image: torch.Tensor):
        # Cast before Transpose: TensorRT takes uint8 only as network I/O, so the
        # first op on the input must be the Cast to float.
        x = image.float().permute(0, 3, 1, 2) * self.scale - self.shift
        out = self.net(x)
        if self.logits:
            return out
        top, labels = out.max(dim=1)
        # max softmax probability = 1 / sum(exp(l - l_max)): no full softmax tensor kept
        confidence = 1.0 / torch.exp(out - top.unsqueeze(1)).sum(dim=1)
        return labels.to(torch.uint8), confidence


def load_net(card: ModelCard, weights: Optional[str | Path] = None) -> nn.Module:
    """The card's network with its trained weights, in eval mode."""
    path = Path(weights) if weights else card.file("weights")
    if path is None:
        raise FileNotFoundError(f"model card {card.path} lists no weights file; pass --weights")
    net = build_model(card.architecture, card.num_classes)
    load_weights(net, path)
    return net.eval()


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_onnx(card: ModelCard, out: str | Path, weights: Optional[str | Path] = None,
                width: Optional[int] = None, height: Optional[int] = None, dynamic: bool = False,
                logits: bool = False, opset: int = OPSET) -> Path:
    """Write ``out`` (.onnx) and its card (same stem, .yaml); returns the ONNX path."""
    width = int(width or card.input_width)
    height = int(height or card.input_height)
    if width % 8 or height % 8:
        raise ValueError(f"export resolution {width}x{height} must be a multiple of 8")
    if opset < 17:
        raise ValueError(f"opset {opset} is too old; use 17 or later")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = DeployWrapper(load_net(card, weights), card.mean, card.std, logits=logits).eval()
    dummy = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    outputs = ["logits"] if logits else ["labels", "confidence"]
    axes = None
    if dynamic:
        axes = {INPUT_NAME: {0: "batch", 1: "height", 2: "width"}}
        for o in outputs:
            axes[o] = {0: "batch", 2: "height", 3: "width"} if logits else {0: "batch", 1: "height", 2: "width"}
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, which needs
        # onnxscript; its graphs are the ones TensorRT parsers have been tested on longest.
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=axes,
                          do_constant_folding=True)
    tmp.replace(out)
    # The card beside the ONNX lists every file of this model found in that folder.
    new = ModelCard(**{k: v for k, v in card.__dict__.items() if k != "path"})
    new.input_width, new.input_height = width, height
    new.files = {}
    for role in card.files:
        p = card.file(role)
        if p is not None and p.is_file() and p.parent.resolve() == out.parent.resolve():
            new.files[role] = p.name
    src_weights = Path(weights) if weights else card.file("weights")
    if src_weights is not None and src_weights.parent.resolve() == out.parent.resolve():
        new.files["weights"] = src_weights.name
    new.files["onnx_logits" if logits else "onnx"] = out.name
    new.training = dict(card.training)
    new.metrics = dict(card.metrics)
    new.training["export"] = {"opset": opset, "dynamic": dynamic,
                              "source_weights_sha256": sha256(src_weights) if src_weights else None}
    new.save(out.with_suffix(".yaml"))
    return out


def export_from_card(card_path: str | Path, out: str | Path, **kw) -> Path:
    return export_onnx(load_card(card_path), out, **kw)
