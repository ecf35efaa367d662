"""Input checks for every op: the single source of truth for shapes, dtypes and devices.

Each public op calls its ``check_*`` once before dispatch; backends assume checked inputs.
Shape and size errors raise ValueError, dtype/type errors TypeError, each naming the argument.
"""
from __future__ import annotations

import torch

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
PARAM_FLOATS = (torch.float32, torch.float64)  # A, D, delta_bias: kept at full precision
ROUTES = {"unidi": 1, "bidi": 2, "cross": 4}
LAYOUTS = ("bchw", "bhwc")


def _fail(op, msg, exc=ValueError):
    raise exc(f"ssops.{op}: {msg}")


def _tensor(op, name, t, ndim, dtypes, device, optional=False):
    if t is None:
        if optional:
            return
        _fail(op, f"{name} is required", TypeError)
    if not isinstance(t, torch.Tensor):
        _fail(op, f"{name} must be a torch.Tensor, got {type(t).__name__}", TypeError)
    if t.dim() not in ndim:
        _fail(op, f"{name} must have {' or '.join(map(str, ndim))} dims, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        _fail(op, f"{name} must be one of {[str(d) for d in dtypes]}, got {t.dtype}", TypeError)
    if t.device != device:
        _fail(op, f"{name} is on {t.device} but the inputs are on {device}")


def _shape(op, name, t, expected, meaning):
    if t is not None and tuple(t.shape) != tuple(expected):
        _fail(op, f"{name} must have shape {meaning} = {tuple(expected)}, got {tuple(t.shape)}")


def _nonempty(op, **sizes):
    for k, v in sizes.items():
        if v < 1:
            _fail(op, f"{k} must be >= 1, got {v} (ssops ops take non-empty inputs)")


def _out_dtype(op, out_dtype):
    if out_dtype is not None and out_dtype not in FLOATS:
        _fail(op, f"out_dtype must be None or one of {[str(d) for d in FLOATS]}", TypeError)


def _bc(op, name, M, batch, dim, N, L, device):
    _tensor(op, name, M, (2, 3, 4), FLOATS, device)
    if M.dim() == 2:
        _shape(op, name, M, (dim, N), "(dim, N)")
    elif M.dim() == 3:
        _shape(op, name, M, (batch, N, L), "(batch, N, L)")
    else:
        G = M.shape[1]
        if G < 1 or dim % G:
            _fail(op, f"{name} has {G} groups (shape {tuple(M.shape)}); dim={dim} must be a multiple")
        _shape(op, name, M, (batch, G, N, L), "(batch, G, N, L)")


def check_selective_scan(u, delta, A, B, C, D, z, delta_bias, out_dtype, op="selective_scan"):
    _tensor(op, "u", u, (3,), FLOATS, getattr(u, "device", None))
    batch, dim, L = u.shape
    dev = u.device
    _tensor(op, "delta", delta, (3,), (u.dtype,), dev)
    _shape(op, "delta", delta, u.shape, "(batch, dim, L) like u")
    _tensor(op, "A", A, (2,), PARAM_FLOATS, dev)
    if A.shape[0] != dim:
        _fail(op, f"A must have shape (dim, N) with dim={dim}, got {tuple(A.shape)}")
    N = A.shape[1]
    _nonempty(op, batch=batch, dim=dim, L=L, N=N)
    _bc(op, "B", B, batch, dim, N, L, dev)
    _bc(op, "C", C, batch, dim, N, L, dev)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        _tensor(op, name, t, (1,), PARAM_FLOATS, dev, optional=True)
        _shape(op, name, t, (dim,), "(dim,)")
    _tensor(op, "z", z, (3,), (u.dtype,), dev, optional=True)
    _shape(op, "z", z, u.shape, "(batch, dim, L) like u")
    _out_dtype(op, out_dtype)


def check_bidirectional_scan(u, delta, A, B, C, D, z, delta_bias, combine, out_dtype):
    op = "bidirectional_scan"
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D),
                    ("delta_bias", delta_bias)):
        if isinstance(t, torch.Tensor) and (t.dim() == 0 or t.shape[0] != 2):
            _fail(op, f"{name} must be stacked per direction on a leading axis of size 2, "
                      f"got shape {tuple(t.shape)}")
    if combine not in ("sum", "mean"):
        _fail(op, f"combine must be 'sum' or 'mean', got {combine!r}")
    first = lambda t: t[0] if isinstance(t, torch.Tensor) else t  # noqa: E731
    check_selective_scan(first(u), first(delta), first(A), first(B), first(C), first(D), z,
                         first(delta_bias), out_dtype, op=op)
    for name, t in (("delta", delta), ("B", B), ("C", C)):  # both directions alike
        if t.shape[1:] != first(t).shape:
            _fail(op, f"{name} directions differ in shape")


def _layout_routes(op, layout, routes):
    if layout not in LAYOUTS:
        _fail(op, f"layout must be one of {LAYOUTS}, got {layout!r}")
    if routes not in ROUTES:
        _fail(op, f"routes must be one of {tuple(ROUTES)}, got {routes!r}")
    return ROUTES[routes]


def grid(x, layout):
    """(batch, channels, H, W) of a 4-D image tensor in ``layout``."""
    if layout == "bchw":
        return tuple(x.shape)
    b, h, w, c = x.shape
    return b, c, h, w


def check_cross_scan(x, layout, routes):
    op = "cross_scan"
    _layout_routes(op, layout, routes)
    _tensor(op, "x", x, (4,), FLOATS, getattr(x, "device", None))
    b, c, h, w = grid(x, layout)
    _nonempty(op, batch=b, channels=c, H=h, W=w)


def check_cross_merge(y, H, W, layout, routes):
    op = "cross_merge"
    K = _layout_routes(op, layout, routes)
    _tensor(op, "y", y, (4,), FLOATS, getattr(y, "device", None))
    if not (isinstance(H, int) and isinstance(W, int)) or H < 1 or W < 1:
        _fail(op, f"H and W must be positive ints, got H={H!r}, W={W!r}")
    b, _, c, _ = y.shape
    _nonempty(op, batch=b, channels=c)
    _shape(op, "y", y, (b, K, c, H * W), f"(batch, K={K}, C, H*W)")


def check_cross_selective_scan(x, delta, A, B, C, D, delta_bias, layout, routes, out_dtype):
    op = "cross_selective_scan"
    K = _layout_routes(op, layout, routes)
    _tensor(op, "x", x, (4,), FLOATS, getattr(x, "device", None))
    b, c, h, w = grid(x, layout)
    _nonempty(op, batch=b, channels=c, H=h, W=w)
    dev, L = x.device, h * w
    _tensor(op, "delta", delta, (4,), FLOATS, dev)
    _shape(op, "delta", delta, (b, K, c, L), f"(batch, K={K}, C, H*W)")
    _tensor(op, "A", A, (2,), PARAM_FLOATS, dev)
    if A.shape[0] != K * c:
        _fail(op, f"A must have shape (K*C, N) with K*C={K * c}, got {tuple(A.shape)}")
    N = A.shape[1]
    _nonempty(op, N=N)
    for name, t in (("B", B), ("C", C)):
        _tensor(op, name, t, (4,), FLOATS, dev)
        _shape(op, name, t, (b, K, N, L), f"(batch, K={K}, N, H*W)")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        _tensor(op, name, t, (1,), PARAM_FLOATS, dev, optional=True)
        _shape(op, name, t, (K * c,), "(K*C,)")
    _out_dtype(op, out_dtype)
