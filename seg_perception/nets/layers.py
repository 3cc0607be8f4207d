"""Building blocks shared by the networks of the zoo."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3  # ERFNet's value; kept for every net so weights behave alike in fp16


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, relu: bool = True,
            padding=None) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU); padding defaults to 'same' for odd k."""
    pad = k // 2 if padding is None else padding
    layers = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of x to ref's spatial size."""
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


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
        if torch.onnx.is_in_onnx_export():
            return self.as_conv(x)
        n, c, h, w = x.shape
        g = self.groups
        return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)

    def as_conv(self, x):
        """The same permutation as a 1x1 conv with a 0/1 weight matrix, which is exact. In ONNX
        the reshape-transpose-reshape makes ONNX Runtime's CPU convs change memory layout around
        every shuffle, and keeps the residual add and ReLU that follow out of the conv; the conv
        fuses with them (rdsnet 1.15-1.19x faster on an AVX-512 Xeon, docs/performance.md)."""
        c = int(x.shape[1])  # static in every graph we export (only batch, height, width vary)
        source = torch.arange(c).reshape(self.groups, c // self.groups).t().reshape(-1)
        weight = torch.zeros(c, c, 1, 1, dtype=x.dtype, device=x.device)
        weight[torch.arange(c), source] = 1
        return F.conv2d(x, weight)


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


# ---- blocks added for the rest of the zoo (WSPD-Net, RDS-Net) ----


class NonBottleneck1DK(nn.Module):
    """Non-bt-1D with ``kernel``-tap factorised convs (WSPD-Net's 3K and 5K layers)."""

    def __init__(self, ch: int, dropout: float, dilation: int, kernel: int = 3):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {kernel}")
        k, p, d = kernel, kernel // 2, dilation
        self.conv_v1 = nn.Conv2d(ch, ch, (k, 1), padding=(p, 0), bias=True)
        self.conv_h1 = nn.Conv2d(ch, ch, (1, k), padding=(0, p), bias=True)
        self.bn1 = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.conv_v2 = nn.Conv2d(ch, ch, (k, 1), padding=(p * d, 0), dilation=(d, 1), bias=True)
        self.conv_h2 = nn.Conv2d(ch, ch, (1, k), padding=(0, p * d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv_h1(F.relu(self.conv_v1(x)))))
        y = self.bn2(self.conv_h2(F.relu(self.conv_v2(y))))
        return F.relu(self.dropout(y) + x)


class DWSDilBlock(nn.Module):
    """WSPD-Net's DWS-Dil layer: four parallel dilations inside one residual layer.

    A pointwise conv mixes the channels, the result is split in four groups that
    each get a depthwise 3x3 conv at its own dilation (one depthwise conv with
    per-group dilation is four convs), and a second pointwise conv fuses them.
    """

    def __init__(self, ch: int, dropout: float, dilations=(1, 2, 4, 8)):
        super().__init__()
        n = len(dilations)
        if ch % n:
            raise ValueError(f"{ch} channels cannot be split into {n} dilation branches")
        self.split = ch // n
        self.pw_in = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn_in = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.branches = nn.ModuleList(
            nn.Conv2d(self.split, self.split, 3, padding=d, dilation=d, groups=self.split, bias=False)
            for d in dilations)
        self.bn_mid = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.pw_out = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn_out = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn_in(self.pw_in(x)))
        parts = torch.split(y, self.split, dim=1)
        y = F.relu(self.bn_mid(torch.cat([b(p) for b, p in zip(self.branches, parts)], 1)))
        y = self.bn_out(self.pw_out(y))
        return F.relu(self.dropout(y) + x)


class IBN(nn.Module):
    """IBN-Net's mixed normalisation (Pan et al. 2018, "IBN-a"): instance norm over the first
    half of the channels, batch norm over the rest. Instance norm takes each frame's own
    statistics, which removes appearance (lighting, colour) that differs between drives while
    batch norm keeps what tells classes apart."""

    def __init__(self, ch: int):
        super().__init__()
        self.half = ch // 2
        self.inorm = nn.InstanceNorm2d(self.half, eps=BN_EPS, affine=True)
        self.bn = nn.BatchNorm2d(ch - self.half, eps=BN_EPS)

    def forward(self, x):
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], 1)
        return torch.cat([self.inorm(a), self.bn(b)], 1)


class RDSBlock(nn.Module):
    """RDS-Net's residual layer: depthwise 3x3 (dilated), grouped 3x3 conv, BN (or IBN),
    channel shuffle (g=4), dropout, identity shortcut."""

    def __init__(self, ch: int, dropout: float, dilation: int, groups: int = 4, ibn: bool = False):
        super().__init__()
        if ch % groups:
            raise ValueError(f"{ch} channels cannot be split into {groups} groups")
        d = dilation
        self.dw = nn.Conv2d(ch, ch, 3, padding=d, dilation=d, groups=ch, bias=False)
        self.conv = nn.Conv2d(ch, ch, 3, padding=1, groups=groups, bias=False)
        self.bn = IBN(ch) if ibn else nn.BatchNorm2d(ch, eps=BN_EPS)
        self.shuffle = ChannelShuffle(groups)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        y = self.shuffle(F.relu(self.bn(self.conv(self.dw(x)))))
        return F.relu(self.dropout(y) + x)
