"""Triton kernels of the selective scan, forward and backward, shared by every scan op.

A program owns BD channels of one batch row.  Its tiles are (BD, T): T steps of the scan for
each channel.  The N states are a loop inside the program, so every reduction over N
(y = sum_n C_n h_n) stays in the thread that holds the step.  For each state n,
``tl.associative_scan`` over the pairs (dA_t, dB_t u_t), with (a1, b1) o (a2, b2) =
(a1 a2, a2 b1 + b2), gives the states h_t = dA_t h_{t-1} + dB_t u_t.

Two kernel families:
- chunked (``scan_fwd_kernel`` / ``scan_bwd_kernel``): one route, any L, walking the sequence
  in chunks of BL steps with the states carried between chunks.  Step s of the scan reads
  position s, or, for the column-major walk (TRANSPOSE), chunks are blocks of whole columns,
  loaded row by row and transposed in registers; REVERSE runs the recurrence from the last step
  to the first.  No flipped or transposed copies in memory.
- fused (``fused_fwd_kernel`` / ``fused_bwd_kernel``): the whole H x W grid in one tile, and
  all K routes of bidirectional_scan / cross_selective_scan in one program; the routes' outputs
  are summed in registers and written once.  The tile holds the grid as (HP, WP) rows
  (row-major routes) or as (WP, HP) columns (column-major routes), padded to powers of two;
  a padded step has dt = 0, i.e. it is the scan's identity (dA = 1, dB u = 0).

The backward recomputes states instead of storing them.  The adjoint recurrence is
g_t = dA_{t+1} g_{t+1} + C_t dy_t (one step later in scan order: a second, shifted load of
delta).  The chunked backward first stores the state at each chunk start (N floats per channel
per chunk), then walks the chunks the other way.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * log2 e)


@triton.jit
def _pair_combine(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _load(ptr, mask):
    return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _chunk(c, t, step, L, W, H, HP: tl.constexpr, BW: tl.constexpr, TRANSPOSE: tl.constexpr):
    """Element t of chunk c, in row order -> (position, valid) of the element ``step`` steps
    after it in the walk.  Row-major walk: chunk c holds steps c*BL + t (BL = HP * BW, HP = 1).
    Column-major walk (TRANSPOSE): chunk c holds columns c*BW .. c*BW+BW-1 of the grid padded
    to HP rows, t = row * BW + column in the chunk, and the walk reaches (row, column) at step
    column * HP + row -- loads stay coalesced along rows; the kernel transposes in registers."""
    if TRANSPOSE:
        g = (c * BW + t % BW) * HP + t // BW + step
        h, w = g % HP, g // HP
        pos = h * W + w
        valid = (g >= 0) & (h < H) & (w < W)
    else:
        pos = c * (HP * BW) + t + step
        valid = (pos >= 0) & (pos < L)
    return pos.to(tl.int64), valid


@triton.jit
def _num_chunks(L, W, BL: tl.constexpr, BW: tl.constexpr, TRANSPOSE: tl.constexpr):
    n = tl.cdiv(L, BL)
    if TRANSPOSE:
        n = tl.cdiv(W, BW)
    return n


@triton.jit
def _tile_positions(t, H, W, HP: tl.constexpr, WP: tl.constexpr, TRANSPOSE: tl.constexpr):
    """Element t of a fused tile -> (memory position, not padding)."""
    if TRANSPOSE:
        h, w = t % HP, t // HP
    else:
        h, w = t // WP, t % WP
    return (h * W + w).to(tl.int64), (t >= 0) & (t < HP * WP) & (h < H) & (w < W)


@triton.jit
def _delta(pre, bias, valid, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(delta after bias, delta after bias and softplus); dt is 0 outside the sequence."""
    if HAS_BIAS:
        pre = pre + bias[:, None]
    dt = pre
    if SOFTPLUS:
        dt = tl.where(pre <= 20.0, tl.log(1.0 + tl.exp(pre)), pre)
    return pre, tl.where(valid, dt, 0.0)


@triton.jit
def _column(tile, ncol, n):
    """tile[:, n] of a (BD, NP) tile."""
    return tl.sum(tl.where(ncol[None, :] == n, tile, 0.0), axis=1)


