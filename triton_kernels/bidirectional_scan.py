"""Vim's bidirectional scan: two launches of the scan kernel over the same memory, the second
running in reverse and adding into the first one's float32 result (then gating with z)."""
from __future__ import annotations

import torch

from .selective_scan import _c, _cast, scan_bwd, scan_fwd


def _pick(t, i):
    return None if t is None else t[i]


def _directions(u, delta, A, B, C, D, bias, softplus, y_dir0, y, last, *, z=None, scale=1.0):
    scan_fwd(u[0], delta[0], A[0], B[0], C[0], _pick(D, 0), None, _pick(bias, 0), softplus,
             y_dir0, last)
    scan_fwd(u[1], delta[1], A[1], B[1], C[1], _pick(D, 1), z, _pick(bias, 1), softplus, y, last,
             y_in=y_dir0, y_scale=scale, reverse=True)


def bidirectional_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, out_dtype):
    u, delta, A, D, delta_bias = u.contiguous(), delta.contiguous(), A.contiguous(), _c(D), _c(delta_bias)
    z = _c(z)
    y0 = torch.empty(u.shape[1:], device=u.device, dtype=torch.float32)
    y = torch.empty(u.shape[1:], device=u.device, dtype=out_dtype)
    last = torch.empty(*u.shape[1:3], A.shape[2], device=u.device, dtype=torch.float32)
    _directions(u, delta, A, B, C, D, delta_bias, delta_softplus, y0, y, last, z=z,
                scale=0.5 if combine == "mean" else 1.0)
    return y


def bidirectional_scan_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine):
    u, delta, A, D, delta_bias = u.contiguous(), delta.contiguous(), A.contiguous(), _c(D), _c(delta_bias)
    scale = 0.5 if combine == "mean" else 1.0
    dout, dz = dy.float() * scale, None
    if z is not None:  # the gate needs the combined output before gating
        y = torch.empty(u.shape[1:], device=u.device, dtype=torch.float32)
        last = torch.empty(*u.shape[1:3], A.shape[2], device=u.device, dtype=torch.float32)
        _directions(u, delta, A, B, C, D, delta_bias, delta_softplus, torch.empty_like(y), y,
                    last, scale=scale)
        zf = z.float()
        s = torch.sigmoid(zf)
        dz = (dy.float() * y * s * (1 + zf * (1 - s))).to(z.dtype)
        dout = dout * zf * s
    dout = dout.contiguous()
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    grads = [scan_bwd(dout, None, u[i], delta[i], A[i], B[i], C[i], _pick(D, i), None,
                      _pick(delta_bias, i), delta_softplus, du[i], ddelta[i], None,
                      reverse=i == 1) for i in (0, 1)]
    dA, dB, dC, dD, dbias = [None if g0 is None else torch.stack([g0, g1])
                             for g0, g1 in zip(*grads)]
    return (du, ddelta, _cast(dA, A), _cast(dB, B), _cast(dC, C), _cast(dD, D), dz,
            _cast(dbias, delta_bias))
