"""Gradual grouping (ESSNet thesis, section 3.5).

A grouped 1x1 conv is trained as a dense conv whose off-group weight blocks are
multiplied by ``alpha``; alpha falls linearly from 1 to 0 over the first
epochs, after which the layer is exactly the grouped conv and is fine-tuned as
such. ``finalize`` turns each layer back into a true ``nn.Conv2d(groups=G)``
with the in-group blocks, which gives identical outputs at alpha 0.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class GradualPointwise(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        g = conv.groups
        cout, cin_g = conv.out_channels, conv.in_channels // g
        cin = conv.in_channels
        self.groups = g
        mask = torch.zeros(cout, cin, 1, 1)
        dense = torch.empty(cout, cin, 1, 1)
        nn.init.kaiming_uniform_(dense, a=5 ** 0.5)  # nn.Conv2d's own initialisation
        for grp in range(g):
            o = slice(grp * (cout // g), (grp + 1) * (cout // g))
            i = slice(grp * cin_g, (grp + 1) * cin_g)
            mask[o, i] = 1.0
            dense[o, i] = conv.weight.detach()[o]
        self.weight = nn.Parameter(dense)
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("alpha", torch.tensor(1.0))

    def forward(self, x):
        w = self.weight * (self.mask + self.alpha * (1 - self.mask))
        return F.conv2d(x, w, self.bias)

    def to_grouped(self) -> nn.Conv2d:
        g = self.groups
        cout, cin = self.weight.shape[:2]
        conv = nn.Conv2d(cin, cout, 1, groups=g, bias=self.bias is not None)
        with torch.no_grad():
            for grp in range(g):
                o = slice(grp * (cout // g), (grp + 1) * (cout // g))
                i = slice(grp * (cin // g), (grp + 1) * (cin // g))
                conv.weight[o] = self.weight[o, i]
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv.to(self.weight.device)


def _replace(model: nn.Module, pick, make) -> int:
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if pick(child):
                setattr(parent, name, make(child))
                n += 1
    return n


def make_gradual(model: nn.Module) -> int:
    """Swap every grouped 1x1 conv for its dense-with-mask training form."""
    return _replace(model, lambda m: isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups > 1
                    and m.groups < m.in_channels, GradualPointwise)


def set_alpha(model: nn.Module, alpha: float) -> None:
    for m in model.modules():
        if isinstance(m, GradualPointwise):
            m.alpha.fill_(float(alpha))


def alpha_at(epoch: int, epochs: int) -> float:
    """Linear 1 -> 0 over ``epochs`` (epoch counted from 0), then 0."""
    return max(0.0, 1.0 - epoch / max(1, epochs))


def finalize(model: nn.Module) -> int:
    return _replace(model, lambda m: isinstance(m, GradualPointwise), lambda m: m.to_grouped())


def finalized_copy(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model)
    finalize(m)
    return m
