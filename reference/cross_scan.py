"""VMamba's SS2D routes over an H x W grid, and their adjoint.

Route k visits the natural (row-major) positions idx[k, 0], idx[k, 1], ... in scan order:
"cross" = [row-major, column-major, row-major reversed, column-major reversed] (VMamba's order),
"bidi" = [row-major, row-major reversed], "unidi" = [row-major].
"""
from __future__ import annotations

import functools

import torch

@functools.lru_cache(maxsize=64)
def route_index(H: int, W: int, routes: str, device: torch.device) -> torch.Tensor:
    """(K, H*W) int64: natural position visited at each step of each route."""
    rows = torch.arange(H * W, device=device)
    cols = rows.view(H, W).t().flatten()
    order = {"unidi": [rows], "bidi": [rows, rows.flip(0)],
             "cross": [rows, cols, rows.flip(0), cols.flip(0)]}[routes]
    return torch.stack(order)


@functools.lru_cache(maxsize=64)
def inverse_route_index(H: int, W: int, routes: str, device: torch.device) -> torch.Tensor:
    """(K, H*W) int64: scan step at which each route visits each natural position."""
    return route_index(H, W, routes, device).argsort(dim=1)


def to_channels_first(x: torch.Tensor, layout: str) -> torch.Tensor:
    """(B, C, H, W) or (B, H, W, C) -> (B, C, H*W), natural row-major positions."""
    return x.flatten(2) if layout == "bchw" else x.flatten(1, 2).transpose(1, 2)


def from_channels_first(y: torch.Tensor, H: int, W: int, layout: str) -> torch.Tensor:
    """(B, C, H*W) -> (B, C, H, W) or (B, H, W, C)."""
    y = y.unflatten(-1, (H, W))
    return y if layout == "bchw" else y.permute(0, 2, 3, 1)


def to_routes(t: torch.Tensor, H: int, W: int, routes: str) -> torch.Tensor:
    """(B, K, *, H*W) in natural order -> the same with route k's slice in route k's scan order."""
    idx = route_index(H, W, routes, t.device)
    return torch.stack([t[:, k, ..., idx[k]] for k in range(idx.shape[0])], 1)


def from_routes(t: torch.Tensor, H: int, W: int, routes: str) -> torch.Tensor:
    """Inverse of ``to_routes``."""
    inv = inverse_route_index(H, W, routes, t.device)
    return torch.stack([t[:, k, ..., inv[k]] for k in range(inv.shape[0])], 1)


def cross_scan(x: torch.Tensor, layout: str, routes: str) -> torch.Tensor:
    """(B, C, H, W) / (B, H, W, C) -> (B, K, C, H*W), each route in its scan order."""
    H, W = (x.shape[2], x.shape[3]) if layout == "bchw" else (x.shape[1], x.shape[2])
    xf = to_channels_first(x, layout)
    idx = route_index(H, W, routes, x.device)
    return xf[:, :, idx].transpose(1, 2).contiguous()


def cross_merge(y: torch.Tensor, H: int, W: int, layout: str, routes: str) -> torch.Tensor:
    """Adjoint of ``cross_scan``: sum over routes of each route's value at each position."""
    return from_channels_first(from_routes(y, H, W, routes).sum(1), H, W, layout).contiguous()
