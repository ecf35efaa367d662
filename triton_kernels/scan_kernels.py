"""Triton kernels of the selective scan, forward and backward, shared by every scan op.

One program owns BLOCK_D channels x all N states of one batch row and walks the sequence in
chunks of BLOCK_L steps.  Inside a chunk, ``tl.associative_scan`` over the pairs
(dA_t, dB_t u_t) with (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2) gives the states; the carry
h from the previous chunk enters as h_t += (prod dA) * carry.

Scan order vs memory: step s of the scan reads position p(s) of its row, p(s) = s, or the
column-major walk p(s) = (s % H) * W + s // H (TRANSPOSE, VMamba's routes 1 and 3).  With
REVERSE the recurrence runs from the last step to the first (Vim's backward direction, VMamba's
routes 2 and 3) -- the same memory, no flipped copies.

The backward recomputes states instead of storing them: a first pass stores only the carry at
each chunk start (N floats per channel per chunk), the second walks the chunks the other way,
recomputes the chunk's states from its carry and runs the adjoint recurrence
g_s = dA_{s+1} g_{s+1} + C_s dy_s (one step later in scan order; a second load of delta).
"""
from __future__ import annotations

import triton
import triton.language as tl

@triton.jit
def _pair_combine(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _positions(s, W, H, TRANSPOSE: tl.constexpr):
    if TRANSPOSE:
        return (s % H) * W + s // H
    return s


@triton.jit
def _delta(delta_ptr, row, smask, pos, sd_l, bias, HAS_BIAS: tl.constexpr,
           SOFTPLUS: tl.constexpr):
    """delta after bias and softplus at the chunk's steps; 0 outside the sequence."""
    pre = tl.load(delta_ptr + row + pos * sd_l, mask=smask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        pre = pre + bias[:, None]
    dt = pre
    if SOFTPLUS:
        dt = tl.where(pre <= 20.0, tl.log(1.0 + tl.exp(pre)), pre)
    return pre, tl.where(smask, dt, 0.0)


@triton.jit
def _edge(x, idx, at):
    """x[:, :, at] of a (BD, NP, BL) tile as (BD, NP)."""
    return tl.sum(tl.where(idx[None, None, :] == at, x, 0.0), axis=2)


@triton.jit
def _bc_constant(ptr, d, n, s_d, s_n, mask, CONST: tl.constexpr):
    """A constant (dim, N) B or C as a (BD, NP, 1) tile; 0 when B/C vary in time."""
    tile = 0.0
    if CONST:  # compile-time branch: one return type, as compiled Triton requires
        tile = tl.load(ptr + d[:, None] * s_d + n[None, :] * s_n, mask=mask,
                       other=0.0).to(tl.float32)[:, :, None]
    return tile


@triton.jit
def _bc_chunk(ptr, row, pos, mask, s_l, constant, CONST: tl.constexpr):
    """B or C at the chunk's steps: a (1, NP, BL) tile, or the constant tile."""
    if CONST:
        tile = constant
    else:
        tile = tl.load(ptr + row + pos[None, :] * s_l, mask=mask, other=0.0).to(tl.float32)[None]
    return tile


@triton.jit
def _chunk_states(u_ptr, delta_ptr, B_ptr, urow, drow, Brow, pos, m2, bc_mask, su_l, sd_l, sB_l,
                  bias, A2, Bc, carry, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                  B_CONST: tl.constexpr, REVERSE: tl.constexpr):
    """Load one chunk and scan it from ``carry``.
    Returns u, delta before and after softplus, B, dB*u and the states h (BD, NP, BL)."""
    u = tl.load(u_ptr + urow + pos[None, :] * su_l, mask=m2, other=0.0).to(tl.float32)
    pre, dt = _delta(delta_ptr, drow, m2, pos[None, :], sd_l, bias, HAS_BIAS, SOFTPLUS)
    Bt = _bc_chunk(B_ptr, Brow, pos, bc_mask, sB_l, Bc, B_CONST)
    dA = tl.exp2(dt[:, None, :] * A2[:, :, None])
    dBu = (dt * u)[:, None, :] * Bt
    a_run, h = tl.associative_scan((dA, dBu), axis=2, combine_fn=_pair_combine, reverse=REVERSE)
    return u, pre, dt, Bt, dBu, h + a_run * carry[:, :, None]


@triton.jit
def scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, yin_ptr, y_ptr, last_ptr,
    dim, L, N, W, H, dpg_b, dpg_c,
    su_b, su_d, su_l,            # u, z, y_in, y (same layout)
    sd_b, sd_d, sd_l,            # delta
    sB_b, sB_g, sB_n, sB_l,      # B: (batch, G, N, L) or, if B_CONST, (dim, N) via sB_g=d, sB_n
    sC_b, sC_g, sC_n, sC_l,
    y_scale,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_YIN: tl.constexpr,
    SOFTPLUS: tl.constexpr, B_CONST: tl.constexpr, C_CONST: tl.constexpr,
    REVERSE: tl.constexpr, TRANSPOSE: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, BL: tl.constexpr,
):
    pid_d, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d = pid_d * BD + tl.arange(0, BD)
    n = tl.arange(0, NP)
    idx = tl.arange(0, BL)
    dmask, nmask = d < dim, n < N
    dn_mask = dmask[:, None] & nmask[None, :]
    gb = (pid_d * BD) // dpg_b  # BD divides dim // G: one B group and one C group per program
    gc = (pid_d * BD) // dpg_c
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_mask, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634  # exp(x) = exp2(x * log2 e)
    bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    Bc = _bc_constant(B_ptr, d, n, sB_g, sB_n, dn_mask, B_CONST)
    Cc = _bc_constant(C_ptr, d, n, sC_g, sC_n, dn_mask, C_CONST)
    urow = b * su_b + d[:, None].to(tl.int64) * su_d
    drow = b * sd_b + d[:, None].to(tl.int64) * sd_d
    Brow = b * sB_b + gb * sB_g + n[:, None] * sB_n
    Crow = b * sC_b + gc * sC_g + n[:, None] * sC_n
    carry = tl.zeros((BD, NP), dtype=tl.float32)
    nchunks = (L + BL - 1) // BL
    for i in range(nchunks):
        c = nchunks - 1 - i if REVERSE else i
        s = c * BL + idx
        smask = s < L
        pos = _positions(s, W, H, TRANSPOSE).to(tl.int64)
        m2 = dmask[:, None] & smask[None, :]
        bc_mask = nmask[:, None] & smask[None, :]
        u, _, _, _, _, h = _chunk_states(u_ptr, delta_ptr, B_ptr, urow, drow, Brow, pos, m2,
                                         bc_mask, su_l, sd_l, sB_l, bias, A2, Bc, carry,
                                         HAS_BIAS, SOFTPLUS, B_CONST, REVERSE)
        carry = _edge(h, idx, 0 if REVERSE else BL - 1)
        y = tl.sum(h * _bc_chunk(C_ptr, Crow, pos, bc_mask, sC_l, Cc, C_CONST), axis=1)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_YIN:
            y += tl.load(yin_ptr + urow + pos[None, :] * su_l, mask=m2, other=0.0).to(tl.float32)
        y = y * y_scale
        if HAS_Z:
            zt = tl.load(z_ptr + urow + pos[None, :] * su_l, mask=m2, other=0.0).to(tl.float32)
            y = y * zt * tl.sigmoid(zt)
        tl.store(y_ptr + urow + pos[None, :] * su_l, y.to(y_ptr.dtype.element_ty), mask=m2)
    lrow = (b * dim + d[:, None]) * N + n[None, :]
    tl.store(last_ptr + lrow, carry, mask=dn_mask)


@triton.jit
def scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dy_ptr, dlast_ptr,
    carry_ptr, duin_ptr, du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
    dim, L, N, W, H, dpg_b, dpg_c,
    su_b, su_d, su_l,            # u, z, dy, du_in, du, dz
    sd_b, sd_d, sd_l,            # delta, ddelta
    sB_b, sB_g, sB_n, sB_l,
    sC_b, sC_g, sC_n, sC_l,
    sdB_b, sdB_g, sdB_n, sdB_l,  # dB: float32 (batch, G, N, L), or per-batch partial (batch, dim, N)
    sdC_b, sdC_g, sdC_n, sdC_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr,
    HAS_DUIN: tl.constexpr, SOFTPLUS: tl.constexpr, B_CONST: tl.constexpr,
    C_CONST: tl.constexpr, REVERSE: tl.constexpr, TRANSPOSE: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, BL: tl.constexpr,
):
    pid_d, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d = pid_d * BD + tl.arange(0, BD)
    n = tl.arange(0, NP)
    idx = tl.arange(0, BL)
    dmask, nmask = d < dim, n < N
    dn_mask = dmask[:, None] & nmask[None, :]
    gb = (pid_d * BD) // dpg_b
    gc = (pid_d * BD) // dpg_c
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_mask, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    Bc = _bc_constant(B_ptr, d, n, sB_g, sB_n, dn_mask, B_CONST)
    Cc = _bc_constant(C_ptr, d, n, sC_g, sC_n, dn_mask, C_CONST)
    urow = b * su_b + d[:, None].to(tl.int64) * su_d
    drow = b * sd_b + d[:, None].to(tl.int64) * sd_d
    Brow = b * sB_b + gb * sB_g + n[:, None] * sB_n
    Crow = b * sC_b + gc * sC_g + n[:, None] * sC_n
    nchunks = (L + BL - 1) // BL
    lrow = (b * dim + d[:, None]) * N + n[None, :]
    crow = lrow * nchunks
    step = -1 if REVERSE else 1  # the adjoint reads delta one step later in scan order

    # pass 1: the state at each chunk's start (in scan order), from the forward recurrence
    carry = tl.zeros((BD, NP), dtype=tl.float32)
    for i in range(nchunks):
        c = nchunks - 1 - i if REVERSE else i
        tl.store(carry_ptr + crow + c, carry, mask=dn_mask)
        s = c * BL + idx
        smask = s < L
        pos = _positions(s, W, H, TRANSPOSE).to(tl.int64)
        m2 = dmask[:, None] & smask[None, :]
        _, _, _, _, _, h = _chunk_states(u_ptr, delta_ptr, B_ptr, urow, drow, Brow, pos, m2,
                                         nmask[:, None] & smask[None, :], su_l, sd_l, sB_l, bias,
                                         A2, Bc, carry, HAS_BIAS, SOFTPLUS, B_CONST, REVERSE)
        carry = _edge(h, idx, 0 if REVERSE else BL - 1)

    # pass 2: chunks in the other order; recompute states, run the adjoint recurrence
    if HAS_DLAST:
        gcarry = tl.load(dlast_ptr + lrow, mask=dn_mask, other=0.0).to(tl.float32)
    else:
        gcarry = tl.zeros((BD, NP), dtype=tl.float32)
    dA_acc = tl.zeros((BD, NP), dtype=tl.float32)
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    dbias_acc = tl.zeros((BD,), dtype=tl.float32)
    if B_CONST:
        dB_acc = tl.zeros((BD, NP), dtype=tl.float32)
    if C_CONST:
        dC_acc = tl.zeros((BD, NP), dtype=tl.float32)
    for i in range(nchunks):
        c = i if REVERSE else nchunks - 1 - i
        s = c * BL + idx
        smask = s < L
        pos = _positions(s, W, H, TRANSPOSE).to(tl.int64)
        m2 = dmask[:, None] & smask[None, :]
        bc_mask = nmask[:, None] & smask[None, :]
        h0 = tl.load(carry_ptr + crow + c, mask=dn_mask, other=0.0)
        u, pre, dt, Bt, dBu, h = _chunk_states(u_ptr, delta_ptr, B_ptr, urow, drow, Brow, pos, m2,
                                               bc_mask, su_l, sd_l, sB_l, bias, A2, Bc, h0,
                                               HAS_BIAS, SOFTPLUS, B_CONST, REVERSE)
        Ct = _bc_chunk(C_ptr, Crow, pos, bc_mask, sC_l, Cc, C_CONST)
        s_next = s + step
        next_mask = dmask[:, None] & ((s_next >= 0) & (s_next < L))[None, :]
        pos_next = _positions(s_next, W, H, TRANSPOSE).to(tl.int64)
        _, dt_next = _delta(delta_ptr, drow, next_mask, pos_next[None, :], sd_l,
                            bias, HAS_BIAS, SOFTPLUS)
        dout = tl.load(dy_ptr + urow + pos[None, :] * su_l, mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_ptr + urow + pos[None, :] * su_l, mask=m2, other=0.0).to(tl.float32)
            y = tl.sum(h * Ct, axis=1)
            if HAS_D:
                y += Dv[:, None] * u
            sz = tl.sigmoid(zt)
            tl.store(dz_ptr + urow + pos[None, :] * su_l,
                     (dout * y * sz * (1 + zt * (1 - sz))).to(dz_ptr.dtype.element_ty), mask=m2)
            dout = dout * zt * sz
        a_next = tl.exp2(dt_next[:, None, :] * A2[:, :, None])
        a_run, gl = tl.associative_scan((a_next, Ct * dout[:, None, :]), axis=2,
                                        combine_fn=_pair_combine, reverse=not REVERSE)
        gs = gl + a_run * gcarry[:, :, None]
        gcarry = _edge(gs, idx, BL - 1 if REVERSE else 0)
        dlog = gs * (h - dBu)
        gB = tl.sum(gs * Bt, axis=1)
        ddt = tl.sum(dlog * A[:, :, None], axis=1) + gB * u
        du = gB * dt
        if HAS_D:
            du += dout * Dv[:, None]
            dD_acc += tl.sum(dout * u, axis=1)
        if HAS_DUIN:
            du += tl.load(duin_ptr + urow + pos[None, :] * su_l, mask=m2, other=0.0)
        tl.store(du_ptr + urow + pos[None, :] * su_l, du.to(du_ptr.dtype.element_ty), mask=m2)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(pre)
        ddt = tl.where(m2, ddt, 0.0)
        tl.store(ddelta_ptr + drow + pos[None, :] * sd_l, ddt.to(ddelta_ptr.dtype.element_ty),
                 mask=m2)
        dbias_acc += tl.sum(ddt, axis=1)
        dA_acc += tl.sum(dlog * dt[:, None, :], axis=2)
        gdtu = gs * (dt * u)[:, None, :]
        hdout = h * dout[:, None, :]
        if B_CONST:
            dB_acc += tl.sum(gdtu, axis=2)
        else:
            tl.atomic_add(dB_ptr + b * sdB_b + gb * sdB_g + n[:, None] * sdB_n + pos[None, :] * sdB_l,
                          tl.sum(gdtu, axis=0), mask=bc_mask, sem="relaxed")
        if C_CONST:
            dC_acc += tl.sum(hdout, axis=2)
        else:
            tl.atomic_add(dC_ptr + b * sdC_b + gc * sdC_g + n[:, None] * sdC_n + pos[None, :] * sdC_l,
                          tl.sum(hdout, axis=0), mask=bc_mask, sem="relaxed")
    # per-batch partial sums of the parameter gradients (summed over the batch by the caller)
    tl.store(dA_ptr + lrow, dA_acc, mask=dn_mask)
    if B_CONST:
        tl.store(dB_ptr + lrow, dB_acc, mask=dn_mask)
    if C_CONST:
        tl.store(dC_ptr + lrow, dC_acc, mask=dn_mask)
    if HAS_D:
        tl.store(dD_ptr + b * dim + d, dD_acc, mask=dmask)
    if HAS_BIAS:
        tl.store(dbias_ptr + b * dim + d, dbias_acc, mask=dmask)
