"""The SS2D core.  Grids that fit in one tile: all routes in one launch of the fused kernel
(row-major and column-major walks of the same tile), summed in registers, y written once.
Larger grids: one chunked launch per route (ssops._routes)."""
from __future__ import annotations

import torch

from ssops import _routes
from ssops._routes import ROUTE_FLAGS, cast, natural_view
from ssops.validation import grid

from . import launch
from .launch import fused_bwd, fused_fwd, fused_tile


def _stacked(xn, delta, A, B, C, D, delta_bias):
    """Route-stacked views for the fused kernels (x shared by the routes: route stride 0)."""
    K, Cn = delta.shape[1], xn.shape[1]
    view = lambda t: None if t is None else t.view(K, Cn)  # noqa: E731
    return (xn.unsqueeze(0).expand(K, *xn.shape), delta.transpose(0, 1), A.view(K, Cn, -1),
            B.transpose(0, 1), C.transpose(0, 1), view(D), view(delta_bias))


def cross_selective_scan_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes,
                             out_dtype):
    H, W = grid(x, layout)[2:]
    if not fused_tile(H, W):
        return _routes.cross_selective_scan_fwd(launch, x, delta, A, B, C, D, delta_bias,
                                                delta_softplus, layout, routes, out_dtype)
    x, delta, A, B, C, D, delta_bias = _routes.cross_inputs(x, delta, A, B, C, D, delta_bias)
    y = torch.empty_like(x, dtype=out_dtype)
    us, ds, As, Bs, Cs, Ds, bs = _stacked(natural_view(x, layout), delta, A, B, C, D, delta_bias)
    fused_fwd(us, ds, As, Bs, Cs, Ds, None, bs, delta_softplus, natural_view(y, layout),
              flags=ROUTE_FLAGS[routes], H=H, W=W)
    return y


def cross_selective_scan_bwd(dy, x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes):
    H, W = grid(x, layout)[2:]
    if not fused_tile(H, W):
        return _routes.cross_selective_scan_bwd(launch, dy, x, delta, A, B, C, D, delta_bias,
                                                delta_softplus, layout, routes)
    x, delta, A, B, C, D, delta_bias = _routes.cross_inputs(x, delta, A, B, C, D, delta_bias)
    dx = torch.empty_like(x)
    ddelta = torch.empty_like(delta)
    us, ds, As, Bs, Cs, Ds, bs = _stacked(natural_view(x, layout), delta, A, B, C, D, delta_bias)
    dxs = natural_view(dx, layout).unsqueeze(0).expand(us.shape)
    dA, dB, dC, dD, dbias = fused_bwd(natural_view(dy.contiguous(), layout), us, ds, As, Bs, Cs,
                                      Ds, None, bs, delta_softplus, dxs, ddelta.transpose(0, 1),
                                      None, flags=ROUTE_FLAGS[routes], H=H, W=W)
    flat = lambda g: None if g is None else g.flatten(0, 1)  # noqa: E731
    return (dx, ddelta, cast(flat(dA), A), cast(dB.transpose(0, 1), B),
            cast(dC.transpose(0, 1), C), cast(flat(dD), D), cast(flat(dbias), delta_bias))
