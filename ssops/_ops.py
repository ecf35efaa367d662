"""The ops as ``torch.library`` custom ops: autograd, fake (meta) kernels and FLOP formulas.

Every op takes the *requested* backend name as its last argument and resolves it to a backend
module when it runs (``dispatch.resolve``), so torch.compile sees one opaque op per call and
the choice still follows the inputs' device, dtype and sizes.  Backward ops resolve the same
request again on the saved inputs.

The scans' forward ops also take ``save`` (keep states for a backward that will follow:
ssops.set_keep_scan_states) and return a float32 buffer ``saved``: what the backend's forward
keeps for its backward (``saved_numel``, a backend's optional function of the op and its
inputs; empty for backends without it, and whenever ``save`` is False).  The backward passes it
on only to a backend that asks for a buffer of that size for these inputs, i.e. the one that
filled it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from .dispatch import resolve
from .validation import ROUTES

_SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _named(names, values):
    return dict(zip(names, values))


def _present(tensors):
    """The gradients of present inputs, contiguous as the fake kernels promise."""
    return [t.contiguous() for t in tensors if t is not None]


def _fake_grads(inputs):
    return [t.new_empty(t.shape) for t in inputs if t is not None]


def _spread(grads, like):
    """Map the backward op's list of gradients (present inputs only) back onto ``like``."""
    it = iter(grads)
    return tuple(None if t is None else next(it) for t in like)


def _state_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _saved_numel(impl, op: str, tensors: dict) -> int:
    numel = getattr(impl, "saved_numel", None)
    return numel(op, tensors) if numel is not None else 0


def _saved_buffer(impl, op, tensors, save, like, request):
    """What the forward's backend keeps, where asked to and the backward will run on that
    backend too (auto resolves the two separately); else empty."""
    keeps = save and resolve(op, request, tensors, backward=True) is impl
    n = _saved_numel(impl, op, tensors) if keeps else 0
    return like.new_empty(n, dtype=torch.float32)


def _fake_saved(op, backend, tensors, save, like):
    impl = resolve(op, backend, tensors) if save else None
    return _saved_buffer(impl, op, tensors, save, like, backend)


def _fill_kw(saved):
    """``saved=`` for the forward that sized the buffer, where it keeps one."""
    return {"saved": saved} if saved.numel() else {}


def _saved_kw(saved, impl, op, tensors):
    """``saved=`` for the backward's backend where it keeps a buffer of this size (it may not
    be the backend whose forward filled it)."""
    n = saved.numel()
    return {"saved": saved} if n and n == _saved_numel(impl, op, tensors) else {}


# ----------------------------------------------------------------------------- selective_scan
@torch.library.custom_op("ssops::selective_scan", mutates_args=())
def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                   z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                   out_dtype: torch.dtype, save: bool,
                   backend: str) -> tuple[Tensor, Tensor, Tensor]:
    args = (u, delta, A, B, C, D, z, delta_bias)
    tensors = _named(_SCAN_ARGS, args)
    impl = resolve("selective_scan", backend, tensors)
    saved = _saved_buffer(impl, "selective_scan", tensors, save, u, backend)
    y, last_state = impl.selective_scan_fwd(*args, delta_softplus, out_dtype, **_fill_kw(saved))
    return y.contiguous(), last_state.contiguous(), saved


@selective_scan.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, save, backend):
    tensors = _named(_SCAN_ARGS, (u, delta, A, B, C, D, z, delta_bias))
    return (u.new_empty(u.shape, dtype=out_dtype),
            u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=_state_dtype(u)),
            _fake_saved("selective_scan", backend, tensors, save, u))


@torch.library.custom_op("ssops::selective_scan_backward", mutates_args=())
def selective_scan_backward(dy: Tensor, dlast_state: Optional[Tensor], saved: Tensor, u: Tensor,
                            delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                            z: Optional[Tensor], delta_bias: Optional[Tensor],
                            delta_softplus: bool, backend: str) -> list[Tensor]:
    args = (u, delta, A, B, C, D, z, delta_bias)
    tensors = _named(_SCAN_ARGS, args)
    impl = resolve("selective_scan", backend, tensors, backward=True)
    return _present(impl.selective_scan_bwd(dy, dlast_state, *args, delta_softplus,
                                            **_saved_kw(saved, impl, "selective_scan", tensors)))


@selective_scan_backward.register_fake
def _(dy, dlast_state, saved, *args):
    return _fake_grads(args[:8])


