"""Testing helpers for ssops and for code built on it.

* ``make_*_inputs``: random valid inputs for each op (used by hypothesis strategies below);
* ``compare_backends`` / ``assert_backends_agree``: run an op on backends and compare outputs
  and gradients with the reference backend run on float64 copies of the same inputs;
* ``gradcheck_op``: ``torch.autograd.gradcheck`` of an op on one backend, in float64;
* hypothesis strategies (``selective_scan_inputs`` ...) drawing shapes, groups, options and
  awkward lengths (imported lazily: hypothesis is only needed for them).

Tolerances (``TOLERANCE``) bound the relative L2 error ||out - ref|| / ||ref|| against the
float64 reference, per dtype of the compared tensor.  Half-precision outputs are rounded once
(unit roundoff 2^-11 for float16, 2^-8 for bfloat16): 4 units leave room for the float32 state
and reductions.  float32 carries ~L * 2^-24 growth over the scan plus reduction order in the
gradients; 1e-4 holds for the lengths tested with margin.  float64 checks exactness of the math.
"""
from __future__ import annotations

import math

import torch

from . import functional as F
from .dispatch import BACKENDS, BackendError
from .validation import ROUTES

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4,
             torch.float16: 4 * 2.0 ** -11, torch.bfloat16: 4 * 2.0 ** -8}

OPS = {"selective_scan": F.selective_scan, "bidirectional_scan": F.bidirectional_scan,
       "cross_scan": F.cross_scan, "cross_merge": F.cross_merge,
       "cross_selective_scan": F.cross_selective_scan_core}


# ------------------------------------------------------------------------------ random inputs
def _rand(shape, dtype, device, gen, kind="normal", strided=False):
    """A random tensor; ``strided`` gives a non-contiguous view with the same values' law."""
    full = (*shape[:-1], 2 * shape[-1]) if strided else shape
    if kind == "normal":
        t = torch.randn(full, generator=gen, dtype=torch.float64)
    elif kind == "delta":  # positive step sizes, as after softplus, in Mamba's init range
        t = torch.rand(full, generator=gen, dtype=torch.float64) * 0.2 + 0.001
    else:  # "A": negative, as -exp(A_log)
        t = -torch.exp(torch.randn(full, generator=gen, dtype=torch.float64) * 0.5)
    t = t.to(device=device, dtype=dtype)
    return t[..., ::2] if strided else t


def _bias_kind(delta_softplus):
    # without softplus, delta + delta_bias must stay positive (else exp(delta * A) grows)
    return "normal" if delta_softplus else "delta"


def make_selective_scan_inputs(batch=2, dim=4, L=16, N=4, b_mode="variable", c_mode="variable",
                               groups=1, D=True, z=True, delta_bias=True, delta_softplus=True,
                               dtype=torch.float32, device="cpu", seed=0, strided=False,
                               direction_axis=False):
    """(args, kwargs) for ``selective_scan`` (or ``bidirectional_scan`` with direction_axis).

    b_mode / c_mode: "constant" (dim, N), "variable" (batch, N, L), "grouped" (batch, G, N, L).
    """
    gen = torch.Generator().manual_seed(seed)
    lead = (2,) if direction_axis else ()
    wdt = torch.float64 if dtype == torch.float64 else torch.float32
    r = lambda shape, dt=dtype, kind="normal": _rand(lead + shape, dt, device, gen, kind,  # noqa: E731
                                                     strided and dt == dtype)

    def bc(mode):
        return {"constant": lambda: r((dim, N), wdt), "variable": lambda: r((batch, N, L)),
                "grouped": lambda: r((batch, groups, N, L))}[mode]()

    args = (r((batch, dim, L)), r((batch, dim, L), kind="normal" if delta_softplus else "delta"),
            r((dim, N), wdt, "A"), bc(b_mode), bc(c_mode))
    kwargs = dict(D=r((dim,), wdt) if D else None,
                  z=_rand((batch, dim, L), dtype, device, gen) if z else None,
                  delta_bias=r((dim,), wdt, _bias_kind(delta_softplus)) if delta_bias else None,
                  delta_softplus=delta_softplus)
    return args, kwargs


def make_cross_scan_inputs(batch=2, channels=3, H=4, W=5, layout="bchw", dtype=torch.float32,
                           device="cpu", seed=0, strided=False):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, channels, H, W) if layout == "bchw" else (batch, H, W, channels)
    return _rand(shape, dtype, device, gen, strided=strided)


