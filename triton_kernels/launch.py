"""Block shapes, autotuning and launch helpers of the scan kernels (used by every Triton op)."""
from __future__ import annotations

import contextlib
import math
import os

import torch
import triton

from .scan_kernels import fused_bwd_kernel, fused_fwd_kernel, scan_bwd_kernel, scan_fwd_kernel

# The fused kernels hold a whole (padded) H x W grid in one tile.  Measured on the H100 (v5 in
# bench/NOTES.md): faster than per-route launches up to 16 x 16 grids, slower beyond.
FUSED_MAX_TILE = 256
override = {}  # kind -> a DEFAULTS entry, for bench/sweep.py and tests

# kind -> (elements per tile, longest chunk, num_warps); chunked kernels walk chunks of at most
# BL steps, the fused kernels' tile is the whole grid (no chunk: None).
# Larger tiles spill registers on sm_90 (bench/compile_check.py): keep ~8 elements per thread
# in the forward, ~4 in the backward.
# Measured on the H100 (bench/NOTES.md, v4 sweep): small tiles, few warps, except the backward
# with N > 1, where each program's n loop is long enough to keep 4 warps busy.
DEFAULTS = {"fwd": (512, 512, 2), "bwd": (256, 256, 2), "bwd_n": (1024, 1024, 4),
            "fused_fwd": (1024, None, 4), "fused_bwd": (1024, None, 4)}

# Autotuning: on a GPU, the first launch of each key -- (kind, batch, dim, channels per B/C
# group, N, tile steps, dtype, column-major) -- times a few (BLOCK_D, num_warps) around the
# default and keeps the fastest for the process.  SSOPS_AUTOTUNE=0 keeps the defaults.
AUTOTUNE = os.environ.get("SSOPS_AUTOTUNE", "1") != "0"
tuned = {}  # key -> (BLOCK_D, num_warps)