def _scan_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:8], output[2])
    ctx.mark_non_differentiable(output[2])
    ctx.delta_softplus, ctx.backend = inputs[8], inputs[11]


def _scan_backward(ctx, dy, dlast_state, _):
    *inputs, saved = ctx.saved_tensors
    grads = selective_scan_backward(dy, dlast_state, saved, *inputs, ctx.delta_softplus,
                                    ctx.backend)
    return _spread(grads, inputs) + (None,) * 4


selective_scan.register_autograd(_scan_backward, setup_context=_scan_setup)


# ------------------------------------------------------------------------- bidirectional_scan
@torch.library.custom_op("ssops::bidirectional_scan", mutates_args=())
def bidirectional_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                       delta_softplus: bool, combine: str, out_dtype: torch.dtype, save: bool,
                       backend: str) -> tuple[Tensor, Tensor]:
    args = (u, delta, A, B, C, D, z, delta_bias)
    tensors = _named(_SCAN_ARGS, args)
    impl = resolve("bidirectional_scan", backend, tensors)
    saved = _saved_buffer(impl, "bidirectional_scan", tensors, save, u, backend)
    y = impl.bidirectional_scan_fwd(*args, delta_softplus, combine, out_dtype, **_fill_kw(saved))
    return y.contiguous(), saved


@bidirectional_scan.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, out_dtype, save, backend):
    tensors = _named(_SCAN_ARGS, (u, delta, A, B, C, D, z, delta_bias))
    return (u.new_empty(u.shape[1:], dtype=out_dtype),
            _fake_saved("bidirectional_scan", backend, tensors, save, u))


@torch.library.custom_op("ssops::bidirectional_scan_backward", mutates_args=())
def bidirectional_scan_backward(dy: Tensor, saved: Tensor, u: Tensor, delta: Tensor, A: Tensor,
                                B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
                                delta_bias: Optional[Tensor], delta_softplus: bool, combine: str,
                                backend: str) -> list[Tensor]:
    args = (u, delta, A, B, C, D, z, delta_bias)
    tensors = _named(_SCAN_ARGS, args)
    impl = resolve("bidirectional_scan", backend, tensors, backward=True)
    return _present(impl.bidirectional_scan_bwd(
        dy, *args, delta_softplus, combine,
        **_saved_kw(saved, impl, "bidirectional_scan", tensors)))


@bidirectional_scan_backward.register_fake
def _(dy, saved, *args):
    return _fake_grads(args[:8])


def _bidi_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:8], output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.delta_softplus, ctx.combine, ctx.backend = inputs[8], inputs[9], inputs[12]


def _bidi_backward(ctx, dy, _):
    *inputs, saved = ctx.saved_tensors
    grads = bidirectional_scan_backward(dy, saved, *inputs, ctx.delta_softplus, ctx.combine,
                                        ctx.backend)
    return _spread(grads, inputs) + (None,) * 5


bidirectional_scan.register_autograd(_bidi_backward, setup_context=_bidi_setup)


# -------------------------------------------------------------------- cross_scan / cross_merge
# Linear maps, each the other's adjoint: each one's backward is the other.
@torch.library.custom_op("ssops::cross_scan", mutates_args=())
def cross_scan(x: Tensor, layout: str, routes: str, backend: str) -> Tensor:
    return resolve("cross_scan", backend, {"x": x}).cross_scan(x, layout, routes).contiguous()


