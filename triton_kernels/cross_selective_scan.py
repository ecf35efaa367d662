"""The SS2D core.  Grids that fit in one tile: all routes in one launch of the fused kernel
(row-major and column-major walks of the same tile), summed in registers, y written once.
Larger grids: one chunked launch per route, reading x, delta, B, C in place through the
route's index map and adding into one float32 output."""
from __future__ import annotations

import torch

from ssops.validation import grid

from .cross_scan import ROUTE_FLAGS, natural_view
from .launch import fused_bwd, fused_fwd, fused_tile, scan_bwd, scan_fwd
from .selective_scan import _c, _cast


def _route_params(k, C, A, D, bias):
    rows = slice(k * C, (k + 1) * C)
    return A[rows], None if D is None else D[rows], None if bias is None else bias[rows]


def _inputs(x, delta, A, B, C, D, delta_bias):
    return (x.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
            _c(D), _c(delta_bias))


def _stacked(xn, delta, A, B, C, D, delta_bias):
    """Route-stacked views for the fused kernels (x shared by the routes: route stride 0)."""
    K, Cn = delta.shape[1], xn.shape[1]
    view = lambda t: None if t is None else t.view(K, Cn)  # noqa: E731
    return (xn.unsqueeze(0).expand(K, *xn.shape), delta.transpose(0, 1), A.view(K, Cn, -1),
            B.transpose(0, 1), C.transpose(0, 1), view(D), view(delta_bias))


def cross_selective_scan_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes,
                             out_dtype):
    x, delta, A, B, C, D, delta_bias = _inputs(x, delta, A, B, C, D, delta_bias)
    H, W = grid(x, layout)[2:]
    xn = natural_view(x, layout)
    y = torch.empty_like(x, dtype=out_dtype)
    yn = natural_view(y, layout)
    flags = ROUTE_FLAGS[routes]
    if fused_tile(H, W):
        us, ds, As, Bs, Cs, Ds, bs = _stacked(xn, delta, A, B, C, D, delta_bias)
        fused_fwd(us, ds, As, Bs, Cs, Ds, None, bs, delta_softplus, yn, flags=flags, H=H, W=W)
        return y
    Cn = xn.shape[1]
    acc = natural_view(torch.empty_like(x, dtype=torch.float32), layout)
    last = torch.empty(xn.shape[0], Cn, A.shape[1], device=x.device, dtype=torch.float32)
    for k, (rev, tr) in enumerate(flags):
        Ak, Dk, bk = _route_params(k, Cn, A, D, delta_bias)
        scan_fwd(xn, delta[:, k], Ak, B[:, k], C[:, k], Dk, None, bk, delta_softplus,
                 yn if k == len(flags) - 1 else acc, last, y_in=acc if k else None,
                 reverse=rev, transpose=tr, H=H, W=W)
    return y


def cross_selective_scan_bwd(dy, x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes):
    x, delta, A, B, C, D, delta_bias = _inputs(x, delta, A, B, C, D, delta_bias)
    H, W = grid(x, layout)[2:]
    xn, dyn = natural_view(x, layout), natural_view(dy.contiguous(), layout)
    dx = torch.empty_like(x)
    ddelta = torch.empty_like(delta)
    flags = ROUTE_FLAGS[routes]
    if fused_tile(H, W):
        us, ds, As, Bs, Cs, Ds, bs = _stacked(xn, delta, A, B, C, D, delta_bias)
        dxs = natural_view(dx, layout).unsqueeze(0).expand(us.shape)
        dA, dB, dC, dD, dbias = fused_bwd(dyn, us, ds, As, Bs, Cs, Ds, None, bs, delta_softplus,
                                          dxs, ddelta.transpose(0, 1), None, flags=flags, H=H,
                                          W=W)
        flat = lambda g: None if g is None else g.flatten(0, 1)  # noqa: E731
        return (dx, ddelta, _cast(flat(dA), A), _cast(dB.transpose(0, 1), B),
                _cast(dC.transpose(0, 1), C), _cast(flat(dD), D), _cast(flat(dbias), delta_bias))
    Cn = xn.shape[1]
    acc = natural_view(torch.empty_like(x, dtype=torch.float32), layout)
    parts = []
    for k, (rev, tr) in enumerate(flags):
        Ak, Dk, bk = _route_params(k, Cn, A, D, delta_bias)
        parts.append(scan_bwd(dyn, None, xn, delta[:, k], Ak, B[:, k], C[:, k], Dk, None, bk,
                              delta_softplus,
                              natural_view(dx, layout) if k == len(flags) - 1 else acc,
                              ddelta[:, k], None, du_in=acc if k else None, reverse=rev,
                              transpose=tr, H=H, W=W))
    dA, dB, dC, dD, dbias = [None if p[0] is None else p for p in zip(*parts)]
    cat = lambda ps: None if ps is None else torch.cat(ps)  # noqa: E731
    return (dx, ddelta, _cast(cat(dA), A), _cast(torch.stack(dB, 1), B),
            _cast(torch.stack(dC, 1), C), _cast(cat(dD), D), _cast(cat(dbias), delta_bias))
