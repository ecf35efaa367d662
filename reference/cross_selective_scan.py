"""The SS2D core: cross-scan, one selective scan per route, cross-merge.

delta (B, K, C, L), B/C (B, K, N, L) are given in natural position order (the projections that
make them act position by position, so they commute with the routes); route k scans its own
copy of x with its own delta/B/C, A/D/delta_bias rows k*C .. (k+1)*C-1, and the K outputs are
summed back at each position.
"""
from __future__ import annotations

from ssops.validation import grid

from .cross_scan import cross_merge, cross_scan, from_routes, to_routes
from .selective_scan import compute_dtype, selective_scan_bwd, selective_scan_fwd


def _routed(x, delta, B, C, layout, routes):
    """The per-route scan inputs: xs, delta (B, K*C, L) and B, C (B, K, N, L) in scan order."""
    H, W = grid(x, layout)[2:]
    return (cross_scan(x, layout, routes).flatten(1, 2),
            to_routes(delta, H, W, routes).flatten(1, 2),
            to_routes(B, H, W, routes), to_routes(C, H, W, routes))


def cross_selective_scan_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes,
                             out_dtype):
    xs, ds, Bs, Cs = _routed(x, delta, B, C, layout, routes)
    ys, _ = selective_scan_fwd(xs, ds, A, Bs, Cs, D, None, delta_bias, delta_softplus,
                               compute_dtype(x))
    return cross_merge(ys.view(delta.shape), *grid(x, layout)[2:], layout, routes).to(out_dtype)


def cross_selective_scan_bwd(dy, x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes):
    H, W = grid(x, layout)[2:]
    dys = cross_scan(dy.to(compute_dtype(x)), layout, routes).flatten(1, 2)  # adjoint of the merge
    xs, ds, Bs, Cs = _routed(x, delta, B, C, layout, routes)
    du, ddelta, dA, dB, dC, dD, _, dbias = selective_scan_bwd(
        dys, None, xs, ds, A, Bs, Cs, D, None, delta_bias, delta_softplus)
    back = lambda t: from_routes(t, H, W, routes)  # noqa: E731
    return (cross_merge(du.view(delta.shape), H, W, layout, routes).to(x.dtype),
            back(ddelta.view(delta.shape)).to(delta.dtype), dA, back(dB).to(B.dtype),
            back(dC).to(C.dtype), dD, dbias)