def on_device_of(t: torch.Tensor):
    """Triton launches on the current CUDA device and its stream, whatever device the pointers
    are on: the context in which to launch kernels reading t (on a GPU that may not be current)."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _block_d(dpg: int, cap: int) -> int:
    """Largest power of two <= cap dividing dpg, so a block of channels shares one B/C group."""
    bd = 1
    while bd * 2 <= cap and dpg % (bd * 2) == 0:
        bd *= 2
    return bd


def _defaults(kind, N):
    return override.get(kind) or DEFAULTS["bwd_n" if kind == "bwd" and N > 1 else kind]


def _config(kind, dpg, T, N):
    """Default (BLOCK_D, num_warps) for tiles of T steps: one warp per 256 steps of a long tile
    (a whole 64 x 64 grid takes 16), fewer for tiles of less than 128 elements per warp."""
    tile, _, warps = _defaults(kind, N)
    BD = _block_d(dpg, max(1, tile // T))
    return BD, max(1, min(max(warps, T // 256), BD * T // 128, 16))


def _candidates(BD, warps, dpg, T):
    """The default, then twice the warps, half the channels, and twice both (same work per
    thread), where they split the group evenly and give every thread at least one element."""
    found = [(BD, warps)]
    for bd, w in ((BD, 2 * warps), (BD // 2, warps), (2 * BD, 2 * warps)):
        if bd >= 1 and dpg % bd == 0 and w <= 16 and bd * T >= 32 * w:
            found.append((bd, w))
    return list(dict.fromkeys(found))


def _scratch(t):
    """An output of the same strides for autotuning trials: the kernels add into some outputs
    (y_in / du_in may alias them), so trials must not write the real ones."""
    return None if t is None else torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                                      device=t.device)


def _bench_ms(fn):
    return triton.testing.do_bench(fn, warmup=5, rep=20)


def _may_tune(kind):
    """Not where timing is meaningless (the interpreter), impossible (inside CUDA-graph
    capture) or unwanted (SSOPS_AUTOTUNE=0, a config forced through ``override``)."""
    return (AUTOTUNE and kind not in override and os.environ.get("TRITON_INTERPRET") != "1"
            and not torch.cuda.is_current_stream_capturing())


def _choose(kind, key, dpg, T, N, trial):
    """(BLOCK_D, num_warps) of a launch; ``trial(config)`` launches it on scratch outputs."""
    default = _config(kind, dpg, T, N)
    if not _may_tune(kind):
        return default
    key = (kind, dpg, N, T) + key
    if key not in tuned:
        times = {cfg: _bench_ms(lambda: trial(cfg)) for cfg in _candidates(*default, dpg, T)}
        tuned[key] = min(times, key=times.get)
    return tuned[key]


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
    B, b_const, dpg_b, sB = _bc_layout(B, dim)
    C, c_const, dpg_c, sC = _bc_layout(C, dim)
    HP, BW = chunk_shape(L, N, False, transpose, H, W)

    def launch(config, y, last):
        BD, warps = config
        scan_fwd_kernel[(triton.cdiv(dim, BD), batch)](
            u, delta, A, B, C, D, z, delta_bias, y_in, y, last,
            dim, L, N, W, H, dpg_b, dpg_c, *u.stride(), *delta.stride(), *sB, *sC, y_scale,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            HAS_YIN=y_in is not None, SOFTPLUS=delta_softplus, B_CONST=b_const,
            C_CONST=c_const, REVERSE=reverse, TRANSPOSE=transpose, BD=BD,
            NP=triton.next_power_of_2(N), HP=HP, BW=BW, num_warps=warps)

    config = _choose("fwd", (batch, dim, u.dtype, transpose), math.gcd(dpg_b, dpg_c), HP * BW, N,
                     lambda c: launch(c, _scratch(y), _scratch(last)))
    launch(config, y, last)


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
    Bk, b_const, dpg_b, sB = _bc_layout(B, dim)
    Ck, c_const, dpg_c, sC = _bc_layout(C, dim)
    HP, BW = chunk_shape(L, N, True, transpose, H, W)
    nchunks = triton.cdiv(W, BW) if transpose else triton.cdiv(L, BW)

    def launch(config, du, ddelta, dz):
        BD, warps = config
        f32 = dict(device=u.device, dtype=torch.float32)
        dB = _grad_buffer(B, b_const, (batch, dim, N))
        dC = _grad_buffer(C, c_const, (batch, dim, N))
        sdB = (0,) * 4 if b_const else _bc_layout(dB, dim)[3]
        sdC = (0,) * 4 if c_const else _bc_layout(dC, dim)[3]
        carries = torch.empty(batch, dim, N, nchunks, **f32)
        dA = torch.empty(batch, dim, N, **f32)
        dD = torch.empty(batch, dim, **f32) if D is not None else None
        dbias = torch.empty(batch, dim, **f32) if delta_bias is not None else None
        scan_bwd_kernel[(triton.cdiv(dim, BD), batch)](
            u, delta, A, Bk, Ck, D, z, delta_bias, dy, dlast_state, carries, du_in, du, ddelta,
            dz, dA, dB, dC, dD, dbias, dim, L, N, W, H, dpg_b, dpg_c, *u.stride(), *delta.stride(),
            *sB, *sC, *sdB, *sdC, HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None, HAS_DLAST=dlast_state is not None,
            HAS_DUIN=du_in is not None, SOFTPLUS=delta_softplus, B_CONST=b_const,
            C_CONST=c_const, REVERSE=reverse, TRANSPOSE=transpose, BD=BD,
            NP=triton.next_power_of_2(N), HP=HP, BW=BW, num_warps=warps)
        return (dA.sum(0), dB.sum(0) if b_const else dB, dC.sum(0) if c_const else dC,
                None if dD is None else dD.sum(0), None if dbias is None else dbias.sum(0))

    config = _choose("bwd", (batch, dim, u.dtype, transpose), math.gcd(dpg_b, dpg_c), HP * BW, N,
                     lambda c: launch(c, _scratch(du), _scratch(ddelta), _scratch(dz)))
    return launch(config, du, ddelta, dz)


def _routes_bc(M, dim):
    """Route-stacked B or C (K, ...) -> (is_constant, dim per group, (s_k, s_b, s_g, s_n, s_l))."""
    _, const, dpg, strides = _bc_layout(M[0], dim)
    return const, dpg, (M.stride(0),) + strides


def _fused_meta(delta, A, B, C, flags, H, W):
    """The fused kernels' sizes, B / C strides and constexprs (all but BD and num_warps)."""
    dim = delta.shape[2]
    b_const, dpg_b, sB = _routes_bc(B, dim)
    c_const, dpg_c, sC = _routes_bc(C, dim)
    HP, WP = fused_tile(H, W)
    rev, tr = tuple(int(f[0]) for f in flags), tuple(int(f[1]) for f in flags)
    meta = dict(K=len(flags), REV=rev, TR=tr, COLS=any(tr), B_CONST=b_const, C_CONST=c_const,
                NP=triton.next_power_of_2(A.shape[2]), HP=HP, WP=WP)
    return (dim, A.shape[2], H, W, dpg_b, dpg_c), sB, sC, meta


