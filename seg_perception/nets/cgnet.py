"""CGNet (Wu et al., "CGNet: A Light-weight Context Guided Network for Semantic
Segmentation", 2018/2020): context-guided blocks in all three stages, no decoder.

Not a seed paper: a candidate for more accuracy than RDS-Net at under 1 M parameters
(published CamVid test 65.6 with 0.5 M parameters, issue 9's reference list, against
RDS-Net's 58.3). It misses the default's speed on ONNX Runtime's CPU kernels: 0.91x
ERFNet (PReLU with a per-channel slope is slow there; 1.9x with ReLU instead), so it was
not trained here (docs/training.md, "CGNet"). Written from the paper's description of
its layers (M = 3, N = 21), our own code:

=====  ============================================  ====================
stage  layers                                        output (C x H x W)
=====  ============================================  ====================
1      3x3 conv s2 (3 -> 32), 3x3 conv, 3x3 conv     32 x H/2 x W/2
       + the frame pooled to 1/2, joined              35
2      CG block s2 (dilation 2) + 2 CG blocks        64 x H/4 x W/4
       + the first block's output + frame at 1/4      131
3      CG block s2 (dilation 4) + 20 CG blocks       128 x H/8 x W/8
       + the first block's output                     256
4      1x1 conv to the classes, bilinear x8          C x H x W
=====  ============================================  ====================

Every dense conv is followed by BatchNorm and PReLU, and so is each join of stage outputs.
A CG block: a 1x1 conv halves the channels; a depthwise 3x3 (the local feature) and a
depthwise dilated 3x3 (its surroundings) run side by side and are joined, one BN + PReLU
after the join; a global context vector (average pool, two 1x1 convs with a bottleneck of
1/8 or 1/16, sigmoid) reweights the channels; the block's input is added back. The strided
block opens with a 3x3 s2 conv to the stage's width instead, joins two full-width depthwise
branches, projects them back with a 1x1 conv (no BN), and adds no shortcut. The global
context's two layers are 1x1 convs (the paper's fully connected layers, same weights) so
that the graph stays convolutional; the classifier has a bias. H and W should be multiples
of 8 (exact 1/2, 1/4 and 1/8 grids).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BN_EPS
from .registry import register_model


def bn_prelu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(c, eps=BN_EPS), nn.PReLU(c))


def conv_bn_prelu(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), bn_prelu(cout))


class GlobalContext(nn.Module):
    """Channel weights from the whole frame's average (squeeze and excitation)."""

    def __init__(self, c: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Conv2d(c, c // reduction, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(c // reduction, c, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(F.adaptive_avg_pool2d(x, 1))


class CGBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int, reduction: int, down: bool = False):
        super().__init__()
        self.down = down
        inner = cout if down else cout // 2
        self.enter = conv_bn_prelu(cin, inner, 3, stride=2) if down else conv_bn_prelu(cin, inner, 1)
        self.local = nn.Conv2d(inner, inner, 3, padding=1, groups=inner, bias=False)
        self.surround = nn.Conv2d(inner, inner, 3, padding=dilation, dilation=dilation, groups=inner, bias=False)
        self.joint = bn_prelu(2 * inner)
        self.project = nn.Conv2d(2 * inner, cout, 1, bias=False) if down else nn.Identity()
        self.context = GlobalContext(cout, reduction)

    def forward(self, x):
        y = self.enter(x)
        y = self.context(self.project(self.joint(torch.cat([self.local(y), self.surround(y)], 1))))
        return y if self.down else x + y


def frame_at(x: torch.Tensor, times: int) -> torch.Tensor:
    """The input frame average-pooled ``times`` times by 2 (the input injection)."""
    for _ in range(times):
        x = F.avg_pool2d(x, 3, stride=2, padding=1)
    return x


class CGNet(nn.Module):
    def __init__(self, num_classes: int, m: int = 3, n: int = 21):
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn_prelu(3, 32, 3, stride=2), conv_bn_prelu(32, 32, 3),
                                    conv_bn_prelu(32, 32, 3))
        self.join1 = bn_prelu(32 + 3)
        self.down2 = CGBlock(35, 64, dilation=2, reduction=8, down=True)
        self.stage2 = nn.Sequential(*[CGBlock(64, 64, dilation=2, reduction=8) for _ in range(m - 1)])
        self.join2 = bn_prelu(64 + 64 + 3)
        self.down3 = CGBlock(131, 128, dilation=4, reduction=16, down=True)
        self.stage3 = nn.Sequential(*[CGBlock(128, 128, dilation=4, reduction=16) for _ in range(n - 1)])
        self.join3 = bn_prelu(128 + 128)
        self.classifier = nn.Conv2d(256, num_classes, 1, bias=True)

    def forward(self, x):
        y = self.join1(torch.cat([self.stage1(x), frame_at(x, 1)], 1))
        first = self.down2(y)
        y = self.join2(torch.cat([self.stage2(first), first, frame_at(x, 2)], 1))
        first = self.down3(y)
        y = self.join3(torch.cat([self.stage3(first), first], 1))
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model("cgnet")
def cgnet(num_classes: int) -> CGNet:
    return CGNet(num_classes)
