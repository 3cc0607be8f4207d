"""EDANet (Lo et al., "Efficient Dense Modules of Asymmetric Convolution for Real-Time
Semantic Segmentation", 2018): dense blocks of asymmetric convolutions, no decoder.

Not a seed paper: a candidate for more accuracy than the ESSNet family at under 1 M
parameters (published CamVid test 66.4). On ONNX Runtime's CPU kernels its 40-channel
convolutions are no faster per MAC than ESSNet's depthwise ones: measured at 1.7x ERFNet's
speed, not the default's 3x (docs/training.md, "EDANet").
Reconstructed from the paper's description (layer table and module), our own code:

=====  ==============================================  ====================
stage  layers                                          output (C x H x W)
=====  ==============================================  ====================
1      downsample (3x3 s2 conv + 2x2 max-pool concat)  15 x H/2 x W/2
2      downsample                                      60 x H/4 x W/4
3      EDA block 1: 5 modules, dilations 1,1,1,2,2     60 + 5 x 40 = 260
4      downsample (3x3 s2 conv alone: it narrows)      130 x H/8 x W/8
5      EDA block 2: 8 modules, dilations 2,2,4,4,      130 + 8 x 40 = 450
       8,8,16,16
6      1x1 projection to the classes, bilinear x8      C x H x W
=====  ==============================================  ====================

An EDA module: 1x1 conv to k = 40 channels (BN, ReLU), 3x1 then 1x3 conv (BN, ReLU after
the pair), the same pair dilated, dropout 0.02, and its output concatenated to its input
(dense connectivity: every module sees every earlier one's features). H and W must be
multiples of 8. The paper reports 0.68 M parameters.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BN_EPS, DownsamplerBlock, conv_bn
from .registry import register_model

GROWTH = 40


class EDAModule(nn.Module):
    def __init__(self, cin: int, dilation: int, growth: int = GROWTH, dropout: float = 0.02):
        super().__init__()
        d = dilation
        self.reduce = conv_bn(cin, growth, 1)
        self.v1 = nn.Conv2d(growth, growth, (3, 1), padding=(1, 0), bias=True)
        self.h1 = nn.Conv2d(growth, growth, (1, 3), padding=(0, 1), bias=False)
        self.bn1 = nn.BatchNorm2d(growth, eps=BN_EPS)
        self.v2 = nn.Conv2d(growth, growth, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.h2 = nn.Conv2d(growth, growth, (1, 3), padding=(0, d), dilation=(1, d), bias=False)
        self.bn2 = nn.BatchNorm2d(growth, eps=BN_EPS)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        y = self.reduce(x)
        y = F.relu(self.bn1(self.h1(self.v1(y))))
        y = F.relu(self.bn2(self.h2(self.v2(y))))
        return torch.cat([x, self.dropout(y)], 1)


def eda_block(cin: int, dilations) -> tuple:
    """Modules of growing width; returns (block, its output channels)."""
    mods = []
    for d in dilations:
        mods.append(EDAModule(cin, d))
        cin += GROWTH
    return nn.Sequential(*mods), cin


class EDANet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        block1, c1 = eda_block(60, (1, 1, 1, 2, 2))
        block2, c2 = eda_block(130, (2, 2, 4, 4, 8, 8, 16, 16))
        self.encoder = nn.Sequential(DownsamplerBlock(3, 15), DownsamplerBlock(15, 60), block1,
                                     conv_bn(c1, 130, 3, stride=2), block2)
        self.classifier = nn.Conv2d(c2, num_classes, 1, bias=True)

    def forward(self, x):
        y = self.classifier(self.encoder(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model("edanet")
def edanet(num_classes: int) -> EDANet:
    return EDANet(num_classes)
