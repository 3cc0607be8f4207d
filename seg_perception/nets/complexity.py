"""Model size and cost: parameters and multiply-accumulates (MACs).

MACs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts only
convolutions (incl. transposed) and matmul-like ops (mm, bmm, addmm, baddbmm,
SDPA); one MAC is two of its FLOPs. BatchNorm, activations, pooling, add, mul,
interpolation and softmax cost nothing in it, as in most papers' tables.

Units in the papers of this zoo: the ESSNet thesis's "GFLOPs" are MACs (an
ERFNet built from the reference table counts 26.6 GMACs at 1024x512 here,
against the thesis's 27.7); EdgeSegNet/AttendSeg tables state MACs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Learnable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int, channels: int = 3, meta: bool = True) -> int:
    """MACs of one forward pass of a 1 x channels x height x width input, in eval mode.

    With ``meta`` (the default) a copy of the model runs on the meta device:
    shapes only, no arithmetic, so a 150 GMAC net counts in a fraction of a
    second and gives the same figure as a real run (the test checks this).
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if meta:
        model = copy.deepcopy(model).to("meta")
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = torch.zeros(1, channels, int(height), int(width), device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() // 2
    finally:
        model.train(was_training)