@triton.jit
def _set_column(tile, ncol, n, value):
    return tl.where(ncol[None, :] == n, value[:, None], tile)


@triton.jit
def _edge(x, t, at):
    """x[:, at] of a (BD, T) tile in row order (t: (1, T) indices).  The first and last steps
    of a walk are corners of the tile: the same index in row and column order."""
    return tl.sum(tl.where(t == at, x, 0.0), axis=1)


@triton.jit
def _bc_row(ptr, n, d, dmask, row, pos, smask, s_dim, s_n, s_l, CONST: tl.constexpr):
    """B[:, n] or C[:, n] over the tile: (BD, 1) for a constant (dim, N) matrix, else (1, T)."""
    if CONST:
        v = _load(ptr + d * s_dim + n * s_n, dmask)[:, None]
    else:
        v = _load(ptr + row + n * s_n + pos * s_l, smask)[None, :]
    return v


@triton.jit
def _to_columns(x, COLS: tl.constexpr, HP: tl.constexpr, WP: tl.constexpr):
    """An (R, HP*WP) tile in row order -> column order (if COLS), through shared memory: the
    column-major routes load in row order, coalesced, and scan in column order."""
    if COLS:
        x = tl.reshape(tl.permute(tl.reshape(x, (x.shape[0], HP, WP)), (0, 2, 1)),
                       (x.shape[0], HP * WP))
    return x


@triton.jit
def _to_rows(x, COLS: tl.constexpr, HP: tl.constexpr, WP: tl.constexpr):
    """The inverse of _to_columns."""
    if COLS:
        x = tl.reshape(tl.permute(tl.reshape(x, (x.shape[0], WP, HP)), (0, 2, 1)),
                       (x.shape[0], HP * WP))
    return x


@triton.jit
def _states_fwd(dt, dtu, A_ptr, d, dmask, N, B_ptr, Brow, sB_d, sB_n, sB_l, C_ptr, Crow, sC_d,
                sC_n, sC_l, pos, smask, carry, ncol, t, last_at,
                B_CONST: tl.constexpr, C_CONST: tl.constexpr, REVERSE: tl.constexpr,
                CARRY: tl.constexpr, COLS: tl.constexpr, HP: tl.constexpr, WP: tl.constexpr):
    """sum_n C_n h_n over the tile, from the states ``carry`` (BD, NP) before its first step;
    returns it with the states after the tile's last step (if CARRY).  With COLS the tile is
    in column order (fused kernels) and pos / smask address it in row order."""
    y = tl.zeros_like(dt)
    for n in range(N):
        a2 = _load(A_ptr + d * N + n, dmask) * LOG2E
        Bn = _to_columns(_bc_row(B_ptr, n, d, dmask, Brow, pos, smask, sB_d, sB_n, sB_l, B_CONST),
                         COLS and not B_CONST, HP, WP)
        Cn = _to_columns(_bc_row(C_ptr, n, d, dmask, Crow, pos, smask, sC_d, sC_n, sC_l, C_CONST),
                         COLS and not C_CONST, HP, WP)
        a_run, h = tl.associative_scan((tl.exp2(dt * a2[:, None]), dtu * Bn), axis=1,
                                       combine_fn=_pair_combine, reverse=REVERSE)
        if CARRY:
            h += a_run * _column(carry, ncol, n)[:, None]
            carry = _set_column(carry, ncol, n, _edge(_to_rows(h, COLS, HP, WP), t, last_at))
        y += h * Cn
    return y, carry


@triton.jit
def _add_bc_grad(acc, grad, ncol, n, ptr, s_l, pos, smask, CONST: tl.constexpr,
                 COLS: tl.constexpr, HP: tl.constexpr, WP: tl.constexpr):
    """Adds grad (BD, T), the gradient of B[:, n] or C[:, n] per channel and step: a constant
    matrix sums it over the tile into column n of acc; a variable one (shared by the channels)
    sums it over the channels and adds it atomically at the tile's positions."""
    if CONST:
        acc = _set_column(acc, ncol, n, _column(acc, ncol, n) + tl.sum(grad, axis=1))
    else:
        tl.atomic_add(ptr + pos[None, :] * s_l,
                      _to_rows(tl.sum(grad, axis=0)[None, :], COLS, HP, WP), mask=smask[None, :],
                      sem="relaxed")
    return acc


