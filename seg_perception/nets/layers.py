"""Building blocks shared by the networks of the zoo."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3  # ERFNet's value; kept for every net so weights behave alike in fp16


class DownsamplerBlock(nn.Module):
    """ERFNet/ENet downsampler: strided 3x3 conv concatenated with 2x2 max-pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        if cout <= cin:
            raise ValueError("downsampler must widen the channels")
        self.conv = nn.Conv2d(cin, cout - cin, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class UpsamplerBlock(nn.Module):
    """ERFNet upsampler: 3x3 transposed conv, stride 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=True)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class PointwiseUpsampler(nn.Module):
    """ESSNet "1x1 upsampling": 1x1 conv to the new width, then bilinear x2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=True)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class NonBottleneck1D(nn.Module):
    """ERFNet's residual block: two factorised (3x1, 1x3) pairs, the second dilated."""

    def __init__(self, ch: int, dropout: float, dilation: int):
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(ch, ch, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(ch, ch, (1, 3), padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.conv3x1_2 = nn.Conv2d(ch, ch, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(ch, ch, (1, 3), padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        y = self.bn2(self.conv1x3_2(y))
        return F.relu(self.dropout(y) + x)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: lets grouped 1x1 convs exchange information."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        g = self.groups
        return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


def pointwise(ch: int, groups: int) -> nn.Conv2d:
    if ch % groups:
        raise ValueError(f"{ch} channels cannot be split into {groups} groups")
    return nn.Conv2d(ch, ch, 1, groups=groups, bias=True)


class SeparableBlock(nn.Module):
    """ESSNet's D layer and its grouped variants (DGC, DGCS).

    Each factorised pair of the ERFNet block becomes depthwise 3x1 -> depthwise
    1x3 -> pointwise 1x1. ``groups`` > 1 makes the pointwise convs grouped (DGC)
    and ``shuffle`` adds a channel shuffle after each of them (DGCS).
    """

    def __init__(self, ch: int, dropout: float, dilation: int, groups: int = 1, shuffle: bool = False):
        super().__init__()
        d = dilation
        self.dw3x1_1 = nn.Conv2d(ch, ch, (3, 1), padding=(1, 0), groups=ch, bias=True)
        self.dw1x3_1 = nn.Conv2d(ch, ch, (1, 3), padding=(0, 1), groups=ch, bias=True)
        self.pw_1 = pointwise(ch, groups)
        self.bn1 = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.dw3x1_2 = nn.Conv2d(ch, ch, (3, 1), padding=(d, 0), dilation=(d, 1), groups=ch, bias=True)
        self.dw1x3_2 = nn.Conv2d(ch, ch, (1, 3), padding=(0, d), dilation=(1, d), groups=ch, bias=True)
        self.pw_2 = pointwise(ch, groups)
        self.bn2 = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.shuffle = ChannelShuffle(groups) if (shuffle and groups > 1) else nn.Identity()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        y = F.relu(self.dw3x1_1(x))
        y = self.shuffle(self.pw_1(self.dw1x3_1(y)))
        y = F.relu(self.bn1(y))
        y = F.relu(self.dw3x1_2(y))
        y = self.shuffle(self.pw_2(self.dw1x3_2(y)))
        y = self.bn2(y)
        return F.relu(self.dropout(y) + x)
