"""Vim's bidirectional scan.  Sequences that fit in one tile: both directions in one launch of
the fused kernel, summed and gated in registers, y written once.  Longer ones: two launches of
the chunked kernel over the same memory, the second running in reverse and adding into the
first one's float32 result (ssops._routes)."""
from __future__ import annotations

import torch

from ssops import _routes
from ssops._routes import cast

from . import launch
from .launch import fused_bwd, fused_fwd, fused_tile

FLAGS = _routes.ROUTE_FLAGS["bidi"]


def bidirectional_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, out_dtype):
    L = u.shape[-1]
    if not fused_tile(1, L):
        return _routes.bidirectional_scan_fwd(launch, u, delta, A, B, C, D, z, delta_bias,
                                              delta_softplus, combine, out_dtype)
    u, delta, A, D, delta_bias, z = _routes.bidirectional_inputs(u, delta, A, D, delta_bias, z)
    y = torch.empty(u.shape[1:], device=u.device, dtype=out_dtype)
    fused_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, y, flags=FLAGS, H=1, W=L,
              y_scale=0.5 if combine == "mean" else 1.0)
    return y


def bidirectional_scan_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine):
    L = u.shape[-1]
    if not fused_tile(1, L):
        return _routes.bidirectional_scan_bwd(launch, dy, u, delta, A, B, C, D, z, delta_bias,
                                              delta_softplus, combine)
    u, delta, A, D, delta_bias, z = _routes.bidirectional_inputs(u, delta, A, D, delta_bias, z)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    dA, dB, dC, dD, dbias = fused_bwd(dy.contiguous(), u, delta, A, B, C, D, z, delta_bias,
                                      delta_softplus, du, ddelta, dz, flags=FLAGS, H=1, W=L,
                                      y_scale=0.5 if combine == "mean" else 1.0)
    return (du, ddelta, cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D), dz,
            cast(dbias, delta_bias))