@triton.jit
def _states_bwd(dt, dtu, u, dt_next, dout, A_ptr, d, dmask, N, B_ptr, Brow, sB_d, sB_n, sB_l,
                C_ptr, Crow, sC_d, sC_n, sC_l, pos, smask, carry, gcarry, ncol, t, first_at,
                dA_acc, dB_acc, dC_acc, dB_ptr, dBrow, sdB_n, sdB_l, dC_ptr, dCrow, sdC_n, sdC_l,
                B_CONST: tl.constexpr, C_CONST: tl.constexpr, REVERSE: tl.constexpr,
                CARRY: tl.constexpr, COLS: tl.constexpr, HP: tl.constexpr, WP: tl.constexpr):
    """The adjoint over one tile, state by state.  dout is the gradient of sum_n C_n h_n.
    Returns (du, ddt) contributions (BD, T), sum_n C_n h_n (for the z gate), the adjoint
    states before the tile's first step (if CARRY) and the updated (BD, NP) accumulators of
    dA and of constant dB / dC; variable dB / dC are added atomically (summed over channels)."""
    du = tl.zeros_like(dt)
    ddt = tl.zeros_like(dt)
    y = tl.zeros_like(dt)
    for n in range(N):
        An = _load(A_ptr + d * N + n, dmask)
        a2 = An * LOG2E
        Bn = _to_columns(_bc_row(B_ptr, n, d, dmask, Brow, pos, smask, sB_d, sB_n, sB_l, B_CONST),
                         COLS and not B_CONST, HP, WP)
        Cn = _to_columns(_bc_row(C_ptr, n, d, dmask, Crow, pos, smask, sC_d, sC_n, sC_l, C_CONST),
                         COLS and not C_CONST, HP, WP)
        dBu = dtu * Bn
        a_run, h = tl.associative_scan((tl.exp2(dt * a2[:, None]), dBu), axis=1,
                                       combine_fn=_pair_combine, reverse=REVERSE)
        g_run, g = tl.associative_scan((tl.exp2(dt_next * a2[:, None]), Cn * dout), axis=1,
                                       combine_fn=_pair_combine, reverse=not REVERSE)
        if CARRY:
            h += a_run * _column(carry, ncol, n)[:, None]
            g += g_run * _column(gcarry, ncol, n)[:, None]
            gcarry = _set_column(gcarry, ncol, n, _edge(_to_rows(g, COLS, HP, WP), t, first_at))
        y += h * Cn
        dlog = g * (h - dBu)  # g_t * dA_t * h_{t-1}
        gB = g * Bn
        du += gB * dt
        ddt += gB * u + dlog * An[:, None]
        dA_acc = _set_column(dA_acc, ncol, n, _column(dA_acc, ncol, n) + tl.sum(dlog * dt, axis=1))
        dB_acc = _add_bc_grad(dB_acc, g * dtu, ncol, n, dB_ptr + dBrow + n * sdB_n, sdB_l, pos,
                              smask, B_CONST, COLS, HP, WP)
        dC_acc = _add_bc_grad(dC_acc, h * dout, ncol, n, dC_ptr + dCrow + n * sdC_n, sdC_l, pos,
                              smask, C_CONST, COLS, HP, WP)
    return du, ddt, y, gcarry, dA_acc, dB_acc, dC_acc


@triton.jit
def _silu_gate(dy, z):
    """(dy * silu(z), d silu / dz)."""
    sz = tl.sigmoid(z)
    return dy * z * sz, sz * (1 + z * (1 - sz))