@cross_scan.register_fake
def _(x, layout, routes, backend):
    b, c, h, w = x.shape if layout == "bchw" else (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
    return x.new_empty((b, ROUTES[routes], c, h * w))


@torch.library.custom_op("ssops::cross_merge", mutates_args=())
def cross_merge(y: Tensor, H: int, W: int, layout: str, routes: str, backend: str) -> Tensor:
    return resolve("cross_merge", backend, {"y": y}).cross_merge(y, H, W, layout, routes).contiguous()


@cross_merge.register_fake
def _(y, H, W, layout, routes, backend):
    b, _, c, _ = y.shape
    return y.new_empty((b, c, H, W) if layout == "bchw" else (b, H, W, c))


def _scan_routes_setup(ctx, inputs, output):
    x, ctx.layout, ctx.routes, ctx.backend = inputs
    ctx.hw = (x.shape[2], x.shape[3]) if ctx.layout == "bchw" else (x.shape[1], x.shape[2])


def _merge_routes_setup(ctx, inputs, output):
    _, _, _, ctx.layout, ctx.routes, ctx.backend = inputs


cross_scan.register_autograd(
    lambda ctx, dy: (cross_merge(dy, *ctx.hw, ctx.layout, ctx.routes, ctx.backend), None, None, None),
    setup_context=_scan_routes_setup)
cross_merge.register_autograd(
    lambda ctx, dx: (cross_scan(dx, ctx.layout, ctx.routes, ctx.backend),) + (None,) * 5,
    setup_context=_merge_routes_setup)


# ----------------------------------------------------------------------- cross_selective_scan
_CSS_ARGS = ("x", "delta", "A", "B", "C", "D", "delta_bias")


@torch.library.custom_op("ssops::cross_selective_scan", mutates_args=())
def cross_selective_scan(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         D: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                         layout: str, routes: str, out_dtype: torch.dtype, backend: str) -> Tensor:
    args = (x, delta, A, B, C, D, delta_bias)
    impl = resolve("cross_selective_scan", backend, _named(_CSS_ARGS, args))
    return impl.cross_selective_scan_fwd(*args, delta_softplus, layout, routes,
                                         out_dtype).contiguous()


@cross_selective_scan.register_fake
def _(x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes, out_dtype, backend):
    return x.new_empty(x.shape, dtype=out_dtype)


@torch.library.custom_op("ssops::cross_selective_scan_backward", mutates_args=())
def cross_selective_scan_backward(dy: Tensor, x: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                                  C: Tensor, D: Optional[Tensor], delta_bias: Optional[Tensor],
                                  delta_softplus: bool, layout: str, routes: str,
                                  backend: str) -> list[Tensor]:
    args = (x, delta, A, B, C, D, delta_bias)
    impl = resolve("cross_selective_scan", backend, _named(_CSS_ARGS, args), backward=True)
    return _present(impl.cross_selective_scan_bwd(dy, *args, delta_softplus, layout, routes))


@cross_selective_scan_backward.register_fake
def _(dy, *args):
    return _fake_grads(args[:7])


def _css_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:7])
    ctx.flags = (inputs[7], inputs[8], inputs[9], inputs[11])  # softplus, layout, routes, backend


def _css_backward(ctx, dy):
    saved = ctx.saved_tensors
    grads = cross_selective_scan_backward(dy, *saved, *ctx.flags)
    return _spread(grads, saved) + (None,) * 5


cross_selective_scan.register_autograd(_css_backward, setup_context=_css_setup)


# ------------------------------------------------------------------------------------ FLOPs
def scan_flops(batch: int, dim: int, L: int, N: int, with_D: bool, with_z: bool) -> int:
    """VMamba's count for one selective scan (flops_selective_scan_fn): 9 per (b, d, l, n)
    for the discretisation, the state update and the read-out, plus one per (b, d, l) each
    for the D skip and the z gate."""
    return 9 * batch * dim * L * N + batch * dim * L * (int(with_D) + int(with_z))


@register_flop_formula(torch.ops.ssops.selective_scan)
def _(u, delta, A, B, C, D, z, *args, out_shape=None, **kwargs):
    return scan_flops(*u, A[1], D is not None, z is not None)


@register_flop_formula(torch.ops.ssops.bidirectional_scan)
def _(u, delta, A, B, C, D, z, *args, out_shape=None, **kwargs):
    return 2 * scan_flops(*u[1:], A[2], D is not None, z is not None)


@register_flop_formula(torch.ops.ssops.cross_selective_scan)
def _(x, delta, A, B, C, D, *args, out_shape=None, **kwargs):
    b, k, c, L = delta
    return scan_flops(b, k * c, L, A[1], D is not None, False)


# Backward: the usual estimate of twice the forward's work.
@register_flop_formula(torch.ops.ssops.selective_scan_backward)
def _(dy, dlast_state, saved, u, delta, A, B, C, D, z, *args, out_shape=None, **kwargs):
    return 2 * scan_flops(*u, A[1], D is not None, z is not None)


@register_flop_formula(torch.ops.ssops.bidirectional_scan_backward)
def _(dy, saved, u, delta, A, B, C, D, z, *args, out_shape=None, **kwargs):
    return 4 * scan_flops(*u[1:], A[2], D is not None, z is not None)


@register_flop_formula(torch.ops.ssops.cross_selective_scan_backward)
def _(dy, x, delta, A, B, C, D, *args, out_shape=None, **kwargs):
    b, k, c, L = delta
    return 2 * scan_flops(b, k * c, L, A[1], D is not None, False)
