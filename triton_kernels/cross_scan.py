"""cross_scan / cross_merge as Triton gather kernels; routes are index maps, no copies."""
from __future__ import annotations

import triton
import triton.language as tl

from ssops._routes import ROUTE_FLAGS, cross_merge_buffers, cross_scan_buffers



@triton.jit
def _route_step_to_pos(s, L, W, H, REV: tl.constexpr, TR: tl.constexpr):
    if REV:
        s = L - 1 - s
    if TR:
        return (s % H) * W + s // H
    return s


@triton.jit
def _route_pos_to_step(p, L, W, H, REV: tl.constexpr, TR: tl.constexpr):
    s = p
    if TR:
        s = (p % W) * H + p // W
    if REV:
        s = L - 1 - s
    return s


@triton.jit
def _cross_kernel(src_ptr, dst_ptr, C, L, W, H, sx_b, sx_c, sx_l, K: tl.constexpr,
                  MERGE: tl.constexpr, FLAGS: tl.constexpr, BC: tl.constexpr, BS: tl.constexpr):
    """Scan: dst[b, k, c, s] = x[b, c, pos_k(s)].
    Merge: dst[b, c, p] = sum_k y[b, k, c, step_k(p)].
    x / the merged output are addressed through (b, c, position) strides (either layout)."""
    b = tl.program_id(2).to(tl.int64)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    i = tl.program_id(0) * BS + tl.arange(0, BS)
    mask = (c[:, None] < C) & (i[None, :] < L)
    kstride = C * L
    acc = tl.zeros((BC, BS), dtype=tl.float32)
    for k in tl.static_range(K):
        if MERGE:
            s = _route_pos_to_step(i, L, W, H, FLAGS[k][0], FLAGS[k][1])
            acc += tl.load(src_ptr + b * K * kstride + k * kstride + c[:, None] * L + s[None, :],
                           mask=mask, other=0.0).to(tl.float32)
        else:
            p = _route_step_to_pos(i, L, W, H, FLAGS[k][0], FLAGS[k][1]).to(tl.int64)
            v = tl.load(src_ptr + b * sx_b + c[:, None] * sx_c + p[None, :] * sx_l, mask=mask)
            tl.store(dst_ptr + b * K * kstride + k * kstride + c[:, None] * L + i[None, :], v,
                     mask=mask)
    if MERGE:
        tl.store(dst_ptr + b * sx_b + c[:, None] * sx_c + i[None, :] * sx_l,
                 acc.to(dst_ptr.dtype.element_ty), mask=mask)


def _launch(src, dst, nat, H, W, routes, merge):
    B, C, L = nat.shape
    flags = ROUTE_FLAGS[routes]
    BS = min(128, triton.next_power_of_2(L))
    BC = min(32, triton.next_power_of_2(C))
    _cross_kernel[(triton.cdiv(L, BS), triton.cdiv(C, BC), B)](
        src, dst, C, L, W, H, *nat.stride(), K=len(flags), MERGE=merge, FLAGS=flags, BC=BC,
        BS=BS)


def cross_scan(x, layout, routes):
    x, H, W, image, out = cross_scan_buffers(x, layout, routes)
    _launch(x, out, image, H, W, routes, merge=False)
    return out


def cross_merge(y, H, W, layout, routes):
    y, out, image = cross_merge_buffers(y, H, W, layout)
    _launch(y, out, image, H, W, routes, merge=True)
    return out