@triton.jit
def _group_row(b, pid_d, BD: tl.constexpr, dpg, s_b, s_g):
    """Offset of the B or C rows of this program's channel block (BD divides the group)."""
    return b * s_b + ((pid_d * BD) // dpg) * s_g


@triton.jit
def _channel_block(b, pid_d, dim, bias_ptr, D_ptr, su_b, su_d, sd_b, sd_d, BD: tl.constexpr,
                   HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr):
    """A chunked program's channels: (d, mask, delta_bias, D, row offsets of u and of delta)."""
    d = pid_d * BD + tl.arange(0, BD)
    dmask = d < dim
    bias = _load(bias_ptr + d, dmask) if HAS_BIAS else tl.zeros((BD,), dtype=tl.float32)
    Dv = _load(D_ptr + d, dmask) if HAS_D else tl.zeros((BD,), dtype=tl.float32)
    return (d, dmask, bias, Dv, b * su_b + d[:, None].to(tl.int64) * su_d,
            b * sd_b + d[:, None].to(tl.int64) * sd_d)


# ----------------------------------------------------------------------------- chunked kernels

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
    BD: tl.constexpr, NP: tl.constexpr, HP: tl.constexpr, BW: tl.constexpr,
):
    pid_d, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d, dmask, bias, Dv, urow, drow = _channel_block(b, pid_d, dim, bias_ptr, D_ptr, su_b, su_d,
                                                    sd_b, sd_d, BD, HAS_BIAS, HAS_D)
    ncol = tl.arange(0, NP)
    BL = HP * BW
    t = tl.arange(0, HP * BW)
    Brow = _group_row(b, pid_d, BD, dpg_b, sB_b, sB_g)  # BD divides dim // G: one group per program
    Crow = _group_row(b, pid_d, BD, dpg_c, sC_b, sC_g)
    carry = tl.zeros((BD, NP), dtype=tl.float32)
    nchunks = _num_chunks(L, W, BL, BW, TRANSPOSE)
    for i in range(nchunks):
        c = nchunks - 1 - i if REVERSE else i
        pos, smask = _chunk(c, t, 0, L, W, H, HP, BW, TRANSPOSE)
        m2 = dmask[:, None] & smask[None, :]
        u = _load(u_ptr + urow + pos[None, :] * su_l, m2)
        _, dt = _delta(_load(delta_ptr + drow + pos[None, :] * sd_l, m2), bias, m2, HAS_BIAS,
                       SOFTPLUS)
        y, carry = _states_fwd(_to_columns(dt, TRANSPOSE, HP, BW),
                               _to_columns(dt * u, TRANSPOSE, HP, BW), A_ptr, d, dmask, N, B_ptr,
                               Brow, sB_g, sB_n, sB_l, C_ptr, Crow, sC_g, sC_n, sC_l, pos, smask,
                               carry, ncol, t[None, :], 0 if REVERSE else BL - 1, B_CONST, C_CONST,
                               REVERSE, True, TRANSPOSE, HP, BW)
        y = _to_rows(y, TRANSPOSE, HP, BW)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_YIN:
            y += _load(yin_ptr + urow + pos[None, :] * su_l, m2)
        y = y * y_scale
        if HAS_Z:
            zt = _load(z_ptr + urow + pos[None, :] * su_l, m2)
            y = y * zt * tl.sigmoid(zt)
        tl.store(y_ptr + urow + pos[None, :] * su_l, y.to(y_ptr.dtype.element_ty), mask=m2)
    tl.store(last_ptr + (b * dim + d[:, None]) * N + ncol[None, :], carry,
             mask=dmask[:, None] & (ncol[None, :] < N))


