"""ESSNet (Vallurapalli et al., "Efficient Semantic Segmentation using Gradual
Grouping", CVPR-W 2018, and the ESSNet thesis): ERFNet made cheap.

The final ESSNet keeps ERFNet's encoder layout but every residual layer is a
"conv module" built from depthwise separable convolutions (layer D, see
``layers.SeparableBlock``); the decoder uses the same modules and replaces the
transposed-conv upsamplers with "1x1 upsampling" (1x1 conv + bilinear x2).
Variants ``essnet_dg2``/``essnet_dg4`` make the encoder's pointwise convs
grouped (G=2, 4); the thesis groups only the encoder, which is why its
parameter drop D -> DG2 (151,552) equals half the encoder's 1x1 weights.

Design choices where the text is open (documented, not guessed silently):
the decoder has two modules at 64 and two at 16 channels as ERFNet's, and the
classifier is ERFNet's 2x2 transposed conv.
"""
from __future__ import annotations

import torch.nn as nn

from .erfnet import erfnet_encoder
from .layers import PointwiseUpsampler, SeparableBlock
from .registry import register_model


class ESSNet(nn.Module):
    def __init__(self, num_classes: int, groups: int = 1, shuffle: bool = False):
        super().__init__()
        self.encoder = erfnet_encoder(SeparableBlock, groups=groups, shuffle=shuffle)
        self.decoder = nn.Sequential(
            PointwiseUpsampler(128, 64), SeparableBlock(64, 0.0, 1), SeparableBlock(64, 0.0, 1),
            PointwiseUpsampler(64, 16), SeparableBlock(16, 0.0, 1), SeparableBlock(16, 0.0, 1),
        )
        self.classifier = nn.ConvTranspose2d(16, num_classes, 2, stride=2, bias=True)

    def forward(self, x):
        return self.classifier(self.decoder(self.encoder(x)))


@register_model("essnet_d")
def essnet_d(num_classes: int) -> ESSNet:
    return ESSNet(num_classes)


@register_model("essnet_dg2")
def essnet_dg2(num_classes: int) -> ESSNet:
    return ESSNet(num_classes, groups=2)


@register_model("essnet_dg4")
def essnet_dg4(num_classes: int) -> ESSNet:
    return ESSNet(num_classes, groups=4)
