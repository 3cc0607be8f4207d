"""BatchNorm statistics re-estimated on unlabelled frames of a new camera (AdaBN, Li et al. 2016).

A network normalises every layer with the mean and variance it saw in training. Frames of
another camera, place or weather shift those statistics, and the layers after them see
inputs they were not trained on. Re-estimating the statistics on the new frames needs no
labels and changes no learned weight; blending them with the training statistics keeps
what the training drives taught where the new frames are few or unlike each other.
docs/training.md ("Adapting to your camera") has the measurements that chose the blend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List

import torch
import torch.nn as nn


@dataclass
class LayerShift:
    name: str
    shift: float  # mean over channels of |new mean - old mean| / old standard deviation


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], blend: float) -> List[LayerShift]:
    """Replace every BatchNorm layer's running mean and variance by
    ``(1 - blend) * training statistics + blend * statistics of its inputs over ``batches```.

    The new statistics are pooled over every pixel of every batch (exact mean and variance of
    what the layer saw, not an average of per-batch figures). As in training, each layer
    normalises with its batch's own statistics during the pass, so a layer's inputs already
    follow the new statistics of the layers before it. Only running statistics change; the
    model is left in eval mode. Returns each layer's shift, for the log."""
    if not 0.0 <= blend <= 1.0:
        raise ValueError(f"blend must be between 0 (training statistics) and 1 (new frames' only), got {blend}")
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    if not layers:
        raise ValueError("this network has no BatchNorm layer: there are no statistics to adapt")
    sums = {n: [0, 0.0, 0.0] for n, _ in layers}  # pixels, sum, sum of squares (float64)

    def collect(name):
        def hook(_module, inputs):
            x = inputs[0].detach().double().transpose(0, 1).flatten(1)  # (C, N*H*W)
            acc = sums[name]
            acc[0] += x.shape[1]
            acc[1] = acc[1] + x.sum(1)
            acc[2] = acc[2] + (x * x).sum(1)
        return hook

    old = {n: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for n, m in layers}
    handles = [m.register_forward_pre_hook(collect(n)) for n, m in layers]
    model.eval()
    for _, m in layers:
        m.train()  # normalise with each batch's statistics, as in training
    try:
        seen = 0
        for x in batches:
            model(x)
            seen += 1
    finally:
        for h in handles:
            h.remove()
        model.eval()
    if not seen:
        raise ValueError("no frames to adapt on")
    shifts = []
    for name, m in layers:
        count, s, ss = sums[name]
        mean = s / count
        var = (ss / count - mean * mean).clamp_min(0.0) * (count / max(count - 1, 1))
        mean0, var0, tracked = old[name]
        m.running_mean.copy_((1 - blend) * mean0 + blend * mean.to(mean0.dtype))
        m.running_var.copy_((1 - blend) * var0 + blend * var.to(var0.dtype))
        m.num_batches_tracked.copy_(tracked)
        shifts.append(LayerShift(name, float(((mean.float() - mean0).abs() / (var0 + m.eps).sqrt()).mean())))
    return shifts