@triton.jit
def scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dy_ptr, dlast_ptr,
    carry_ptr, duin_ptr, du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
    dim, L, N, W, H, dpg_b, dpg_c,
    su_b, su_d, su_l,            # u, z, dy, du_in, du, dz
    sd_b, sd_d, sd_l,            # delta, ddelta
    sB_b, sB_g, sB_n, sB_l,
    sC_b, sC_g, sC_n, sC_l,
    sdB_b, sdB_g, sdB_n, sdB_l,  # dB: float32 (batch, G, N, L) (B, C variable; same for dC)
    sdC_b, sdC_g, sdC_n, sdC_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr,
    HAS_DUIN: tl.constexpr, SOFTPLUS: tl.constexpr, B_CONST: tl.constexpr,
    C_CONST: tl.constexpr, REVERSE: tl.constexpr, TRANSPOSE: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, HP: tl.constexpr, BW: tl.constexpr,
):
    pid_d, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d, dmask, bias, Dv, urow, drow = _channel_block(b, pid_d, dim, bias_ptr, D_ptr, su_b, su_d,
                                                    sd_b, sd_d, BD, HAS_BIAS, HAS_D)
    ncol = tl.arange(0, NP)
    BL = HP * BW
    t = tl.arange(0, HP * BW)
    dn_mask = dmask[:, None] & (ncol[None, :] < N)
    Brow = _group_row(b, pid_d, BD, dpg_b, sB_b, sB_g)
    Crow = _group_row(b, pid_d, BD, dpg_c, sC_b, sC_g)
    dBrow = _group_row(b, pid_d, BD, dpg_b, sdB_b, sdB_g)
    dCrow = _group_row(b, pid_d, BD, dpg_c, sdC_b, sdC_g)
    nchunks = _num_chunks(L, W, BL, BW, TRANSPOSE)
    lrow = (b * dim + d[:, None]) * N + ncol[None, :]
    crow = lrow * nchunks
    first_at = BL - 1 if REVERSE else 0  # the tile's first step in the adjoint's order
    last_at = 0 if REVERSE else BL - 1
    step = -1 if REVERSE else 1

    # pass 1: the state entering each chunk (zero before the first one, in scan order)
    carry = tl.zeros((BD, NP), dtype=tl.float32)
    tl.store(carry_ptr + crow + (nchunks - 1 if REVERSE else 0), carry, mask=dn_mask)
    for i in range(nchunks - 1):
        c = nchunks - 1 - i if REVERSE else i
        pos, smask = _chunk(c, t, 0, L, W, H, HP, BW, TRANSPOSE)
        m2 = dmask[:, None] & smask[None, :]
        _, dt = _delta(_load(delta_ptr + drow + pos[None, :] * sd_l, m2), bias, m2, HAS_BIAS,
                       SOFTPLUS)
        dtu = dt * _load(u_ptr + urow + pos[None, :] * su_l, m2)
        _, carry = _states_fwd(_to_columns(dt, TRANSPOSE, HP, BW),
                               _to_columns(dtu, TRANSPOSE, HP, BW), A_ptr, d, dmask, N, B_ptr,
                               Brow, sB_g, sB_n, sB_l, C_ptr, Crow, sC_g, sC_n, sC_l, pos, smask,
                               carry, ncol, t[None, :], last_at, B_CONST, C_CONST, REVERSE, True,
                               TRANSPOSE, HP, BW)
        tl.store(carry_ptr + crow + (c + step), carry, mask=dn_mask)

    # pass 2: chunks in the other order; recompute states, run the adjoint recurrence
    gcarry = tl.zeros((BD, NP), dtype=tl.float32)
    if HAS_DLAST:
        gcarry = _load(dlast_ptr + lrow, dn_mask)
    dA_acc = tl.zeros((BD, NP), dtype=tl.float32)
    dB_acc = tl.zeros((BD, NP), dtype=tl.float32)
    dC_acc = tl.zeros((BD, NP), dtype=tl.float32)
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    dbias_acc = tl.zeros((BD,), dtype=tl.float32)
    for i in range(nchunks):
        c = i if REVERSE else nchunks - 1 - i
        pos, smask = _chunk(c, t, 0, L, W, H, HP, BW, TRANSPOSE)
        m2 = dmask[:, None] & smask[None, :]
        u = _load(u_ptr + urow + pos[None, :] * su_l, m2)
        pre, dt = _delta(_load(delta_ptr + drow + pos[None, :] * sd_l, m2), bias, m2, HAS_BIAS,
                         SOFTPLUS)
        pos_next, next_mask = _chunk(c, t, step, L, W, H, HP, BW, TRANSPOSE)
        next2 = dmask[:, None] & next_mask[None, :]
        _, dt_next = _delta(_load(delta_ptr + drow + pos_next[None, :] * sd_l, next2), bias, next2,
                            HAS_BIAS, SOFTPLUS)
        carry = _load(carry_ptr + crow + c, dn_mask)
        dy = _load(dy_ptr + urow + pos[None, :] * su_l, m2)
        dout = dy
        if HAS_Z:
            zt = _load(z_ptr + urow + pos[None, :] * su_l, m2)
            dout, dsilu = _silu_gate(dy, zt)
        du, ddt, y, gcarry, dA_acc, dB_acc, dC_acc = _states_bwd(
            _to_columns(dt, TRANSPOSE, HP, BW), _to_columns(dt * u, TRANSPOSE, HP, BW),
            _to_columns(u, TRANSPOSE, HP, BW), _to_columns(dt_next, TRANSPOSE, HP, BW),
            _to_columns(dout, TRANSPOSE, HP, BW), A_ptr, d, dmask, N, B_ptr, Brow, sB_g, sB_n,
            sB_l, C_ptr, Crow, sC_g, sC_n, sC_l, pos, smask, carry, gcarry, ncol, t[None, :],
            first_at, dA_acc, dB_acc, dC_acc, dB_ptr, dBrow, sdB_n, sdB_l, dC_ptr, dCrow, sdC_n,
            sdC_l, B_CONST, C_CONST, REVERSE, True, TRANSPOSE, HP, BW)
        du, ddt, y = (_to_rows(du, TRANSPOSE, HP, BW), _to_rows(ddt, TRANSPOSE, HP, BW),
                      _to_rows(y, TRANSPOSE, HP, BW))
        if HAS_D:
            du += dout * Dv[:, None]
            dD_acc += tl.sum(dout * u, axis=1)
            y += Dv[:, None] * u
        if HAS_Z:
            tl.store(dz_ptr + urow + pos[None, :] * su_l,
                     (dy * y * dsilu).to(dz_ptr.dtype.element_ty), mask=m2)
        if HAS_DUIN:
            du += _load(duin_ptr + urow + pos[None, :] * su_l, m2)
        tl.store(du_ptr + urow + pos[None, :] * su_l, du.to(du_ptr.dtype.element_ty), mask=m2)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(pre)
        ddt = tl.where(m2, ddt, 0.0)
        tl.store(ddelta_ptr + drow + pos[None, :] * sd_l, ddt.to(ddelta_ptr.dtype.element_ty),
                 mask=m2)
        dbias_acc += tl.sum(ddt, axis=1)
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


