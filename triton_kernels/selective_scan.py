"""selective_scan on the chunked Triton kernels."""
from __future__ import annotations

import torch

from .launch import scan_bwd, scan_fwd


def _c(t):
    return None if t is None else t.contiguous()


def _cast(g, t):
    return None if g is None else g.to(t.dtype)


def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype):
    u, delta = u.contiguous(), delta.contiguous()
    z = None if z is None else z.contiguous()
    y = torch.empty(u.shape, device=u.device, dtype=out_dtype)
    last = torch.empty(*u.shape[:2], A.shape[1], device=u.device, dtype=torch.float32)
    scan_fwd(u, delta, A.contiguous(), B, C, _c(D), z, _c(delta_bias), delta_softplus, y, last)
    return y, last


def selective_scan_bwd(dy, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    u, delta, dy = u.contiguous(), delta.contiguous(), dy.contiguous()
    z = None if z is None else z.contiguous()
    dlast = None if dlast_state is None else dlast_state.contiguous()
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    dA, dB, dC, dD, dbias = scan_bwd(dy, dlast, u, delta, A.contiguous(), B, C, _c(D), z,
                                     _c(delta_bias), delta_softplus, du, ddelta, dz)
    return (du, ddelta, _cast(dA, A), _cast(dB, B), _cast(dC, C), _cast(dD, D), dz,
            _cast(dbias, delta_bias))
