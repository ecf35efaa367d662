"""The scan ops built from launches of one route, shared by the triton and cuda backends.

A backend's ``kernels`` module supplies one route of the selective scan on (batch, dim, L)
views; the route walks the same memory forwards or backwards (``reverse``), and row by row or
column by column of an H x W grid (``transpose``), so no flipped or transposed copies are made:

- ``scan_fwd(u, delta, A, B, C, D, z, delta_bias, softplus, y, last, *, y_in=None,
  y_scale=1.0, reverse=False, transpose=False, H=1, W=1)`` writes y = ((scan + D u) + y_in)
  * y_scale, gated by silu(z), and the last states;
- ``scan_bwd(dy, dlast, u, delta, A, B, C, D, z, delta_bias, softplus, du, ddelta, dz, *,
  du_in=None, reverse=False, transpose=False, H=1, W=1)`` writes du (+ du_in), ddelta, dz and
  returns float32 (dA, dB, dC, dD, ddelta_bias) in the inputs' shapes.

Routes after the first add into a float32 partial sum (y_in / du_in).  ``keep``: keyword
arguments passed on to a backend's scan_fwd / scan_bwd for what its forward keeps for its
backward (the cuda backend's chunk states), one dict per direction.
"""
from __future__ import annotations

import torch

from .validation import grid

# route k of each set: (reversed, column-major)
ROUTE_FLAGS = {"unidi": ((False, False),), "bidi": ((False, False), (True, False)),
               "cross": ((False, False), (False, True), (True, False), (True, True))}


def contiguous(t):
    return None if t is None else t.contiguous()


def cast(g, t):
    """A float32 gradient in its input's dtype."""
    return None if g is None else g.to(t.dtype)


def natural_view(x: torch.Tensor, layout: str) -> torch.Tensor:
    """(B, C, H*W) view of a contiguous image in either layout (no copy)."""
    return x.flatten(2) if layout == "bchw" else x.flatten(1, 2).transpose(1, 2)


def cross_scan_buffers(x, layout, routes):
    """cross_scan's (contiguous x, H, W, x's (B, C, H*W) view, empty (B, K, C, H*W) output)."""
    x = x.contiguous()
    H, W = grid(x, layout)[2:]
    image = natural_view(x, layout)
    out = torch.empty(image.shape[0], len(ROUTE_FLAGS[routes]), *image.shape[1:],
                      device=x.device, dtype=x.dtype)
    return x, H, W, image, out


def cross_merge_buffers(y, H, W, layout):
    """cross_merge's (contiguous y, empty merged image in ``layout``, its (B, C, H*W) view)."""
    y = y.contiguous()
    B, _, C, _ = y.shape
    out = torch.empty((B, C, H, W) if layout == "bchw" else (B, H, W, C), device=y.device,
                      dtype=y.dtype)
    return y, out, natural_view(out, layout)


# ----------------------------------------------------------------------------- selective_scan
def selective_scan_fwd(kernels, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype,
                       keep=({},)):
    u, delta, z = u.contiguous(), delta.contiguous(), contiguous(z)
    y = torch.empty(u.shape, device=u.device, dtype=out_dtype)
    last = torch.empty(*u.shape[:2], A.shape[1], device=u.device, dtype=torch.float32)
    kernels.scan_fwd(u, delta, A.contiguous(), B, C, contiguous(D), z, contiguous(delta_bias),
                     delta_softplus, y, last, **keep[0])
    return y, last


def selective_scan_bwd(kernels, dy, dlast_state, u, delta, A, B, C, D, z, delta_bias,
                       delta_softplus, keep=({},)):
    u, delta, dy, z = u.contiguous(), delta.contiguous(), dy.contiguous(), contiguous(z)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    dA, dB, dC, dD, dbias = kernels.scan_bwd(dy, contiguous(dlast_state), u, delta,
                                             A.contiguous(), B, C, contiguous(D), z,
                                             contiguous(delta_bias), delta_softplus, du, ddelta,
                                             dz, **keep[0])
    return (du, ddelta, cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D), dz,
            cast(dbias, delta_bias))


# ------------------------------------------------------------------------- bidirectional_scan
def pick(t, i):
    """Direction i of an optional per-direction tensor."""
    return None if t is None else t[i]


def bidirectional_inputs(u, delta, A, D, delta_bias, z):
    return (u.contiguous(), delta.contiguous(), A.contiguous(), contiguous(D),
            contiguous(delta_bias), contiguous(z))


def bidi_fwd(kernels, u, delta, A, B, C, D, bias, softplus, y_dir0, y, *, z=None, scale=1.0,
             keep=({}, {})):
    """Direction 0 into y_dir0 (float32), then direction 1 (reversed) adding it into y."""
    last = torch.empty(*u.shape[1:3], A.shape[2], device=u.device, dtype=torch.float32)
    kernels.scan_fwd(u[0], delta[0], A[0], B[0], C[0], pick(D, 0), None, pick(bias, 0),
                     softplus, y_dir0, last, **keep[0])
    kernels.scan_fwd(u[1], delta[1], A[1], B[1], C[1], pick(D, 1), z, pick(bias, 1), softplus,
                     y, last, y_in=y_dir0, y_scale=scale, reverse=True, **keep[1])