# ------------------------------------------------------------------------------- fused kernels

@triton.jit
def fused_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    dim, N, H, W, dpg_b, dpg_c,
    su_k, su_b, su_d, su_l,          # u (route stride 0 when the routes share it)
    sd_k, sd_b, sd_d, sd_l,          # delta
    sB_k, sB_b, sB_g, sB_n, sB_l,    # B: (K, batch, G, N, L), or (K, dim, N) via sB_g=d, sB_n
    sC_k, sC_b, sC_g, sC_n, sC_l,
    sy_b, sy_d, sy_l,                # y, z
    y_scale,
    # route k walks in reverse if REV[k], column-major if TR[k]; COLS = any(TR)
    K: tl.constexpr, REV: tl.constexpr, TR: tl.constexpr, COLS: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_CONST: tl.constexpr, C_CONST: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, HP: tl.constexpr, WP: tl.constexpr,
):
    """y = sum over routes k of (scan_k + D_k u_k), scaled, gated by silu(z), written once."""
    pid_d, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d = pid_d * BD + tl.arange(0, BD)
    ncol = tl.arange(0, NP)
    t = tl.arange(0, HP * WP)
    dmask = d < dim
    d64 = d[:, None].to(tl.int64)
    pos, smask = _tile_positions(t, H, W, HP, WP, False)  # every load and store in row order
    m2 = dmask[:, None] & smask[None, :]
    carry = tl.zeros((BD, NP), dtype=tl.float32)
    y_rows = tl.zeros((BD, HP * WP), dtype=tl.float32)
    y_cols = tl.zeros((BD, HP * WP), dtype=tl.float32)
    for k in tl.static_range(K):
        u = _load(u_ptr + k * su_k + b * su_b + d64 * su_d + pos[None, :] * su_l, m2)
        bias = _load(bias_ptr + k * dim + d, dmask) if HAS_BIAS else None
        drow = k * sd_k + b * sd_b + d64 * sd_d
        _, dt = _delta(_load(delta_ptr + drow + pos[None, :] * sd_l, m2), bias, m2, HAS_BIAS,
                       SOFTPLUS)
        u, dt = _to_columns(u, TR[k], HP, WP), _to_columns(dt, TR[k], HP, WP)
        y, _ = _states_fwd(dt, dt * u, A_ptr + k * dim * N, d, dmask, N,
                           B_ptr + k * sB_k, _group_row(b, pid_d, BD, dpg_b, sB_b, sB_g),
                           sB_g, sB_n, sB_l, C_ptr + k * sC_k,
                           _group_row(b, pid_d, BD, dpg_c, sC_b, sC_g), sC_g, sC_n, sC_l,
                           pos, smask, carry, ncol, t[None, :], 0, B_CONST, C_CONST, REV[k], False,
                           TR[k],
                           HP, WP)
        if HAS_D:
            y += _load(D_ptr + k * dim + d, dmask)[:, None] * u
        if TR[k]:
            y_cols += y
        else:
            y_rows += y
    if COLS:
        y_rows += _to_rows(y_cols, True, HP, WP)
    y = y_rows * y_scale
    yoff = b * sy_b + d64 * sy_d + pos[None, :] * sy_l
    if HAS_Z:
        zt = _load(z_ptr + yoff, m2)
        y = y * zt * tl.sigmoid(zt)
    tl.store(y_ptr + yoff, y.to(y_ptr.dtype.element_ty), mask=m2)