def make_cross_selective_scan_inputs(batch=2, channels=3, H=4, W=5, N=2, layout="bchw",
                                     routes="cross", D=True, delta_bias=True, delta_softplus=True,
                                     dtype=torch.float32, device="cpu", seed=0):
    """(args, kwargs) for ``cross_selective_scan_core``."""
    K = ROUTES[routes]
    gen = torch.Generator().manual_seed(seed)
    wdt = torch.float64 if dtype == torch.float64 else torch.float32
    r = lambda shape, dt=dtype, kind="normal": _rand(shape, dt, device, gen, kind)  # noqa: E731
    x = make_cross_scan_inputs(batch, channels, H, W, layout, dtype, device, seed + 1)
    L = H * W
    args = (x, r((batch, K, channels, L), kind="normal" if delta_softplus else "delta"),
            r((K * channels, N), wdt, "A"), r((batch, K, N, L)), r((batch, K, N, L)))
    kwargs = dict(D=r((K * channels,), wdt) if D else None,
                  delta_bias=r((K * channels,), wdt, _bias_kind(delta_softplus)) if delta_bias else None,
                  delta_softplus=delta_softplus, layout=layout, routes=routes)
    return args, kwargs


# --------------------------------------------------------------------------------- comparing
def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / max(||ref||, 1e-3 sqrt(n)) in float64; inf where out has a non-finite
    value ref has not.  The floor judges tensors whose RMS is under 1e-3 (an exactly zero
    gradient, say) by their absolute error instead of dividing by almost nothing."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if out.shape != ref.shape:
        return math.inf
    if not torch.equal(torch.isfinite(out), torch.isfinite(ref)):
        return math.inf
    fin = torch.isfinite(ref)
    diff = torch.linalg.vector_norm((out - ref)[fin])
    floor = 1e-3 * math.sqrt(max(int(fin.sum()), 1))
    return (diff / torch.linalg.vector_norm(ref[fin]).clamp_min(floor)).item()


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _float_tensor(a):
    return isinstance(a, torch.Tensor) and a.is_floating_point()


def _run(op, args, kwargs, backend, dtype=None, cotangent_seed=0):
    """Outputs and gradients of op on backend; inputs cast to ``dtype`` if given.

    The cotangents are rounded to the first input's dtype, so the float64 reference and a
    half-precision backend differentiate against exactly the same values."""
    leaves = [a.detach().to(dtype or a.dtype).requires_grad_() if _float_tensor(a) else a
              for a in args]
    kw = {k: (v.detach().to(dtype or v.dtype).requires_grad_() if _float_tensor(v) else v)
          for k, v in kwargs.items()}
    if dtype is not None:
        kw.pop("out_dtype", None)  # the float64 reference keeps float64 outputs
    outs = _as_tuple(op(*leaves, backend=backend, **kw))
    gen = torch.Generator().manual_seed(cotangent_seed)
    low = next(a for a in list(args) + list(kwargs.values()) if _float_tensor(a)).dtype
    cot = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(low).to(o) for o in outs]
    wrt = [a for a in leaves + list(kw.values()) if _float_tensor(a)]
    grads = torch.autograd.grad(outs, wrt, cot, allow_unused=True)
    return [o.detach() for o in outs], list(grads)


def compare_backends(op, *args, backends=None, grads=True, **kwargs):
    """Errors of each backend against the float64 reference.

    Returns {backend: {"out": [rel errors], "grad": [rel errors], "tol_out": [...],
    "tol_grad": [...]}} or {backend: "skipped: <reason>"} for backends that cannot serve.
    """
    op = OPS.get(op, op)
    ref_outs, ref_grads = _run(op, args, kwargs, "reference", torch.float64)
    tensor_inputs = [a for a in list(args) + list(kwargs.values()) if _float_tensor(a)]
    result = {}
    for name in backends or BACKENDS:
        try:
            outs, gs = _run(op, args, kwargs, name)
        except BackendError as exc:
            if backends:  # asked for by name: not serving is a failure
                raise
            result[name] = f"skipped: {exc}"
            continue
        r = {"out": [rel_error(o, ro) for o, ro in zip(outs, ref_outs)],
             "tol_out": [TOLERANCE[o.dtype] for o in outs], "grad": [], "tol_grad": []}
        if grads:
            in_tol = max(TOLERANCE[t.dtype] for t in tensor_inputs)
            out_tol = max(r["tol_out"])
            for g, rg, t in zip(gs, ref_grads, tensor_inputs):
                if (g is None) != (rg is None):
                    r["grad"].append(math.inf)
                elif g is not None:
                    r["grad"].append(rel_error(g, rg))
                else:
                    r["grad"].append(0.0)
                r["tol_grad"].append(max(in_tol, out_tol, TOLERANCE[t.dtype]))
        result[name] = r
    return result


