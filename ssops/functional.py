"""The public ops.  Each checks its inputs once (ssops.validation), then calls its custom op."""
from __future__ import annotations

import os

import torch

from . import _ops
from .dispatch import requested
from .validation import (ROUTES, _fail, _tensor, check_bidirectional_scan, check_cross_merge,
                         check_cross_scan, check_cross_selective_scan, check_selective_scan, grid,
                         FLOATS, PARAM_FLOATS)


_keep = {"states": os.environ.get("SSOPS_KEEP_SCAN_STATES", "0") == "1"}


def set_keep_scan_states(keep: bool) -> None:
    """Trade memory for backward speed.  By default a scan's forward keeps only its inputs for
    the backward, which runs the forward again (as mamba_ssm does).  With ``keep``, when
    gradients follow, a forward on the cuda backend's states-on-lanes kernels (Mamba / Vim
    shapes, N <= 16; VMamba's N = 1) also keeps its state every 16 steps and, with z, its output
    before the gate, float32 (at N = 16, twice u's bfloat16 bytes each), and the backward starts
    from them: a fifth faster at Mamba-LM shapes (bench/NOTES.md).  Only where the backward runs
    on the same backend (``auto`` resolves the two separately).  Process-wide; the default is
    ``SSOPS_KEEP_SCAN_STATES=1`` in the environment, else False."""
    _keep["states"] = bool(keep)


def _keeps_states(*tensors) -> bool:
    """Whether the scans' forward keeps what its backward starts from: asked to, and a
    backward will follow."""
    return (_keep["states"] and torch.is_grad_enabled()
            and any(t is not None and t.requires_grad for t in tensors))


def _full(t):
    """A parameter at the state's precision: float32, or float64 where it already is."""
    return t if t.dtype == torch.float64 else t.float()


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, out_dtype=None, backend=None):
    """Mamba's S6 selective scan; arguments and results as ``mamba_ssm``'s ``selective_scan_fn``.

    With ``delta' = softplus(delta + delta_bias)`` (softplus only if ``delta_softplus``)::

        h_t = exp(delta'_t * A) * h_{t-1} + delta'_t * B_t * u_t        (h_{-1} = 0)
        y_t = C_t . h_t + D * u_t;   y_t *= silu(z_t) if z is given

    Args:
        u, delta: (batch, dim, L), float16 / bfloat16 / float32 / float64, the same dtype.
        A: (dim, N) float32 (float64 for float64 inputs).
        B, C: (dim, N) constant, (batch, N, L) variable, or (batch, G, N, L) grouped: channel d
            uses group d // (dim // G).  Any float dtype.
        D, delta_bias: (dim,) float32/float64, optional.
        z: (batch, dim, L) like u, optional.
        out_dtype: dtype of y; default u's.  ``torch.float32`` gives VMamba's "half in, fp32 out".
        backend: one call's backend ("auto", "cuda", "triton", "reference").
    Returns:
        y (batch, dim, L), and with ``return_last_state`` also h_{L-1} (batch, dim, N) in the
        state dtype (float32, or float64).  The state is always accumulated in float32 or wider.
    """
    check_selective_scan(u, delta, A, B, C, D, z, delta_bias, out_dtype)
    y, last_state, _ = _ops.selective_scan(u, delta, A, B, C, D, z, delta_bias,
                                           bool(delta_softplus), out_dtype or u.dtype,
                                           _keeps_states(u, delta, A, B, C, D, z, delta_bias),
                                           requested(backend))
    return (y, last_state) if return_last_state else y


def bidirectional_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                       combine="sum", out_dtype=None, backend=None):
    """Vim's bidirectional selective scan, both directions in one op, no flipped copies.

    Direction 0 scans positions 0..L-1, direction 1 scans L-1..0, each with its own
    parameters, stacked on a leading axis of size 2:
    u, delta (2, batch, dim, L); A (2, dim, N); B, C (2, dim, N) / (2, batch, N, L) /
    (2, batch, G, N, L); D, delta_bias (2, dim).  Direction 1's inputs are position-aligned:
    u[1][..., t] is the input at position t, and its output at t depends on positions t..L-1.

    y = (y_0 + y_1) for ``combine="sum"``, (y_0 + y_1) / 2 for ``"mean"`` (Vim's
    ``if_devide_out``), then times silu(z) with z (batch, dim, L) shared by both directions,
    which is what Vim's fused path computes.  Returns y (batch, dim, L).
    """
    check_bidirectional_scan(u, delta, A, B, C, D, z, delta_bias, combine, out_dtype)
    return _ops.bidirectional_scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                   combine, out_dtype or u.dtype,
                                   _keeps_states(u, delta, A, B, C, D, z, delta_bias),
                                   requested(backend))[0]


def cross_scan(x, *, layout="bchw", routes="cross", backend=None):
    """VMamba's cross-scan: (B, C, H, W) or (B, H, W, C) -> (B, K, C, H*W).

    Route k lists the pixels in its scan order: "cross" (K=4) = row-major, column-major, and
    both reversed (VMamba's order); "bidi" (K=2) = row-major and reversed; "unidi" (K=1).
    """
    check_cross_scan(x, layout, routes)
    return _ops.cross_scan(x, layout, routes, requested(backend))


