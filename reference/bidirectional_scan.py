"""Vim's bidirectional selective scan: direction 0 left to right, direction 1 right to left."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .selective_scan import (compute_dtype, selective_scan_bwd, selective_scan_fwd,
                             silu_gate_bwd)

_TIMED = (True, True, False, True, True, False, False, False)  # which scan args have a time axis


def _flip_time(t, timed):
    # B/C constant over time, (dim, N), have no time axis to flip
    return t.flip(-1) if timed and t is not None and t.dim() > 2 else t


def _direction(i, args):
    """Direction i's scan arguments, in its own scan order (direction 1 reversed in time)."""
    picked = [None if t is None else t[i] for t in args]
    return [_flip_time(t, timed and i == 1) for t, timed in zip(picked, _TIMED)]


def _sum_directions(u, delta, A, B, C, D, delta_bias, delta_softplus, combine, cdt):
    args = (u, delta, A, B, C, D, None, delta_bias)
    y0 = selective_scan_fwd(*_direction(0, args), delta_softplus, cdt)[0]
    y1 = selective_scan_fwd(*_direction(1, args), delta_softplus, cdt)[0].flip(-1)
    y = y0 + y1
    return y / 2 if combine == "mean" else y


def bidirectional_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, out_dtype):
    cdt = compute_dtype(u)
    y = _sum_directions(u, delta, A, B, C, D, delta_bias, delta_softplus, combine, cdt)
    if z is not None:
        y = y * F.silu(z.to(cdt))
    return y.to(out_dtype)


def bidirectional_scan_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine):
    cdt = compute_dtype(u)
    dy, dz = dy.to(cdt), None
    if z is not None:
        y = _sum_directions(u, delta, A, B, C, D, delta_bias, delta_softplus, combine, cdt)
        dy, dz = silu_gate_bwd(dy, y, z.to(cdt))
        dz = dz.to(z.dtype)
    if combine == "mean":
        dy = dy / 2
    args = (u, delta, A, B, C, D, None, delta_bias)
    g0 = selective_scan_bwd(dy, None, *_direction(0, args), delta_softplus)
    g1 = selective_scan_bwd(dy.flip(-1), None, *_direction(1, args), delta_softplus)
    g1 = [_flip_time(g, timed) for g, timed in zip(g1, _TIMED)]
    grads = [None if a is None else torch.stack([a, b]) for a, b in zip(g0, g1)]
    grads[6] = dz
    return tuple(grads)
