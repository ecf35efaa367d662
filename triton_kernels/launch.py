"""Block shapes and launch helpers of the scan kernels (used by every Triton scan op)."""
from __future__ import annotations

import math

import torch
import triton

from .scan_kernels import fused_bwd_kernel, fused_fwd_kernel, scan_bwd_kernel, scan_fwd_kernel

# The fused kernels hold a whole (padded) H x W grid in one tile.  Measured on the H100 (v5 in
# bench/NOTES.md): faster than per-route launches up to 16 x 16 grids, slower beyond.
FUSED_MAX_TILE = 256
override = {}  # "fwd" / "bwd" / "fused_fwd" / "fused_bwd" -> (tile, BL cap, num_warps), for bench/sweep.py

# (elements per tile, longest chunk, num_warps); chunked kernels walk chunks of at most BL steps.
# Larger tiles spill registers on sm_90 (bench/compile_check.py): keep ~8 elements per thread
# in the forward, ~4 in the backward.
# Measured on the H100 (bench/NOTES.md, v4 sweep): small tiles, few warps, except the backward
# with N > 1, where each program's n loop is long enough to keep 4 warps busy.
DEFAULTS = {"fwd": (512, 512, 2), "bwd": (256, 256, 2), "bwd_n": (1024, 1024, 4),
            "fused_fwd": (1024, FUSED_MAX_TILE, 4), "fused_bwd": (1024, FUSED_MAX_TILE, 4)}


def _block_d(dpg: int, cap: int) -> int:
    """Largest power of two <= cap dividing dpg, so a block of channels shares one B/C group."""
    bd = 1
    while bd * 2 <= cap and dpg % (bd * 2) == 0:
        bd *= 2
    return bd


def _defaults(kind, N):
    return override.get(kind) or DEFAULTS["bwd_n" if kind == "bwd" and N > 1 else kind]