def passed(errors) -> bool:
    """True for a compare_backends entry within tolerance (skipped entries count as passed)."""
    if isinstance(errors, str):
        return True
    return all(e <= t for e, t in zip(errors["out"] + errors["grad"],
                                      errors["tol_out"] + errors["tol_grad"]))


def assert_backends_agree(op, *args, backends=None, grads=True, **kwargs):
    """Assert that ``op`` (a name or a public ssops function) on each backend matches the
    float64 reference in its outputs and, with ``grads``, the gradients of all inputs."""
    result = compare_backends(op, *args, backends=backends, grads=grads, **kwargs)
    bad = {k: v for k, v in result.items() if not passed(v)}
    assert not bad, f"backends disagree with the float64 reference: {bad}"
    return result


def gradcheck_op(op, *args, backend="reference", **kwargs):
    """``torch.autograd.gradcheck`` of ``op`` on ``backend`` with float64 copies of the inputs."""
    op = OPS.get(op, op)
    leaves = [a.detach().double().requires_grad_() if _float_tensor(a) else a for a in args]
    kw = {k: (v.detach().double().requires_grad_() if _float_tensor(v) else v)
          for k, v in kwargs.items()}
    names = [k for k, v in kw.items() if _float_tensor(v)]
    pos = [i for i, a in enumerate(leaves) if _float_tensor(a)]

    def fn(*ts):
        a = list(leaves)
        for i, t in zip(pos, ts[:len(pos)]):
            a[i] = t
        k = dict(kw, **dict(zip(names, ts[len(pos):])))
        return op(*a, backend=backend, **k)

    inputs = tuple(leaves[i] for i in pos) + tuple(kw[n] for n in names)
    return torch.autograd.gradcheck(fn, inputs, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------- hypothesis strategies
def _strategies():
    from hypothesis import strategies as st
    return st


def selective_scan_inputs(dtypes=(torch.float32,), device="cpu", max_batch=3, max_dim=8,
                          max_len=70, max_N=17, direction_axis=False):
    """Strategy drawing (args, kwargs) for selective_scan (or bidirectional_scan)."""
    st = _strategies()

    @st.composite
    def draw(d):
        groups = d(st.sampled_from([1, 2, 4]))
        dim = groups * d(st.integers(1, max(1, max_dim // groups)))
        return make_selective_scan_inputs(
            batch=d(st.integers(1, max_batch)), dim=dim,
            L=d(st.one_of(st.just(1), st.integers(1, max_len))),
            N=d(st.one_of(st.just(1), st.just(min(16, max_N)), st.integers(1, max_N))),
            b_mode=d(st.sampled_from(["constant", "variable", "grouped"])),
            c_mode=d(st.sampled_from(["constant", "variable", "grouped"])), groups=groups,
            D=d(st.booleans()), z=d(st.booleans()), delta_bias=d(st.booleans()),
            delta_softplus=d(st.booleans()), dtype=d(st.sampled_from(dtypes)), device=device,
            seed=d(st.integers(0, 2 ** 31)), strided=d(st.booleans()),
            direction_axis=direction_axis)
    return draw()


def cross_selective_scan_inputs(dtypes=(torch.float32,), device="cpu", max_side=9, max_N=4):
    st = _strategies()

    @st.composite
    def draw(d):
        return make_cross_selective_scan_inputs(
            batch=d(st.integers(1, 2)), channels=d(st.integers(1, 4)),
            H=d(st.integers(1, max_side)), W=d(st.integers(1, max_side)),
            N=d(st.integers(1, max_N)), layout=d(st.sampled_from(["bchw", "bhwc"])),
            routes=d(st.sampled_from(["unidi", "bidi", "cross"])), D=d(st.booleans()),
            delta_bias=d(st.booleans()), delta_softplus=d(st.booleans()),
            dtype=d(st.sampled_from(dtypes)), device=device, seed=d(st.integers(0, 2 ** 31)))
    return draw()


def cross_scan_inputs(dtypes=(torch.float32,), device="cpu", max_side=9):
    """Strategy drawing (x, layout, routes)."""
    st = _strategies()

    @st.composite
    def draw(d):
        layout = d(st.sampled_from(["bchw", "bhwc"]))
        x = make_cross_scan_inputs(d(st.integers(1, 3)), d(st.integers(1, 5)),
                                   d(st.integers(1, max_side)), d(st.integers(1, max_side)),
                                   layout, d(st.sampled_from(dtypes)), device,
                                   d(st.integers(0, 2 ** 31)), d(st.booleans()))
        return x, layout, d(st.sampled_from(["unidi", "bidi", "cross"]))
    return draw()
