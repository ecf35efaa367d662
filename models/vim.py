"""Vision Mamba (Vim, Zhu et al. 2024) with both scan directions computed by one
``ssops.bidirectional_scan``.

Parameter names and shapes follow the official implementation (hustvl/Vim,
vim/models_mamba.py, "bimamba v2" with the class token in the middle and the two directions
averaged), so its checkpoints load with strict=True.

Vim's mixer, per its fused path (``mamba_inner_fn_no_out_proj`` on xz and on xz flipped):
x, z = in_proj(h); direction 0 runs a causal depthwise conv (conv1d), direction 1 the same on
the reversed sequence (conv1d_b), each with its own x_proj / dt_proj / A / D; the two scans'
outputs, direction 1 read back in position order, are averaged and gated by silu(z);
then out_proj.  Here direction 1's conv is an anti-causal conv in place and the scan runs
in reverse over the same memory: no flipped copies.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import ssops

from ._layers import DropPath, at_least_fp32, drop_path_rates, dt_bias_init, s4d_real_A_log


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32, returned in ``dtype`` (default x's)."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, dtype=None):
        xf = at_least_fp32(x)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return y.to(dtype or x.dtype)


def _dt_proj(rank, d_inner):
    dt_proj = nn.Linear(rank, d_inner)
    nn.init.uniform_(dt_proj.weight, -rank ** -0.5, rank ** -0.5)
    with torch.no_grad():
        dt_proj.bias.copy_(dt_bias_init(d_inner))
    return dt_proj


class BiMamba(nn.Module):
    def __init__(self, dim, d_state=16, expand=2, d_conv=4):
        super().__init__()
        d_inner, rank = expand * dim, math.ceil(dim / 16)
        self.d_state, self.rank, self.scan_backend = d_state, rank, None
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        # one of each per direction; "_b": direction 1
        self.A_log, self.A_b_log = (nn.Parameter(s4d_real_A_log(d_inner, d_state))
                                    for _ in range(2))
        self.D, self.D_b = (nn.Parameter(torch.ones(d_inner)) for _ in range(2))
        self.conv1d, self.conv1d_b = (nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner,
                                                padding=d_conv - 1) for _ in range(2))
        self.x_proj, self.x_proj_b = (nn.Linear(d_inner, rank + 2 * d_state, bias=False)
                                      for _ in range(2))
        self.dt_proj, self.dt_proj_b = (_dt_proj(rank, d_inner) for _ in range(2))
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def _direction(self, x, conv, x_proj, dt_proj, reverse):
        """silu(conv(x)) (causal, or anti-causal in reverse) and its delta, B, C, all in
        position order: (batch, d_inner, L), (batch, d_inner, L), (batch, N, L) x 2."""
        L, k = x.shape[-1], conv.kernel_size[0]
        if reverse:  # out[t] = sum_i w[k-1-i] x[t+i]: the causal conv of the reversed sequence
            x = F.conv1d(x, conv.weight.flip(-1), conv.bias, padding=k - 1,
                         groups=conv.groups)[..., k - 1:]
        else:
            x = conv(x)[..., :L]
        x = F.silu(x)
        x_dbl = x_proj(x.transpose(1, 2))  # (batch, L, rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)  # its bias goes in as delta_bias
        return x, delta, B.transpose(1, 2), C.transpose(1, 2)

    def forward(self, h):
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)
        fwd = self._direction(x, self.conv1d, self.x_proj, self.dt_proj, False)
        bwd = self._direction(x, self.conv1d_b, self.x_proj_b, self.dt_proj_b, True)
        u, delta, B, C = (torch.stack(pair) for pair in zip(fwd, bwd))
        A = -torch.exp(at_least_fp32(torch.stack([self.A_log, self.A_b_log])))
        D = at_least_fp32(torch.stack([self.D, self.D_b]))
        delta_bias = at_least_fp32(torch.stack([self.dt_proj.bias, self.dt_proj_b.bias]))
        y = ssops.bidirectional_scan(u, delta, A, B, C, D, z.contiguous(), delta_bias,
                                     delta_softplus=True, combine="mean",
                                     backend=self.scan_backend)
        return self.out_proj(y.transpose(1, 2))


class Block(nn.Module):
    """Pre-norm residual block; the residual stream is kept in float32 (Vim's residual_in_fp32)."""

    def __init__(self, dim, drop_path=0.0, d_state=16):
        super().__init__()
        self.mixer = BiMamba(dim, d_state)
        self.norm = RMSNorm(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, h, residual):
        dtype, h = h.dtype, at_least_fp32(h)
        residual = h if residual is None else residual + self.drop_path(h)
        return self.mixer(self.norm(residual, dtype)), residual


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionMamba(nn.Module):
    def __init__(self, dim, depth, num_classes=1000, img_size=224, patch_size=16, in_chans=3,
                 drop_path_rate=0.0, d_state=16):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, in_chans, dim)
        num_patches = (img_size // patch_size) ** 2
        self.cls_position = num_patches // 2  # the class token sits in the middle
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        rates = drop_path_rates(drop_path_rate, depth)
        self.layers = nn.ModuleList(Block(dim, rate, d_state) for rate in rates)
        self.drop_path = DropPath(rates[-1] if depth else 0.0)
        self.norm_f = RMSNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights(depth)

    def _init_weights(self, depth):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        for layer in self.layers:  # GPT-2 style: residual output projections / sqrt(depth)
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(depth)

    def forward(self, x):
        x = self.patch_embed(x)
        p = self.cls_position
        x = torch.cat([x[:, :p], self.cls_token.expand(x.shape[0], -1, -1), x[:, p:]], dim=1)
        h, residual = x + self.pos_embed, None
        for layer in self.layers:
            h, residual = layer(h, residual)
        h = self.norm_f(residual + self.drop_path(at_least_fp32(h)), h.dtype)
        return self.head(h[:, p])


# name -> (dim, depth): Vim-Ti / S / B, patch 16, 224 x 224
CONFIGS = {"vim_tiny": (192, 24), "vim_small": (384, 24), "vim_base": (768, 24)}


def vim(name, **kwargs):
    dim, depth = CONFIGS[name]
    return VisionMamba(dim, depth, **kwargs)
