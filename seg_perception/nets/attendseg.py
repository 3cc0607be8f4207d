"""AttendSeg (Wen, Famouri, Hryniowski, Wong, 2021): a tiny network built on
attention condensers.

The paper describes its building blocks and principles but, its macro-
architecture being machine-designed, gives no layer table: attention
condensers, depthwise and pointwise convolutions, strided convolutions with
large strides, and selective long-range connectivity. This module is our
design within those principles, sized against the paper's Table 1 (1.19 M
parameters, 7.45 G MACs at 512x512, CamVid). The check uses 32 classes
(CamVid's full label set); the classifier is a 1x1 conv on 64 channels, so
11 classes instead changes the counts by 0.1 % (params) and 1.2 % (MACs).

Attention condenser (``AttentionCondenser``), in the paper's four steps:
condensation Q = maxpool2x2(V); embedding K = pointwise-up(pointwise-down(
depthwise3x3(Q))) with a bottleneck of C/4; expansion A = nearest-upsample(K)
to V's size; selective attention V' = V * sigmoid(A) * S, S a learned
per-channel scale. Modules (``CondenserModule``) are condenser -> depthwise
3x3 -> pointwise 1x1, residual when the widths match.

Design (channels @ resolution):

* stem: 3x3 conv s2 -> 32, depthwise 3x3, pointwise -> 64 @1/2, modules x4
* path 1/4: 2x2 conv s2 -> 128, modules x6
* path 1/8: 4x4 conv with stride 4 straight from the 1/2 stem -> 192 (the
  large-stride reduction), modules x3
* path 1/16: 2x2 conv s2 -> 256, modules x2
* decoder: 1x1 projections to 128 of paths 1/16, 1/8 and 1/4, summed
  top-down after bilinear upsampling, a module at each of 1/8 and 1/4; then
  64 channels at 1/2 joined by the stem (long-range connection), a module,
  a 1x1 classifier and bilinear upsampling to the input size.

Resolution: H and W multiples of 8 (upsampling targets each finer map's own
size, so 480x360 works: its 1/16 path is 22 rows). No ``.encoder``: the
1/8 path branches from the 1/2 stem, and the decoder needs 1/2 and 1/4 too.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import conv_bn, upsample_to
from .registry import register_model


class AttentionCondenser(nn.Module):
    def __init__(self, ch: int, mid: int):
        super().__init__()
        self.embed = nn.Sequential(conv_bn(ch, ch, 3, groups=ch), conv_bn(ch, mid, 1),
                                   nn.Conv2d(mid, ch, 1, bias=True))
        self.scale = nn.Parameter(torch.ones(1, ch, 1, 1))

    def forward(self, v):
        q = F.max_pool2d(v, 2, stride=2, ceil_mode=True)  # condensation
        a = F.interpolate(self.embed(q), size=v.shape[-2:], mode="nearest")  # embedding, expansion
        return v * torch.sigmoid(a) * self.scale  # selective attention


class CondenserModule(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.attend = AttentionCondenser(cin, max(cin // 4, 8))
        self.dw = conv_bn(cin, cin, 3, groups=cin)
        self.pw = conv_bn(cin, cout, 1, relu=False)
        self.residual = cin == cout

    def forward(self, x):
        y = self.pw(self.dw(self.attend(x)))
        return F.relu(y + x) if self.residual else F.relu(y)


def modules(ch: int, n: int) -> list:
    return [CondenserModule(ch, ch) for _ in range(n)]


class AttendSeg(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 32, 3, 2), conv_bn(32, 32, 3, groups=32), conv_bn(32, 64, 1),
                                  *modules(64, 4))
        self.path4 = nn.Sequential(conv_bn(64, 128, 2, 2, padding=0), *modules(128, 6))
        self.path8 = nn.Sequential(conv_bn(64, 192, 4, 4, padding=0), *modules(192, 3))
        self.path16 = nn.Sequential(conv_bn(192, 256, 2, 2, padding=0), *modules(256, 2))
        self.proj16, self.proj8, self.proj4 = conv_bn(256, 128), conv_bn(192, 128), conv_bn(128, 128)
        self.fuse8, self.fuse4 = CondenserModule(128, 128), CondenserModule(128, 128)
        self.reduce4, self.proj2 = conv_bn(128, 64), conv_bn(64, 64)
        self.fuse2 = CondenserModule(64, 64)
        self.classifier = nn.Conv2d(64, num_classes, 1)

    def forward(self, x):
        x2 = self.stem(x)
        x4 = self.path4(x2)
        x8 = self.path8(x2)
        x16 = self.path16(x8)
        y = self.fuse8(upsample_to(self.proj16(x16), x8) + self.proj8(x8))
        y = self.fuse4(upsample_to(y, x4) + self.proj4(x4))
        y = self.fuse2(upsample_to(self.reduce4(y), x2) + self.proj2(x2))
        return upsample_to(self.classifier(y), x)


@register_model("attendseg")
def attendseg(num_classes: int) -> AttendSeg:
    return AttendSeg(num_classes)
