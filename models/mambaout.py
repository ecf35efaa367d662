"""MambaOut (Yu & Wang, 2024): Gated CNN blocks without the state-space scan -- the control
model.  Parameter names and shapes follow the official implementation (yuweihao/MambaOut,
models/mambaout.py), so its checkpoints load with strict=True.  Channel-last (B, H, W, C)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._layers import DropPath, drop_path_rates, trunc_normal_init

EPS = 1e-6  # every LayerNorm of MambaOut


def _conv_channels_last(conv, x):
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class StemLayer(nn.Module):
    """Two stride-2 3x3 convs (/4), LayerNorm after each, GELU between."""

    def __init__(self, in_chans, dim):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, 2, 1)
        self.norm1 = nn.LayerNorm(dim // 2, eps=EPS)
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, 2, 1)
        self.norm2 = nn.LayerNorm(dim, eps=EPS)

    def forward(self, x):
        x = F.gelu(self.norm1(self.conv1(x).permute(0, 2, 3, 1)))
        return self.norm2(_conv_channels_last(self.conv2, x))


class DownsampleLayer(nn.Module):
    def __init__(self, dim, out_dim):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.norm = nn.LayerNorm(out_dim, eps=EPS)

    def forward(self, x):
        return self.norm(_conv_channels_last(self.conv, x))


class GatedCNNBlock(nn.Module):
    """x + fc2(gelu(g) * cat(i, dwconv7x7(c))), with (g, i, c) = fc1(norm(x)) split into
    hidden, hidden - dim and dim channels (expansion 8/3)."""

    def __init__(self, dim, drop_path=0.0, expansion=8 / 3, kernel_size=7):
        super().__init__()
        hidden = int(expansion * dim)
        self.split = (hidden, hidden - dim, dim)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split, dim=-1)
        y = self.fc2(F.gelu(g) * torch.cat([i, _conv_channels_last(self.conv, c)], dim=-1))
        return x + self.drop_path(y)


class MlpHead(nn.Module):
    def __init__(self, dim, num_classes, ratio=4):
        super().__init__()
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.norm = nn.LayerNorm(ratio * dim, eps=EPS)
        self.fc2 = nn.Linear(ratio * dim, num_classes)

    def forward(self, x):
        return self.fc2(self.norm(F.gelu(self.fc1(x))))


class MambaOut(nn.Module):
    def __init__(self, depths, dims, num_classes=1000, in_chans=3, drop_path_rate=0.0):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [StemLayer(in_chans, dims[0])]
            + [DownsampleLayer(dims[i], dims[i + 1]) for i in range(len(dims) - 1)])
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList(
            nn.Sequential(*(GatedCNNBlock(dims[i], rates[sum(depths[:i]) + j])
                            for j in range(depth)))
            for i, depth in enumerate(depths))
        self.norm = nn.LayerNorm(dims[-1], eps=EPS)
        self.head = MlpHead(dims[-1], num_classes)
        self.apply(trunc_normal_init)

    def forward(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.head(self.norm(x.mean((1, 2))))


# name -> (depths, dims), the paper's Table 4 (and "kobe": Femto's widths, deeper stage 3)
CONFIGS = {
    "mambaout_femto": ([3, 3, 9, 3], [48, 96, 192, 288]),
    "mambaout_kobe": ([3, 3, 15, 3], [48, 96, 192, 288]),
    "mambaout_tiny": ([3, 3, 9, 3], [96, 192, 384, 576]),
    "mambaout_small": ([3, 4, 27, 3], [96, 192, 384, 576]),
    "mambaout_base": ([3, 4, 27, 3], [128, 256, 512, 768]),
}


def mambaout(name, **kwargs):
    depths, dims = CONFIGS[name]
    return MambaOut(depths, dims, **kwargs)