def _fused_config(kind, delta, A, meta, dpg_b, dpg_c, trial):
    _, batch, dim, _ = delta.shape
    return _choose(kind, (batch, dim, delta.dtype, meta["COLS"]), math.gcd(dpg_b, dpg_c),
                   meta["HP"] * meta["WP"], A.shape[2], trial)


def fused_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, y, *, flags, H, W,
              y_scale=1.0):
    """All K routes in one launch.  Route-stacked inputs: u, delta (K, batch, dim, H*W) (u's
    route stride is 0 when the routes share it), A (K, dim, N), B / C (K, ...) per route as in
    selective_scan, D / delta_bias (K, dim); y, z (batch, dim, H*W) in row-major positions."""
    sizes, sB, sC, meta = _fused_meta(delta, A, B, C, flags, H, W)

    def launch(config, y):
        BD, warps = config
        fused_fwd_kernel[(triton.cdiv(sizes[0], BD), delta.shape[1])](
            u, delta, A, B, C, D, z, delta_bias, y, *sizes, *u.stride(), *delta.stride(), *sB,
            *sC, *y.stride(), y_scale, HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, BD=BD, num_warps=warps,
            **meta)

    launch(_fused_config("fused_fwd", delta, A, meta, *sizes[4:],
                         lambda c: launch(c, _scratch(y))), y)


def fused_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, du, ddelta, dz, *, flags,
              H, W, y_scale=1.0):
    """Gradients of fused_fwd: du (u's strides; summed over routes when they share u), ddelta,
    dz written in place; returns float32 (dA, dB, dC, dD, ddelta_bias) in the inputs' shapes."""
    sizes, sB, sC, meta = _fused_meta(delta, A, B, C, flags, H, W)
    K, batch, dim, _ = delta.shape
    b_const, c_const = meta["B_CONST"], meta["C_CONST"]
    partial = (batch, K, dim, A.shape[2])

    def launch(config, du, ddelta, dz):
        BD, warps = config
        f32 = dict(device=u.device, dtype=torch.float32)
        dB = _grad_buffer(B, b_const, partial)
        dC = _grad_buffer(C, c_const, partial)
        sdB = (0,) * 5 if b_const else _routes_bc(dB, dim)[2]
        sdC = (0,) * 5 if c_const else _routes_bc(dC, dim)[2]
        dA = torch.empty(partial, **f32)
        dD = torch.empty(partial[:3], **f32) if D is not None else None
        dbias = torch.empty(partial[:3], **f32) if delta_bias is not None else None
        fused_bwd_kernel[(triton.cdiv(dim, BD), batch)](
            u, delta, A, B, C, D, z, delta_bias, dy, du, ddelta, dz, dA, dB, dC, dD, dbias,
            *sizes, *u.stride(), *delta.stride(), *sB, *sC, *sdB, *sdC, *dy.stride(), y_scale,
            SHARED_U=u.stride(0) == 0, HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, BD=BD, num_warps=warps,
            **meta)
        return (dA.sum(0), dB.sum(0) if b_const else dB, dC.sum(0) if c_const else dC,
                None if dD is None else dD.sum(0), None if dbias is None else dbias.sum(0))

    config = _fused_config("fused_bwd", delta, A, meta, *sizes[4:],
                           lambda c: launch(c, _scratch(du), _scratch(ddelta), _scratch(dz)))
    return launch(config, du, ddelta, dz)
