"""WSPD-Net (Table 4.2 of the ESSNet thesis, as the issue cites it): ERFNet's
layout with wider receptive fields at a small budget: Non-bt-1D layers with
3-tap (3K) and 5-tap (5K) factorised kernels at 1/4 resolution, and DWS-Dil
layers (four parallel dilations in one residual layer, ``layers.DWSDilBlock``)
at 1/8.

Table 4.2 itself could not be retrieved here; this is a reconstruction within
the stated design, checked against the thesis's size figure (0.67 M
parameters, 20 classes: Cityscapes 19 + void):

====================================  ==========  ==========
layer                                 out ch      resolution
====================================  ==========  ==========
downsampler (conv 3x3 s2 || maxpool)  16          1/2
downsampler                           64          1/4
Non-bt-1D 3K x3, then 5K x2           64          1/4
downsampler                           128         1/8
DWS-Dil, dilations (1,2,4,8) x4       128         1/8
DWS-Dil, dilations (2,4,8,16) x4      128         1/8
1x1 upsampling + Non-bt-1D 3K         64          1/4
1x1 upsampling + Non-bt-1D 3K         16          1/2
transposed conv 2x2 s2 (classifier)   classes     1/1
====================================  ==========  ==========

This layout counts 699,648 parameters (+4.4 %) and 15.28 G MACs at
1024x512 (no MAC figure to compare with). The decoder uses ESSNet's cheap
"1x1 upsampling" (the thesis's later chapters build on the final ESSNet).
``.encoder`` gives 128 channels at 1/8; H and W must be multiples of 8.
"""
from __future__ import annotations

import torch.nn as nn

from .layers import DownsamplerBlock, DWSDilBlock, NonBottleneck1DK, PointwiseUpsampler
from .registry import register_model


class WSPDNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        enc = [DownsamplerBlock(3, 16), DownsamplerBlock(16, 64)]
        enc += [NonBottleneck1DK(64, 0.03, 1, kernel=3) for _ in range(3)]
        enc += [NonBottleneck1DK(64, 0.03, 1, kernel=5) for _ in range(2)]
        enc.append(DownsamplerBlock(64, 128))
        enc += [DWSDilBlock(128, 0.3, (1, 2, 4, 8)) for _ in range(4)]
        enc += [DWSDilBlock(128, 0.3, (2, 4, 8, 16)) for _ in range(4)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(
            PointwiseUpsampler(128, 64), NonBottleneck1DK(64, 0.0, 1, kernel=3),
            PointwiseUpsampler(64, 16), NonBottleneck1DK(16, 0.0, 1, kernel=3),
        )
        self.classifier = nn.ConvTranspose2d(16, num_classes, 2, stride=2, bias=True)

    def forward(self, x):
        return self.classifier(self.decoder(self.encoder(x)))


@register_model("wspdnet")
def wspdnet(num_classes: int) -> WSPDNet:
    return WSPDNet(num_classes)
