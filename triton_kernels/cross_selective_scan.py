"""The SS2D core on the scan kernel: each route is a launch that reads x, delta, B, C in place
through its index map (reversed and/or column-major), adding into one float32 output."""
from __future__ import annotations

import torch

from .cross_scan import ROUTE_FLAGS, natural_view
from .selective_scan import _c, _cast, scan_bwd, scan_fwd


def _grid(x, layout):
    return (x.shape[2], x.shape[3]) if layout == "bchw" else (x.shape[1], x.shape[2])


def _route_params(k, C, A, D, bias):
    rows = slice(k * C, (k + 1) * C)
    return A[rows], None if D is None else D[rows], None if bias is None else bias[rows]


def cross_selective_scan_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes,
                             out_dtype):
    x, delta, B, C, A = x.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous(), A.contiguous()
    D, delta_bias = _c(D), _c(delta_bias)
    H, W = _grid(x, layout)
    xn = natural_view(x, layout)
    Cn = xn.shape[1]
    y = torch.empty_like(x, dtype=out_dtype)
    yn = natural_view(y, layout)
    acc = natural_view(torch.empty_like(x, dtype=torch.float32), layout)
    last = torch.empty(xn.shape[0], Cn, A.shape[1], device=x.device, dtype=torch.float32)
    flags = ROUTE_FLAGS[routes]
    for k, (rev, tr) in enumerate(flags):
        Ak, Dk, bk = _route_params(k, Cn, A, D, delta_bias)
        scan_fwd(xn, delta[:, k], Ak, B[:, k], C[:, k], Dk, None, bk, delta_softplus,
                 yn if k == len(flags) - 1 else acc, last, y_in=acc if k else None,
                 reverse=rev, transpose=tr, H=H, W=W)
    return y


def cross_selective_scan_bwd(dy, x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes):
    x, delta, B, C, A = x.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous(), A.contiguous()
    D, delta_bias = _c(D), _c(delta_bias)
    H, W = _grid(x, layout)
    xn, dyn = natural_view(x, layout), natural_view(dy.contiguous(), layout)
    Cn = xn.shape[1]
    dx = torch.empty_like(x)
    acc = natural_view(torch.empty_like(x, dtype=torch.float32), layout)
    ddelta = torch.empty_like(delta)
    flags = ROUTE_FLAGS[routes]
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
