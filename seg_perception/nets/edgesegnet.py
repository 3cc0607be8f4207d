"""EdgeSegNet (Lin, Chwyl, Wong, 2019): a compact RefineNet-style network.

The paper states its principles but gives no layer table: RefineNet-style
multi-path refinement, residual bottleneck (RB) and non-residual bottleneck
(NRB) modules, 8x8 convolutions with stride 8 as aggressive reduction layers,
and selective long-range shortcuts. This module is our design within those
principles, sized against AttendSeg's Table 1 (EdgeSegNet: 7.09 M
parameters, 77.89 G MACs at 512x512, CamVid). The check uses 32 classes
(CamVid's full label set); the classifier is a 1x1 conv on 96 channels, so 11
classes instead changes the counts by 0.03 % (params) and 0.2 % (MACs).

Design (channels @ resolution):

* stem: 3x3 conv s2 -> 32, 3x3 conv -> 64 @1/2, then RB x4 (64, bottleneck 64)
* path 1/4: 3x3 conv s2 -> 128, RB x7 (bottleneck 128)
* path 1/8: 3x3 conv s2 -> 256, RB x3 (bottleneck 128), NRB
* path 1/16: concatenation of two reductions -- an 8x8 s8 conv straight from
  the 1/2 stem (192 ch; the long-range shortcut that brings fine detail to
  the deepest path) and a 2x2 s2 conv from path 1/8 (256 ch) -- then RB x3
  (448, bottleneck 112)
* refinement, deepest first (RefineNet): each refine module adapts its inputs
  with 3x3 conv-BN-ReLU, upsamples the coarser one to the finer one's size and
  sums (multi-resolution fusion), applies chained residual pooling (two
  stages of 5x5 max-pool + 3x3 conv, summed onto the input) and ends with an
  RB. Widths 128 @1/16, 128 @1/8, 128 @1/4, 96 @1/2; the 1/2 module takes the
  stem directly (the second long-range shortcut).
* head: 1x1 conv to classes at 1/2, bilinear to the input size.

Resolution: H and W multiples of 8 (512x512, 1024x512 and 480x360 all work;
at 360 rows the 1/16 path has 22 rows and is upsampled to the 1/8 path's 45).
No ``.encoder``: the decoder needs the 1/2 and 1/4 paths, not one 1/8 map.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import conv_bn, upsample_to
from .registry import register_model


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand; ``residual`` gives RB, otherwise NRB."""

    def __init__(self, cin: int, cout: int, mid: int, residual: bool = True):
        super().__init__()
        if residual and cin != cout:
            raise ValueError("a residual bottleneck needs equal input and output channels")
        self.residual = residual
        self.reduce = conv_bn(cin, mid, 1)
        self.conv = conv_bn(mid, mid, 3)
        self.expand = conv_bn(mid, cout, 1, relu=False)

    def forward(self, x):
        y = self.expand(self.conv(self.reduce(x)))
        return F.relu(y + x) if self.residual else F.relu(y)


class ChainedResidualPooling(nn.Module):
    """RefineNet's context block: pool-conv stages, each output summed onto the input."""

    def __init__(self, ch: int, stages: int = 2):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(ch, ch, 3, padding=1, bias=False) for _ in range(stages))

    def forward(self, x):
        out, y = x, x
        for conv in self.convs:
            y = conv(F.max_pool2d(y, 5, stride=1, padding=2))
            out = out + y
        return out


class RefineModule(nn.Module):
    def __init__(self, c_fine: int, c_coarse: int, ch: int, mid: int):
        super().__init__()
        self.adapt_fine = conv_bn(c_fine, ch, 3)
        self.adapt_coarse = conv_bn(c_coarse, ch, 3) if c_coarse else None
        self.crp = ChainedResidualPooling(ch)
        self.out = Bottleneck(ch, ch, mid)

    def forward(self, fine, coarse=None):
        y = self.adapt_fine(fine)
        if coarse is not None:
            y = y + upsample_to(self.adapt_coarse(coarse), y)
        return self.out(self.crp(y))


class EdgeSegNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 32, 3, 2), conv_bn(32, 64, 3),
                                  *[Bottleneck(64, 64, 64) for _ in range(4)])
        self.path4 = nn.Sequential(conv_bn(64, 128, 3, 2), *[Bottleneck(128, 128, 128) for _ in range(7)])
        self.path8 = nn.Sequential(conv_bn(128, 256, 3, 2), *[Bottleneck(256, 256, 128) for _ in range(3)],
                                   Bottleneck(256, 256, 128, residual=False))
        self.reduce8x8 = conv_bn(64, 192, 8, 8, relu=False, padding=0)
        self.down16 = conv_bn(256, 256, 2, 2, relu=False, padding=0)
        self.path16 = nn.Sequential(*[Bottleneck(448, 448, 112) for _ in range(3)])
        self.refine16 = RefineModule(448, 0, 128, 64)
        self.refine8 = RefineModule(256, 128, 128, 64)
        self.refine4 = RefineModule(128, 128, 128, 64)
        self.refine2 = RefineModule(64, 128, 96, 96)
        self.classifier = nn.Conv2d(96, num_classes, 1)

    def forward(self, x):
        x2 = self.stem(x)
        x4 = self.path4(x2)
        x8 = self.path8(x4)
        # Both reductions floor to the same size when H, W are multiples of 8.
        x16 = self.path16(F.relu(torch.cat([self.down16(x8), self.reduce8x8(x2)], 1)))
        y = self.refine16(x16)
        y = self.refine8(x8, y)
        y = self.refine4(x4, y)
        y = self.refine2(x2, y)
        return upsample_to(self.classifier(y), x)


@register_model("edgesegnet")
def edgesegnet(num_classes: int) -> EdgeSegNet:
    return EdgeSegNet(num_classes)