def cross_merge(y, H, W, *, layout="bchw", routes="cross", backend=None):
    """The adjoint of ``cross_scan``: (B, K, C, H*W) -> (B, C, H, W) or (B, H, W, C).

    Each position receives the sum of the K routes' values at that position.  The result has
    cross_scan's input shape (``.flatten(2)`` gives VMamba's (B, C, H*W)).
    """
    check_cross_merge(y, H, W, layout, routes)
    return _ops.cross_merge(y, H, W, layout, routes, requested(backend))


def cross_selective_scan_core(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, *,
                              layout="bchw", routes="cross", out_dtype=None, backend=None):
    """The SS2D scan, fused: cross_scan -> one selective scan per route -> cross_merge.

    Args:
        x: (B, C, H, W) or (B, H, W, C) image.
        delta: (B, K, C, H*W); B, C: (B, K, N, H*W) -- per route, in natural (row-major)
            position order: each route reads them in its own scan order.
        A: (K*C, N); D, delta_bias: (K*C,) -- route k uses rows k*C .. k*C+C-1.
    Returns:
        y shaped like x (dtype ``out_dtype`` or x's), equal to
        ``cross_merge(selective_scan(cross_scan(x), routed delta, A, routed B, C, D, ...))``.
    """
    check_cross_selective_scan(x, delta, A, B, C, D, delta_bias, layout, routes, out_dtype)
    return _ops.cross_selective_scan(x, delta, A, B, C, D, delta_bias, bool(delta_softplus), layout,
                                     routes, out_dtype or x.dtype, requested(backend))


def cross_selective_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, *,
                         x_proj_bias=None, delta_softplus=True, layout="bchw", routes="cross",
                         out_dtype=None, backend=None):
    """The SS2D core of VMamba, from its parameters (VMamba's ``cross_selective_scan`` up to,
    not including, ``out_norm``):

        xs = cross_scan(x);  x_dbl_k = x_proj_weight[k] @ xs_k (+ x_proj_bias[k])
        dts_k, B_k, C_k = split(x_dbl_k, [R, N, N]);  dts_k = dt_projs_weight[k] @ dts_k
        ys = selective_scan(xs, dts, -exp(A_logs), B, C, Ds, delta_bias=dt_projs_bias,
                            delta_softplus=True)  (K routes, groups=K)
        y = cross_merge(ys)

    Args: x (B, C, H, W) / (B, H, W, C); x_proj_weight (K, R+2N, C); dt_projs_weight (K, C, R);
    dt_projs_bias (K, C); A_logs (K*C, N); Ds (K*C,); x_proj_bias (K, R+2N) optional.
    The projections act pixel by pixel, so they run here in natural order (one batched
    matmul each) and only the scan follows the routes, inside one fused op.
    Returns y shaped like x, dtype ``out_dtype`` or x's.
    """
    op = "cross_selective_scan"
    K = ROUTES.get(routes, 0)
    _tensor(op, "x", x, (4,), FLOATS, getattr(x, "device", None))
    _, c, _, _ = grid(x, layout)
    _tensor(op, "A_logs", A_logs, (2,), PARAM_FLOATS, x.device)
    _tensor(op, "dt_projs_weight", dt_projs_weight, (3,), FLOATS, x.device)
    N, R = A_logs.shape[1], dt_projs_weight.shape[2]
    expected = {"x_proj_weight": (K, R + 2 * N, c), "dt_projs_weight": (K, c, R),
                "dt_projs_bias": (K, c), "A_logs": (K * c, N), "Ds": (K * c,)}
    for name, t in (("x_proj_weight", x_proj_weight), ("dt_projs_bias", dt_projs_bias),
                    ("Ds", Ds)):
        _tensor(op, name, t, (len(expected[name]),), FLOATS, x.device)
    for name, t in (("x_proj_weight", x_proj_weight), ("dt_projs_weight", dt_projs_weight),
                    ("dt_projs_bias", dt_projs_bias), ("A_logs", A_logs), ("Ds", Ds)):
        if tuple(t.shape) != expected[name]:
            _fail(op, f"{name} must have shape {expected[name]} for K={K}, C={c}, N={N}, "
                      f"R={R}; got {tuple(t.shape)}")
    x_dbl = torch.einsum("bchw,kjc->bkjhw" if layout == "bchw" else "bhwc,kjc->bkjhw",
                         x, x_proj_weight).flatten(3)
    if x_proj_bias is not None:
        x_dbl = x_dbl + x_proj_bias[None, :, :, None]
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    # (K, C, R) @ (B, K, R, L): delta comes out contiguous, as the op reads it; einsum's result
    # is a permuted view, and the op's copy of it (4x x's bytes) cost more than the scan itself
    dts = torch.matmul(dt_projs_weight, dts)
    return cross_selective_scan_core(
        x, dts, -torch.exp(_full(A_logs)), Bs, Cs, _full(Ds), _full(dt_projs_bias.flatten()),
        delta_softplus, layout=layout, routes=routes, out_dtype=out_dtype, backend=backend)
