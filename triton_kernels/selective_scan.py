"""selective_scan on the Triton kernels, and the launch helpers the other scan ops share."""
from __future__ import annotations

import math

import torch
import triton

from .scan_kernels import scan_bwd_kernel, scan_fwd_kernel

override = {}  # (BLOCK_D cap, BLOCK_L, num_warps, num_stages) forced by bench/sweep.py, by N padded


def _block_d(dpg: int, cap: int) -> int:
    """Largest power of two <= cap dividing dpg, so a block of channels shares one B/C group."""
    bd = 1
    while bd * 2 <= cap and dpg % (bd * 2) == 0:
        bd *= 2
    return bd


def blocks(dim: int, dpg: int, N: int, L: int, backward: bool = False):
    """(BLOCK_D, N padded, BLOCK_L, num_warps, num_stages) for a scan of this size.

    Small tiles won on the H100 (bench/NOTES.md): the chunk loop is latency-bound, so more
    programs in flight beat wider ones, and the backward spills registers past ~1024 elements."""
    NP = triton.next_power_of_2(N)
    if NP in override:
        cap, BL, warps, stages = override[NP]
        return _block_d(dpg, cap), NP, BL, warps, stages
    BL = max(16, min(128 if NP == 1 else 32, triton.next_power_of_2(L)))
    tile, warps = (1024, 4) if backward and NP == 1 else (512, 2)
    return _block_d(dpg, max(1, tile // (NP * BL))), NP, BL, warps, 3


def _bc_layout(M: torch.Tensor, dim: int):
    """(tensor, is_constant, dim per group, (stride_b, stride_g, stride_n, stride_l))."""
    if M.dim() == 2:  # (dim, N): the kernel reads M[d, n] at d * stride_g + n * stride_n
        return M, True, dim, (0, M.stride(0), M.stride(1), 0)
    if M.dim() == 3:
        M = M.unsqueeze(1)
    return M, False, dim // M.shape[1], tuple(M.stride())


def scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, y, last, *, y_in=None,
             y_scale=1.0, reverse=False, transpose=False, H=1, W=1):
    """Launch the forward kernel on (batch, dim, L) views; y (and y_in) share u's strides."""
    batch, dim, L = u.shape
    N = A.shape[1]
    B, b_const, dpg, sB = _bc_layout(B, dim)
    C, c_const, dpg_c, sC = _bc_layout(C, dim)
    BD, NP, BL, warps, stages = blocks(dim, math.gcd(dpg, dpg_c), N, L)
    scan_fwd_kernel[(triton.cdiv(dim, BD), batch)](
        u, delta, A, B, C, D, z, delta_bias, y_in, y, last,
        dim, L, N, W, H, dpg, dpg_c, *u.stride(), *delta.stride(), *sB, *sC, y_scale,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        HAS_YIN=y_in is not None, SOFTPLUS=delta_softplus, B_CONST=b_const, C_CONST=c_const,
        REVERSE=reverse, TRANSPOSE=transpose, BD=BD, NP=NP, BL=BL, num_warps=warps,
        num_stages=stages)


def scan_bwd(dy, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, du, ddelta,
             dz, *, du_in=None, reverse=False, transpose=False, H=1, W=1):
    """Launch the backward kernel; returns float32 (dA, dB, dC, dD, ddelta_bias), with dB/dC
    already in B's/C's shape.  du, ddelta, dz are written in place (du may accumulate du_in)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    Bk, b_const, dpg, sB = _bc_layout(B, dim)
    Ck, c_const, dpg_c, sC = _bc_layout(C, dim)
    BD, NP, BL, warps, stages = blocks(dim, math.gcd(dpg, dpg_c), N, L, backward=True)
    f32 = dict(device=u.device, dtype=torch.float32)

    def grad_buffer(M, const):  # per-batch partials for constant B/C, else atomics in M's shape
        if const:
            return torch.empty(batch, dim, N, **f32), (0, 0, 0, 0)
        buf = torch.zeros(Bk.shape if M is B else Ck.shape, **f32)
        return buf, tuple(buf.stride())

    dB, sdB = grad_buffer(B, b_const)
    dC, sdC = grad_buffer(C, c_const)
    nchunks = triton.cdiv(L, BL)
    carries = torch.empty(batch, dim, N, nchunks, **f32)
    dA = torch.empty(batch, dim, N, **f32)
    dD = torch.empty(batch, dim, **f32) if D is not None else None
    dbias = torch.empty(batch, dim, **f32) if delta_bias is not None else None
    scan_bwd_kernel[(triton.cdiv(dim, BD), batch)](
        u, delta, A, Bk, Ck, D, z, delta_bias, dy, dlast_state, carries, du_in, du, ddelta, dz,
        dA, dB, dC, dD, dbias, dim, L, N, W, H, dpg, dpg_c, *u.stride(), *delta.stride(), *sB, *sC,
        *sdB, *sdC, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        HAS_DLAST=dlast_state is not None, HAS_DUIN=du_in is not None, SOFTPLUS=delta_softplus,
        B_CONST=b_const, C_CONST=c_const, REVERSE=reverse, TRANSPOSE=transpose, BD=BD, NP=NP,
        BL=BL, num_warps=warps, num_stages=stages)
    dB = dB.sum(0) if b_const else dB.view(B.shape)
    dC = dC.sum(0) if c_const else dC.view(C.shape)
    return (dA.sum(0), dB, dC, None if dD is None else dD.sum(0),
            None if dbias is None else dbias.sum(0))


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
    dA, dB, dC, dD, dbias = scan_bwd(dy, dlast, u, delta, A.contiguous(), B, C, _c(D), z, _c(delta_bias),
                                     delta_softplus, du, ddelta, dz)
    return (du, ddelta, _cast(dA, A), _cast(dB, B), _cast(dC, C), _cast(dD, D), dz,
            _cast(dbias, delta_bias))
