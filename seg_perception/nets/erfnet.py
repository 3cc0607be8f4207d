"""ERFNet (Romera et al., T-ITS 2018): the reference baseline of the zoo.

Layer table of the paper: downsamplers 3->16->64, five non-bottleneck-1D blocks
at 64, downsampler to 128, two rounds of non-bottleneck-1D at dilations 2, 4, 8,
16, then a decoder of two transposed-conv upsamplers (128->64->16) each followed
by two non-bottleneck-1D blocks, and a 2x2 transposed-conv classifier.
About 2.06 M parameters for 20 classes.
"""
from __future__ import annotations

import torch.nn as nn

from .layers import DownsamplerBlock, NonBottleneck1D, UpsamplerBlock
from .registry import register_model


def erfnet_encoder(block=NonBottleneck1D, **block_kwargs) -> nn.Sequential:
    """The ERFNet encoder, with ``block`` as its residual layer (ESSNet swaps it)."""
    layers = [DownsamplerBlock(3, 16), DownsamplerBlock(16, 64)]
    layers += [block(64, 0.03, 1, **block_kwargs) for _ in range(5)]
    layers.append(DownsamplerBlock(64, 128))
    for _ in range(2):
        layers += [block(128, 0.3, d, **block_kwargs) for d in (2, 4, 8, 16)]
    return nn.Sequential(*layers)


class ERFNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.encoder = erfnet_encoder()
        self.decoder = nn.Sequential(
            UpsamplerBlock(128, 64), NonBottleneck1D(64, 0.0, 1), NonBottleneck1D(64, 0.0, 1),
            UpsamplerBlock(64, 16), NonBottleneck1D(16, 0.0, 1), NonBottleneck1D(16, 0.0, 1),
        )
        self.classifier = nn.ConvTranspose2d(16, num_classes, 2, stride=2, bias=True)

    def forward(self, x):
        return self.classifier(self.decoder(self.encoder(x)))


@register_model("erfnet")
def erfnet(num_classes: int) -> ERFNet:
    return ERFNet(num_classes)
