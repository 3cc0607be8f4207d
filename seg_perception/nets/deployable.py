"""A trained network ready to run: its weights loaded, wrapped to take camera frames.

``load_net(card)`` builds the card's architecture from the registry and loads the
weights file the card lists; ``DeployWrapper`` puts the normalisation in front and
the argmax behind it, so the ONNX export, the PyTorch backend and the TensorRT
engine all run the same graph: uint8 RGB NHWC in, labels (and confidence) out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ..card import ModelCard
from .registry import build_model


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
        # int64 -> float -> uint8: TensorRT casts to uint8 only from float or half (8.x's ONNX
        # parser refuses an integer input); exact for class ids below 256
        return labels.float().to(torch.uint8), confidence


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a weights file (or a full checkpoint) into ``model``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found: train one with 'seg-perception train' "
                                "or pass the path of an existing .pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign file
        raise ValueError(f"weights file {path} cannot be read ({type(e).__name__}): is it a "
                         "seg_perception .pt file?") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"weights file {path} does not fit this network ({first}); check the "
                         "model card's architecture and number of classes") from None
    return model


# Below this a weight contributes nothing an fp32 (let alone fp16/int8) result can show.
TINY_WEIGHT = 1e-20


@torch.no_grad()
def flush_tiny_weights(net: nn.Module) -> int:
    """Zero the weights and buffers smaller than TINY_WEIGHT in magnitude; returns how many.

    Weight decay leaves some trained weights at 1e-30..1e-45. Multiplied with activations
    they make subnormal floats, which x86 CPUs compute in microcode: the shipped ESSNet-D
    (27k of its 403k weights subnormal) ran about 25x slower on ONNX Runtime on an Intel
    Xeon before this, with identical labels after."""
    n = 0
    for t in list(net.parameters()) + list(net.buffers()):
        if t.is_floating_point():
            tiny = t.abs() < TINY_WEIGHT
            tiny &= t != 0
            n += int(tiny.sum())
            t[tiny] = 0.0
    return n


def load_net(card: ModelCard, weights: Optional[str | Path] = None) -> nn.Module:
    """The card's network with its trained weights (tiny ones flushed to zero), in eval mode."""
    path = Path(weights) if weights else card.file("weights")
    if path is None:
        raise FileNotFoundError(f"model card {card.path} lists no weights file; pass --weights")
    net = build_model(card.architecture, card.num_classes)
    load_weights(net, path)
    flush_tiny_weights(net)
    return net.eval()
