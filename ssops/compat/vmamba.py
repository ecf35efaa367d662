"""VMamba's kernel conventions on ssops.

``cross_scan_fn(x, in_channel_first=True, out_channel_first=True, one_by_one=False, scans=0)``:
x is (B, C, H, W) if in_channel_first else (B, H, W, C) -- or with ``one_by_one`` (B, 4, C, H, W) /
(B, H, W, 4, C), route k reading its own slice k; the result is (B, 4, C, H*W) if
out_channel_first else (B, H*W, 4, C).  ``scans``: 0 cross (row-major, column-major, both
reversed), 1 unidirectional (row-major four times), 2 bidirectional (row-major twice, reversed
twice).  ``cross_merge_fn`` is its adjoint: ys (B, 4, C, H, W) if out_channel_first else
(B, H, W, 4, C) -> (B, C, H*W) if in_channel_first else (B, H*W, C)
(one_by_one: (B, 4, C, H*W) / (B, H*W, 4, C), per route).
"""
from __future__ import annotations

import torch

from .. import functional
from ..reference.cross_scan import route_index

_ROUTES = {0: ("cross", (0, 1, 2, 3)), 1: ("unidi", (0, 0, 0, 0)), 2: ("bidi", (0, 0, 1, 1))}


def _scans(scans):
    if scans not in _ROUTES:
        raise ValueError(f"scans must be 0 (cross), 1 (unidi) or 2 (bidi), got {scans!r}")
    return _ROUTES[scans]


def _route_indices(H, W, scans, device):
    """(4, H*W): natural position visited at each step by each of VMamba's four routes."""
    routes, pick = _scans(scans)
    return route_index(H, W, routes, device)[list(pick)]


def cross_scan_fn(x, in_channel_first=True, out_channel_first=True, one_by_one=False, scans=0):
    if one_by_one:
        xs = x.flatten(3) if in_channel_first else x.flatten(1, 2).permute(0, 2, 3, 1)
        H, W = (x.shape[3], x.shape[4]) if in_channel_first else (x.shape[1], x.shape[2])
        idx = _route_indices(H, W, scans, x.device)
        ys = torch.stack([xs[:, k, :, idx[k]] for k in range(4)], 1)     # (B, 4, C, L)
    elif scans == 0:
        ys = functional.cross_scan(x, layout="bchw" if in_channel_first else "bhwc")
    else:
        routes, pick = _scans(scans)
        ys = functional.cross_scan(x, layout="bchw" if in_channel_first else "bhwc",
                                   routes=routes)[:, list(pick)]
    return ys if out_channel_first else ys.permute(0, 3, 1, 2)


def cross_merge_fn(ys, in_channel_first=True, out_channel_first=True, one_by_one=False, scans=0):
    if not out_channel_first:
        ys = ys.permute(0, 3, 4, 1, 2)                                  # -> (B, 4, C, H, W)
    B, K, C, H, W = ys.shape
    ys = ys.flatten(3)
    inv = _route_indices(H, W, scans, ys.device).argsort(1)
    per_route = torch.stack([ys[:, k, :, inv[k]] for k in range(K)], 1)  # natural order
    if one_by_one:  # (B, 4, C, L), or (B, L, 4, C)
        return per_route if in_channel_first else per_route.permute(0, 3, 1, 2)
    y = per_route.sum(1)
    return y if in_channel_first else y.transpose(1, 2)


_VMAMBA_BACKENDS = {None: None, "oflex": None, "mamba": None, "core": None, "torch": "reference"}


def selective_scan_fn(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True,
                      oflex=True, backend=None):
    """VMamba's wrapper: ``oflex`` returns float32 from half inputs; ``backend`` takes VMamba's
    names ("oflex", "mamba", "core" run on ssops' default, "torch" on its reference) or ssops'."""
    ssops_backend = _VMAMBA_BACKENDS.get(backend, backend)
    return functional.selective_scan(u, delta, A, B, C, D, None, delta_bias, delta_softplus,
                                     out_dtype=torch.float32 if oflex else None,
                                     backend=ssops_backend)


__all__ = ["cross_scan_fn", "cross_merge_fn", "selective_scan_fn"]