def _config(kind, dpg, T, N):
    """(BLOCK_D, num_warps) for tiles of T steps: one warp per 256 steps of a long tile (a
    whole 64 x 64 grid takes 16), fewer for tiles of less than 128 elements per warp."""
    tile, _, warps = _defaults(kind, N)
    BD = _block_d(dpg, max(1, tile // T))
    return BD, max(1, min(max(warps, T // 256), BD * T // 128, 16))


def chunk_shape(L: int, N: int, backward: bool, transpose: bool, H: int, W: int):
    """(HP, BW) of a chunk: BL = HP * BW steps; a row-major chunk is (1, BL), a column-major
    one BW whole columns of the grid padded to HP rows."""
    cap = _defaults("bwd" if backward else "fwd", N)[1]
    if transpose:
        HP = triton.next_power_of_2(H)
        return HP, max(1, min(cap // HP, triton.next_power_of_2(W)), 16 // HP)
    return 1, max(16, min(cap, triton.next_power_of_2(L)))


def fused_tile(H: int, W: int):
    """(HP, WP) of the fused kernels' tile, or None when the grid does not fit in one."""
    HP, WP = triton.next_power_of_2(H), triton.next_power_of_2(W)
    WP = max(WP, 16 // HP)  # at least 16 elements
    return (HP, WP) if HP * WP <= FUSED_MAX_TILE else None


def _bc_layout(M: torch.Tensor, dim: int):
    """(tensor, is_constant, dim per group, (stride_b, stride_g, stride_n, stride_l)) of one
    route's B or C: (dim, N), (batch, N, L) or (batch, G, N, L)."""
    if M.dim() == 2:  # (dim, N): the kernels read M[d, n] at d * stride_g + n * stride_n
        return M, True, dim, (0, M.stride(0), M.stride(1), 0)
    if M.dim() == 3:
        M = M.unsqueeze(1)
    return M, False, dim // M.shape[1], tuple(M.stride())


def scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, y, last, *, y_in=None,
             y_scale=1.0, reverse=False, transpose=False, H=1, W=1):
    """Chunked forward on (batch, dim, L) views; y (and y_in) share u's strides."""
    batch, dim, L = u.shape
    N = A.shape[1]
    B, b_const, dpg, sB = _bc_layout(B, dim)
    C, c_const, dpg_c, sC = _bc_layout(C, dim)
    HP, BW = chunk_shape(L, N, False, transpose, H, W)
    BD, warps = _config("fwd", math.gcd(dpg, dpg_c), HP * BW, N)
    scan_fwd_kernel[(triton.cdiv(dim, BD), batch)](
        u, delta, A, B, C, D, z, delta_bias, y_in, y, last,
        dim, L, N, W, H, dpg, dpg_c, *u.stride(), *delta.stride(), *sB, *sC, y_scale,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        HAS_YIN=y_in is not None, SOFTPLUS=delta_softplus, B_CONST=b_const, C_CONST=c_const,
        REVERSE=reverse, TRANSPOSE=transpose, BD=BD, NP=triton.next_power_of_2(N), HP=HP,
        BW=BW, num_warps=warps)


def _grad_buffer(M, const, partial_shape):
    """float32 gradient buffer of B or C: per-batch partials for a constant matrix, else zeros
    in M's shape and strides (the kernels add into it atomically)."""
    if const:
        return torch.empty(partial_shape, device=M.device, dtype=torch.float32)
    return torch.zeros_like(M, dtype=torch.float32)


def scan_bwd(dy, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, du, ddelta,
             dz, *, du_in=None, reverse=False, transpose=False, H=1, W=1):
    """Chunked backward; returns float32 (dA, dB, dC, dD, ddelta_bias) in the inputs' shapes.
    du, ddelta, dz are written in place (du may accumulate du_in)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    f32 = dict(device=u.device, dtype=torch.float32)
    dB = _grad_buffer(B, B.dim() == 2, (batch, dim, N))
    dC = _grad_buffer(C, C.dim() == 2, (batch, dim, N))
    Bk, b_const, dpg, sB = _bc_layout(B, dim)
    Ck, c_const, dpg_c, sC = _bc_layout(C, dim)
    sdB = (0,) * 4 if b_const else _bc_layout(dB, dim)[3]
    sdC = (0,) * 4 if c_const else _bc_layout(dC, dim)[3]
    HP, BW = chunk_shape(L, N, True, transpose, H, W)
    BD, warps = _config("bwd", math.gcd(dpg, dpg_c), HP * BW, N)
    nchunks = triton.cdiv(W, BW) if transpose else triton.cdiv(L, BW)
    carries = torch.empty(batch, dim, N, nchunks, **f32)
    dA = torch.empty(batch, dim, N, **f32)
    dD = torch.empty(batch, dim, **f32) if D is not None else None
    dbias = torch.empty(batch, dim, **f32) if delta_bias is not None else None
    scan_bwd_kernel[(triton.cdiv(dim, BD), batch)](
        u, delta, A, Bk, Ck, D, z, delta_bias, dy, dlast_state, carries, du_in, du, ddelta, dz,
        dA, dB, dC, dD, dbias, dim, L, N, W, H, dpg, dpg_c, *u.stride(), *delta.stride(), *sB, *sC,
        *sdB, *sdC, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        HAS_DLAST=dlast_state is not None, HAS_DUIN=du_in is not None, SOFTPLUS=delta_softplus,
        B_CONST=b_const, C_CONST=c_const, REVERSE=reverse, TRANSPOSE=transpose, BD=BD,
        NP=triton.next_power_of_2(N), HP=HP, BW=BW, num_warps=warps)
    return (dA.sum(0), dB.sum(0) if b_const else dB, dC.sum(0) if c_const else dC,
            None if dD is None else dD.sum(0), None if dbias is None else dbias.sum(0))


def _routes_bc(M, dim):
    """Route-stacked B or C (K, ...) -> (is_constant, dim per group, (s_k, s_b, s_g, s_n, s_l))."""
    _, const, dpg, strides = _bc_layout(M[0], dim)
    return const, dpg, (M.stride(0),) + strides


def _fused_launch(kind, delta, A, B, C, flags, H, W):
    K, batch, dim, _ = delta.shape
    b_const, dpg_b, sB = _routes_bc(B, dim)
    c_const, dpg_c, sC = _routes_bc(C, dim)
    HP, WP = fused_tile(H, W)
    BD, warps = _config(kind, math.gcd(dpg_b, dpg_c), HP * WP, A.shape[2])
    rev, tr = tuple(int(f[0]) for f in flags), tuple(int(f[1]) for f in flags)
    grid = (triton.cdiv(dim, BD), batch)
    meta = dict(K=K, REV=rev, TR=tr, COLS=any(tr), B_CONST=b_const, C_CONST=c_const, BD=BD,
                NP=triton.next_power_of_2(A.shape[2]), HP=HP, WP=WP, num_warps=warps)
    return grid, (dim, A.shape[2], H, W, dpg_b, dpg_c), sB, sC, meta


def fused_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, y, *, flags, H, W,
              y_scale=1.0):
    """All K routes in one launch.  Route-stacked inputs: u, delta (K, batch, dim, H*W) (u's
    route stride is 0 when the routes share it), A (K, dim, N), B / C (K, ...) per route as in
    selective_scan, D / delta_bias (K, dim); y, z (batch, dim, H*W) in row-major positions."""
    grid, sizes, sB, sC, meta = _fused_launch("fused_fwd", delta, A, B, C, flags, H, W)
    fused_fwd_kernel[grid](
        u, delta, A, B, C, D, z, delta_bias, y, *sizes, *u.stride(), *delta.stride(), *sB, *sC,
        *y.stride(), y_scale, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, **meta)


def fused_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, du, ddelta, dz, *, flags,
              H, W, y_scale=1.0):
    """Gradients of fused_fwd: du (u's strides; summed over routes when they share u), ddelta,
    dz written in place; returns float32 (dA, dB, dC, dD, ddelta_bias) in the inputs' shapes."""
    grid, sizes, sB, sC, meta = _fused_launch("fused_bwd", delta, A, B, C, flags, H, W)
    K, batch, dim, _ = delta.shape
    f32 = dict(device=u.device, dtype=torch.float32)
    partial = (batch, K, dim, A.shape[2])
    dB = _grad_buffer(B, meta["B_CONST"], partial)
    dC = _grad_buffer(C, meta["C_CONST"], partial)
    sdB = (0,) * 5 if meta["B_CONST"] else _routes_bc(dB, dim)[2]
    sdC = (0,) * 5 if meta["C_CONST"] else _routes_bc(dC, dim)[2]
    dA = torch.empty(partial, **f32)
    dD = torch.empty(partial[:3], **f32) if D is not None else None
    dbias = torch.empty(partial[:3], **f32) if delta_bias is not None else None
    fused_bwd_kernel[grid](
        u, delta, A, B, C, D, z, delta_bias, dy, du, ddelta, dz, dA, dB, dC, dD, dbias, *sizes,
        *u.stride(), *delta.stride(), *sB, *sC, *sdB, *sdC, *dy.stride(), y_scale,
        SHARED_U=u.stride(0) == 0, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, **meta)
    return (dA.sum(0), dB.sum(0) if meta["B_CONST"] else dB,
            dC.sum(0) if meta["C_CONST"] else dC, None if dD is None else dD.sum(0),
            None if dbias is None else dbias.sum(0))