def bidirectional_scan_fwd(kernels, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                           combine, out_dtype, keep=({}, {})):
    u, delta, A, D, delta_bias, z = bidirectional_inputs(u, delta, A, D, delta_bias, z)
    y = torch.empty(u.shape[1:], device=u.device, dtype=out_dtype)
    y0 = torch.empty(u.shape[1:], device=u.device, dtype=torch.float32)
    bidi_fwd(kernels, u, delta, A, B, C, D, delta_bias, delta_softplus, y0, y, z=z,
             scale=0.5 if combine == "mean" else 1.0, keep=keep)
    return y


def bidirectional_scan_bwd(kernels, dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                           combine):
    u, delta, A, D, delta_bias, z = bidirectional_inputs(u, delta, A, D, delta_bias, z)
    scale = 0.5 if combine == "mean" else 1.0
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    dout = dy.float() * scale
    if z is not None:  # the gate needs the combined output before gating
        y = torch.empty(u.shape[1:], device=u.device, dtype=torch.float32)
        bidi_fwd(kernels, u, delta, A, B, C, D, delta_bias, delta_softplus, torch.empty_like(y),
                 y, scale=scale)
        zf = z.float()
        s = torch.sigmoid(zf)
        dz.copy_(dy.float() * y * s * (1 + zf * (1 - s)))
        dout = dout * zf * s
    dout = dout.contiguous()
    grads = [kernels.scan_bwd(dout, None, u[i], delta[i], A[i], B[i], C[i], pick(D, i), None,
                              pick(delta_bias, i), delta_softplus, du[i], ddelta[i], None,
                              reverse=i == 1) for i in (0, 1)]
    dA, dB, dC, dD, dbias = [None if g0 is None else torch.stack([g0, g1])
                             for g0, g1 in zip(*grads)]
    return (du, ddelta, cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D), dz,
            cast(dbias, delta_bias))


# ----------------------------------------------------------------------- cross_selective_scan
def _route_params(k, C, A, D, bias):
    rows = slice(k * C, (k + 1) * C)
    return A[rows], None if D is None else D[rows], None if bias is None else bias[rows]


def cross_inputs(x, delta, A, B, C, D, delta_bias):
    return (x.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
            contiguous(D), contiguous(delta_bias))


def cross_selective_scan_fwd(kernels, x, delta, A, B, C, D, delta_bias, delta_softplus, layout,
                             routes, out_dtype):
    """One launch per route, each reading x, delta, B, C in place through its index map and
    adding into a float32 sum; the last route writes y."""
    x, delta, A, B, C, D, delta_bias = cross_inputs(x, delta, A, B, C, D, delta_bias)
    H, W = grid(x, layout)[2:]
    xn = natural_view(x, layout)
    y = torch.empty_like(x, dtype=out_dtype)
    flags = ROUTE_FLAGS[routes]
    Cn = xn.shape[1]
    acc = natural_view(torch.empty_like(x, dtype=torch.float32), layout)
    last = torch.empty(xn.shape[0], Cn, A.shape[1], device=x.device, dtype=torch.float32)
    for k, (rev, tr) in enumerate(flags):
        Ak, Dk, bk = _route_params(k, Cn, A, D, delta_bias)
        kernels.scan_fwd(xn, delta[:, k], Ak, B[:, k], C[:, k], Dk, None, bk, delta_softplus,
                         natural_view(y, layout) if k == len(flags) - 1 else acc, last,
                         y_in=acc if k else None, reverse=rev, transpose=tr, H=H, W=W)
    return y


def cross_selective_scan_bwd(kernels, dy, x, delta, A, B, C, D, delta_bias, delta_softplus,
                             layout, routes):
    x, delta, A, B, C, D, delta_bias = cross_inputs(x, delta, A, B, C, D, delta_bias)
    H, W = grid(x, layout)[2:]
    xn, dyn = natural_view(x, layout), natural_view(dy.contiguous(), layout)
    dx = torch.empty_like(x)
    ddelta = torch.empty_like(delta)
    flags = ROUTE_FLAGS[routes]
    Cn = xn.shape[1]
    acc = natural_view(torch.empty_like(x, dtype=torch.float32), layout)
    parts = []
    for k, (rev, tr) in enumerate(flags):
        Ak, Dk, bk = _route_params(k, Cn, A, D, delta_bias)
        parts.append(kernels.scan_bwd(dyn, None, xn, delta[:, k], Ak, B[:, k], C[:, k], Dk, None,
                                      bk, delta_softplus,
                                      natural_view(dx, layout) if k == len(flags) - 1 else acc,
                                      ddelta[:, k], None, du_in=acc if k else None, reverse=rev,
                                      transpose=tr, H=H, W=W))
    dA, dB, dC, dD, dbias = [None if p[0] is None else p for p in zip(*parts)]
    cat = lambda ps: None if ps is None else torch.cat(ps)  # noqa: E731
    return (dx, ddelta, cast(cat(dA), A), cast(torch.stack(dB, 1), B),
            cast(torch.stack(dC, 1), C), cast(cat(dD), D), cast(cat(dbias), delta_bias))