@triton.jit
def fused_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dy_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
    dim, N, H, W, dpg_b, dpg_c,
    su_k, su_b, su_d, su_l,          # u, du (du's route stride is 0 when the routes share u)
    sd_k, sd_b, sd_d, sd_l,          # delta, ddelta
    sB_k, sB_b, sB_g, sB_n, sB_l,
    sC_k, sC_b, sC_g, sC_n, sC_l,
    sdB_k, sdB_b, sdB_g, sdB_n, sdB_l,  # float32 dB (variable B; same for dC)
    sdC_k, sdC_b, sdC_g, sdC_n, sdC_l,
    sy_b, sy_d, sy_l,                # dy, z, dz
    y_scale,
    K: tl.constexpr, REV: tl.constexpr, TR: tl.constexpr, COLS: tl.constexpr,
    SHARED_U: tl.constexpr,  # the routes share u: du summed over routes, written once
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_CONST: tl.constexpr, C_CONST: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, HP: tl.constexpr, WP: tl.constexpr,
):
    """Gradients of fused_fwd_kernel.  Per-(batch, route) partial sums of dA, dD, ddelta_bias
    and constant dB / dC go to (batch, K, dim[, N]) buffers, summed over the batch by the caller."""
    pid_d, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d = pid_d * BD + tl.arange(0, BD)
    ncol = tl.arange(0, NP)
    t = tl.arange(0, HP * WP)
    dmask = d < dim
    dn_mask = dmask[:, None] & (ncol[None, :] < N)
    d64 = d[:, None].to(tl.int64)
    pos, smask = _tile_positions(t, H, W, HP, WP, False)  # every load and store in row order
    m2 = dmask[:, None] & smask[None, :]
    yoff = b * sy_b + d64 * sy_d + pos[None, :] * sy_l
    zeros_dn = tl.zeros((BD, NP), dtype=tl.float32)
    y_rows = tl.zeros((BD, HP * WP), dtype=tl.float32)
    y_cols = tl.zeros((BD, HP * WP), dtype=tl.float32)
    du_rows = tl.zeros((BD, HP * WP), dtype=tl.float32)
    du_cols = tl.zeros((BD, HP * WP), dtype=tl.float32)
    for k in tl.static_range(K):
        # the step after each element in the route's walk (row or column order), read in row order
        t_walk = (t % WP) * HP + t // WP if TR[k] else t
        pos_next, next_mask = _tile_positions(t_walk + (-1 if REV[k] else 1), H, W, HP, WP, TR[k])
        next2 = dmask[:, None] & next_mask[None, :]
        u = _load(u_ptr + k * su_k + b * su_b + d64 * su_d + pos[None, :] * su_l, m2)
        bias = _load(bias_ptr + k * dim + d, dmask) if HAS_BIAS else None
        drow = k * sd_k + b * sd_b + d64 * sd_d
        pre, dt = _delta(_load(delta_ptr + drow + pos[None, :] * sd_l, m2), bias, m2, HAS_BIAS,
                         SOFTPLUS)
        _, dt_next = _delta(_load(delta_ptr + drow + pos_next[None, :] * sd_l, next2), bias, next2,
                            HAS_BIAS, SOFTPLUS)
        dout = _load(dy_ptr + yoff, m2) * y_scale
        if HAS_Z:
            dout, _ = _silu_gate(dout, _load(z_ptr + yoff, m2))
        u, dt, dt_next, dout = (_to_columns(u, TR[k], HP, WP), _to_columns(dt, TR[k], HP, WP),
                                _to_columns(dt_next, TR[k], HP, WP),
                                _to_columns(dout, TR[k], HP, WP))
        du, ddt, y, _, dA_acc, dB_acc, dC_acc = _states_bwd(
            dt, dt * u, u, dt_next, dout, A_ptr + k * dim * N, d, dmask, N,
            B_ptr + k * sB_k, _group_row(b, pid_d, BD, dpg_b, sB_b, sB_g), sB_g, sB_n, sB_l,
            C_ptr + k * sC_k, _group_row(b, pid_d, BD, dpg_c, sC_b, sC_g), sC_g, sC_n, sC_l,
            pos, smask, zeros_dn, zeros_dn, ncol, t[None, :], 0, zeros_dn, zeros_dn, zeros_dn,
            dB_ptr + k * sdB_k, _group_row(b, pid_d, BD, dpg_b, sdB_b, sdB_g), sdB_n, sdB_l,
            dC_ptr + k * sdC_k, _group_row(b, pid_d, BD, dpg_c, sdC_b, sdC_g), sdC_n, sdC_l,
            B_CONST, C_CONST, REV[k], False, TR[k], HP, WP)
        part = (b * K + k) * dim + d  # (batch, K, dim) partials
        if HAS_D:
            Dv = _load(D_ptr + k * dim + d, dmask)
            du += dout * Dv[:, None]
            tl.store(dD_ptr + part, tl.sum(dout * u, axis=1), mask=dmask)
            y += Dv[:, None] * u
        if HAS_Z:
            if TR[k]:
                y_cols += y
            else:
                y_rows += y
        if SHARED_U:
            if TR[k]:
                du_cols += du
            else:
                du_rows += du
        else:
            tl.store(du_ptr + k * su_k + b * su_b + d64 * su_d + pos[None, :] * su_l,
                     _to_rows(du, TR[k], HP, WP).to(du_ptr.dtype.element_ty), mask=m2)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(_to_columns(pre, TR[k], HP, WP))
        ddt = _to_rows(ddt, TR[k], HP, WP)
        ddt = tl.where(m2, ddt, 0.0)
        tl.store(ddelta_ptr + drow + pos[None, :] * sd_l, ddt.to(ddelta_ptr.dtype.element_ty),
                 mask=m2)
        if HAS_BIAS:
            tl.store(dbias_ptr + part, tl.sum(ddt, axis=1), mask=dmask)
        prow = part[:, None] * N + ncol[None, :]
        tl.store(dA_ptr + prow, dA_acc, mask=dn_mask)
        if B_CONST:
            tl.store(dB_ptr + prow, dB_acc, mask=dn_mask)
        if C_CONST:
            tl.store(dC_ptr + prow, dC_acc, mask=dn_mask)
    if SHARED_U:
        if COLS:
            du_rows += _to_rows(du_cols, True, HP, WP)
        tl.store(du_ptr + b * su_b + d64 * su_d + pos[None, :] * su_l,
                 du_rows.to(du_ptr.dtype.element_ty), mask=m2)
    if HAS_Z:
        if COLS:
            y_rows += _to_rows(y_cols, True, HP, WP)
        y = y_rows * y_scale
        _, dsilu = _silu_gate(y, _load(z_ptr + yoff, m2))
        tl.store(dz_ptr + yoff, (_load(dy_ptr + yoff, m2) * y * dsilu).to(dz_ptr.dtype.element_ty),
                 mask=m2)
