"""Vim's bidirectional scan.  Sequences that fit in one tile: both directions in one launch of
the fused kernel, summed and gated in registers, y written once.  Longer ones: two launches of
the chunked kernel over the same memory, the second running in reverse and adding into the
first one's float32 result."""
from __future__ import annotations

import torch

from .launch import fused_bwd, fused_fwd, fused_tile, scan_bwd, scan_fwd
from .selective_scan import _c, _cast

FLAGS = ((False, False), (True, False))  # (reversed, column-major) per direction


def _pick(t, i):
    return None if t is None else t[i]


def _chunked_fwd(u, delta, A, B, C, D, bias, softplus, y_dir0, y, *, z=None, scale=1.0):
    last = torch.empty(*u.shape[1:3], A.shape[2], device=u.device, dtype=torch.float32)
    scan_fwd(u[0], delta[0], A[0], B[0], C[0], _pick(D, 0), None, _pick(bias, 0), softplus,
             y_dir0, last)
    scan_fwd(u[1], delta[1], A[1], B[1], C[1], _pick(D, 1), z, _pick(bias, 1), softplus, y, last,
             y_in=y_dir0, y_scale=scale, reverse=True)


def _inputs(u, delta, A, D, delta_bias, z):
    return u.contiguous(), delta.contiguous(), A.contiguous(), _c(D), _c(delta_bias), _c(z)


def bidirectional_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, out_dtype):
    u, delta, A, D, delta_bias, z = _inputs(u, delta, A, D, delta_bias, z)
    scale = 0.5 if combine == "mean" else 1.0
    L = u.shape[-1]
    y = torch.empty(u.shape[1:], device=u.device, dtype=out_dtype)
    if fused_tile(1, L):
        fused_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, y, flags=FLAGS, H=1, W=L,
                  y_scale=scale)
    else:
        y0 = torch.empty(u.shape[1:], device=u.device, dtype=torch.float32)
        _chunked_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, y0, y, z=z, scale=scale)
    return y


def bidirectional_scan_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine):
    u, delta, A, D, delta_bias, z = _inputs(u, delta, A, D, delta_bias, z)
    dy = dy.contiguous()
    scale = 0.5 if combine == "mean" else 1.0
    L = u.shape[-1]
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    if fused_tile(1, L):
        grads = fused_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, du, ddelta, dz,
                          flags=FLAGS, H=1, W=L, y_scale=scale)
    else:
        grads = _chunked_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, scale, du,
                             ddelta, dz)
    dA, dB, dC, dD, dbias = grads
    return (du, ddelta, _cast(dA, A), _cast(dB, B), _cast(dC, C), _cast(dD, D), dz,
            _cast(dbias, delta_bias))


def _chunked_bwd(dy, u, delta, A, B, C, D, z, delta_bias, softplus, scale, du, ddelta, dz):
    dout = dy.float() * scale
    if z is not None:  # the gate needs the combined output before gating
        y = torch.empty(u.shape[1:], device=u.device, dtype=torch.float32)
        _chunked_fwd(u, delta, A, B, C, D, delta_bias, softplus, torch.empty_like(y), y,
                     scale=scale)
        zf = z.float()
        s = torch.sigmoid(zf)
        dz.copy_(dy.float() * y * s * (1 + zf * (1 - s)))
        dout = dout * zf * s
    dout = dout.contiguous()
    grads = [scan_bwd(dout, None, u[i], delta[i], A[i], B[i], C[i], _pick(D, i), None,
                      _pick(delta_bias, i), softplus, du[i], ddelta[i], None,
                      reverse=i == 1) for i in (0, 1)]
    return [None if g0 is None else torch.stack([g0, g1]) for g0, g1 in zip(*grads)]
