"""``mamba_ssm.ops.selective_scan_interface`` on ssops: same signatures, same results."""
from __future__ import annotations

import torch.nn.functional as F

from .. import functional


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    """As mamba_ssm's: y (batch, dim, L), or (y, last_state) with ``return_last_state``."""
    return functional.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                     return_last_state)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """mamba_ssm's pure-PyTorch reference: ssops' reference backend."""
    return functional.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                     return_last_state, backend="reference")


def causal_conv1d_silu(x, weight, bias):
    """Depthwise causal conv over the last axis then SiLU; weight (dim, 1, width)."""
    width = weight.shape[-1]
    return F.silu(F.conv1d(x, weight, bias, padding=width - 1, groups=x.shape[1])[..., :x.shape[-1]])


def mamba_inner_fn_no_out_proj(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                               A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                               C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1):
    """Mamba's inner block without the output projection (what Vim calls per direction):
    x, z = xz.chunk(2, dim=1); x = silu(causal_conv1d(x)); delta, B, C from x_proj(x);
    delta = delta_proj(delta); y = selective_scan(x, delta, A, B, C, D, z, delta_bias).
    ``checkpoint_lvl`` is accepted for compatibility (ssops recomputes states anyway)."""
    L = xz.shape[-1]
    rank, d_state = delta_proj_weight.shape[1], A.shape[-1]
    x, z = xz.chunk(2, dim=1)
    x = causal_conv1d_silu(x, conv1d_weight, conv1d_bias)
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)                   # (batch, L, rank+2N)
    delta = F.linear(x_dbl[..., :rank], delta_proj_weight).transpose(1, 2)
    if B is None:
        B = x_dbl[..., rank:rank + d_state]
        B = (B if B_proj_bias is None else B + B_proj_bias.to(B.dtype)).transpose(1, 2)
    if C is None:
        C = x_dbl[..., -d_state:]
        C = (C if C_proj_bias is None else C + C_proj_bias.to(C.dtype)).transpose(1, 2)
    return functional.selective_scan(x, delta, A, B, C, D, z, delta_bias, delta_softplus)


__all__ = ["selective_scan_fn", "selective_scan_ref", "mamba_inner_fn_no_out_proj"]
