"""VMamba (VSSM, Liu et al. 2024) with its SS2D core computed by ``ssops.cross_selective_scan``.

Two families, with the official implementation's parameter names and shapes
(MzeroMiko/VMamba, classification/models/vmamba.py), so its checkpoints load with strict=True:

- VMamba v2 (``vmamba_tiny_s1l8`` = VMamba-T, ``vmamba_small_s2l15``, ``vmamba_base_s2l15``,
  ``vmamba_tiny_s2l5``): channel-first (B, C, H, W) throughout, conv stem, conv downsampling,
  d_state 1, no z branch, an MLP in every block (official forward type "v05_noz").
- vanilla VMamba (``vanilla_vmamba_tiny/small/base``): channel-last (B, H, W, C), patch stem,
  patch merging, d_state 16, the multiplicative silu(z) branch, no MLP (forward type "v0").

SS2D: in_proj -> (split z) -> depthwise 3x3 conv -> silu -> cross_selective_scan (4 routes,
float32 out) -> out_norm -> (* silu(z)) -> out_proj.
"""
from __future__ import annotations

import functools
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

import ssops

from ._layers import (DropPath, LayerNorm2d, Linear2d, Permute, drop_path_rates, dt_bias_init,
                      s4d_real_A_log, trunc_normal_init)

K_ROUTES = 4


class SS2D(nn.Module):
    def __init__(self, dim, d_state, ssm_ratio, conv_bias, gated, channel_first, d_conv=3):
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        rank = math.ceil(dim / 16)
        Linear = Linear2d if channel_first else nn.Linear
        self.channel_first, self.gated, self.scan_backend = channel_first, gated, None
        self.in_proj = Linear(dim, d_inner * (2 if gated else 1), bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2,
                                groups=d_inner, bias=conv_bias)
        bound = d_inner ** -0.5  # nn.Linear's default init, one projection per route
        self.x_proj_weight = nn.Parameter(
            torch.empty(K_ROUTES, rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(
            torch.empty(K_ROUTES, d_inner, rank).uniform_(-rank ** -0.5, rank ** -0.5))
        self.dt_projs_bias = nn.Parameter(
            torch.stack([dt_bias_init(d_inner) for _ in range(K_ROUTES)]))
        self.A_logs = nn.Parameter(s4d_real_A_log(K_ROUTES * d_inner, d_state))
        self.Ds = nn.Parameter(torch.ones(K_ROUTES * d_inner))
        self.out_norm = (LayerNorm2d(d_inner, feeds_matmul=True) if channel_first
                         else nn.LayerNorm(d_inner))
        self.out_proj = Linear(d_inner, dim, bias=False)

    def forward(self, x):
        x = self.in_proj(x)
        if self.gated:
            x, z = x.chunk(2, dim=1 if self.channel_first else -1)
            z = F.silu(z)
        if not self.channel_first:
            x = x.permute(0, 3, 1, 2)
        x = F.silu(self.conv2d(x))
        y = ssops.cross_selective_scan(
            x, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs,
            self.Ds, out_dtype=torch.promote_types(x.dtype, torch.float32),  # half in, fp32 out
            backend=self.scan_backend)
        if not self.channel_first:
            y = y.permute(0, 2, 3, 1)
        y = self.out_norm(y).to(x.dtype)
        if self.gated:
            y = y * z
        return self.out_proj(y)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, channel_first):
        super().__init__()
        Linear = Linear2d if channel_first else nn.Linear
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    def __init__(self, dim, drop_path, norm, channel_first, d_state, ssm_ratio, conv_bias, gated,
                 mlp_ratio):
        super().__init__()
        self.norm = norm(dim)
        self.op = SS2D(dim, d_state, ssm_ratio, conv_bias, gated, channel_first)
        self.drop_path = DropPath(drop_path)
        self.mlp = None
        if mlp_ratio > 0:
            self.norm2 = norm(dim)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), channel_first)

    def forward(self, x):
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class PatchMerging2D(nn.Module):
    """Vanilla VMamba's downsampling (channel-last): 2x2 neighbours concatenated, norm, linear."""

    def __init__(self, dim, out_dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        H, W = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class VSSM(nn.Module):
    """``v2=True``: VMamba v2 (channel-first, conv stem and downsampling, MLP blocks, no z);
    ``v2=False``: vanilla VMamba (channel-last, patch stem, patch merging, gated SS2D only)."""

    def __init__(self, depths, dims, d_state, ssm_ratio, v2, mlp_ratio=4.0, num_classes=1000,
                 in_chans=3, drop_path_rate=0.1):
        super().__init__()
        dims = [dims * 2 ** i for i in range(len(depths))] if isinstance(dims, int) else dims
        self.channel_first = v2
        norm = LayerNorm2d if v2 else nn.LayerNorm
        # a block's norms feed only its in_proj / fc1
        block_norm = functools.partial(LayerNorm2d, feeds_matmul=True) if v2 else nn.LayerNorm
        keep = nn.Identity  # keeps the official Sequential indices (their permutes)
        if v2:
            self.patch_embed = nn.Sequential(
                nn.Conv2d(in_chans, dims[0] // 2, 3, 2, 1), keep(), norm(dims[0] // 2), keep(),
                nn.GELU(), nn.Conv2d(dims[0] // 2, dims[0], 3, 2, 1), keep(), norm(dims[0]))
        else:
            self.patch_embed = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, 4),
                                             Permute(0, 2, 3, 1), norm(dims[0]))
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            blocks = [VSSBlock(dims[i], rates[sum(depths[:i]) + j], block_norm, v2, d_state,
                               ssm_ratio, conv_bias=not v2, gated=not v2,
                               mlp_ratio=mlp_ratio if v2 else 0.0)
                      for j in range(depth)]
            if i == len(depths) - 1:
                down = nn.Identity()
            elif v2:
                down = nn.Sequential(keep(), nn.Conv2d(dims[i], dims[i + 1], 3, 2, 1), keep(),
                                     norm(dims[i + 1]))
            else:
                down = PatchMerging2D(dims[i], dims[i + 1])
            self.layers.append(nn.Sequential(OrderedDict(blocks=nn.Sequential(*blocks),
                                                         downsample=down)))
        self.classifier = nn.Sequential(OrderedDict(
            norm=norm(dims[-1]), permute=keep() if v2 else Permute(0, 3, 1, 2),
            avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
            head=nn.Linear(dims[-1], num_classes)))
        self.apply(trunc_normal_init)

    def forward(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(x)


# The official configurations (paper Tables 3 and 4): depths, dims, d_state, ssm_ratio, v2.
CONFIGS = {
    "vmamba_tiny_s1l8": ([2, 2, 8, 2], 96, 1, 1.0, True),
    "vmamba_small_s2l15": ([2, 2, 15, 2], 96, 1, 2.0, True),
    "vmamba_base_s2l15": ([2, 2, 15, 2], 128, 1, 2.0, True),
    "vmamba_tiny_s2l5": ([2, 2, 5, 2], 96, 1, 2.0, True),
    "vanilla_vmamba_tiny": ([2, 2, 9, 2], 96, 16, 2.0, False),
    "vanilla_vmamba_small": ([2, 2, 27, 2], 96, 16, 2.0, False),
    "vanilla_vmamba_base": ([2, 2, 27, 2], 128, 16, 2.0, False),
}


def vmamba(name, **kwargs):
    depths, dims, d_state, ratio, v2 = CONFIGS[name]
    return VSSM(depths, dims, d_state, ratio, v2, **kwargs)
