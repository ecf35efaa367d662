"""A/B of the cuda backend: the states-on-lanes kernels (csrc/lane_scan.cuh)
against the split kernels (selective_scan, csrc/scan_kernels.cuh) and the fused kernels
(bidirectional_scan, csrc/fused.cuh), same inputs, same run, forward and backward.  Prints ms
(CUDA-event medians of 30 after 5 warm-ups) and the largest difference between the two.

    python bench/lane_ab.py          (from bench/, with ssops importable)

AB_CASES=mamba_lm,vim_s_bidi picks cases (any of run.py's; the SS2D core's "other" is the fused
or per-route path it takes without the lanes);
LANES_ONLY=1 times the states-on-lanes kernels alone.
After each case: the training pair, a forward that keeps its chunk states (ssops._ops ``saved``)
and the backward from them (the A/B's backward runs the forward again first).
"""
import os

import torch

from run import BIDI_CASES, CASES, SS2D_CASES
from ss2d import switched
from ssops import _cuda_backend as cuda, testing
from ssops._bench import time_ms


def _flat(out):
    return [t.float() for t in (out if isinstance(out, tuple) else (out,)) if t is not None]


def ab(name, fwd, bwd):
    times, outs = {}, {}
    for mode, min_warps in (("other", float("inf")), ("lanes", 0)):
        if mode == "other" and os.environ.get("LANES_ONLY"):  # (knob builds: bench/lane_variants.sh)
            outs[mode], times[mode] = None, (float("nan"),) * 2
            continue
        # (the SS2D core: the line kernels off, which would serve it either way)
        with switched(LANE_SCAN_MIN_WARPS=min_warps, LINE_FORWARD=False, LINE_BACKWARD=False):
            outs[mode] = _flat(fwd()) + _flat(bwd())
            times[mode] = (time_ms(fwd, warmup=5, repeat=30),
                           time_ms(bwd, warmup=5, repeat=30))
    err = float("nan") if outs["other"] is None else max(
        ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
        for a, b in zip(outs["other"], outs["lanes"]))
    (f0, b0), (f1, b1) = times["other"], times["lanes"]
    print(f"{name:11} fwd {f0:7.3f} {f1:7.3f} {f0 / f1:5.2f}x   bwd {b0:7.3f} {b1:7.3f} "
          f"{b0 / b1:5.2f}x   max rel diff {err:.1e}", flush=True)


def training(op, tensors, fwd, bwd):
    """The forward filling the buffer its backward starts from, and that backward (lanes)."""
    saved = torch.empty(cuda.saved_numel(op, tensors), device="cuda")
    fwd(saved=saved)
    t = [time_ms(lambda: f(saved=saved), warmup=5, repeat=30) for f in (fwd, bwd)]
    print(f"{'':11} training: fwd keeping {saved.numel() * 4 / 2 ** 20:.0f} MB {t[0]:.3f} ms, "
          f"bwd from it {t[1]:.3f} ms", flush=True)


def main():
    print(torch.cuda.get_device_name())
    print(f"{'case':11}     other   lanes  speed-up      other   lanes  speed-up")
    cases = os.environ.get("AB_CASES", "mamba_lm,vim_s,long_seq,vim_s_bidi").split(",")
    for name in (c for c in cases if c in CASES):
        batch, dim, L, N, G, dtype, z = CASES[name]
        args, kw = testing.make_selective_scan_inputs(batch=batch, dim=dim, L=L, N=N,
                                                      b_mode="grouped", c_mode="grouped",
                                                      groups=G, dtype=dtype, device="cuda", z=z)
        u, delta, A, B, C = args
        D, z, bias = kw["D"], kw["z"], kw["delta_bias"]
        dy = torch.randn_like(u)
        fwd = lambda **kw: cuda.selective_scan_fwd(u, delta, A, B, C, D, z, bias, True, u.dtype, **kw)  # noqa: E731
        bwd = lambda **kw: cuda.selective_scan_bwd(dy, None, u, delta, A, B, C, D, z, bias, True, **kw)  # noqa: E731
        ab(name, fwd, bwd)
        training("selective_scan", dict(u=u, delta=delta, A=A, B=B, C=C, z=z), fwd, bwd)
    for name, (batch, dim, L, N, dtype) in BIDI_CASES.items():
        if name not in cases:
            continue
        args, kw = testing.make_selective_scan_inputs(batch=batch, dim=dim, L=L, N=N,
                                                      b_mode="variable", c_mode="variable",
                                                      dtype=dtype, device="cuda",
                                                      direction_axis=True)
        u, delta, A, B, C = args
        D, z, bias = kw["D"], kw["z"], kw["delta_bias"]
        dy = torch.randn_like(u[0])  # (batch, dim, L), like z
        fwd = lambda **kw: cuda.bidirectional_scan_fwd(u, delta, A, B, C, D, z, bias, True, "mean", u.dtype, **kw)  # noqa: E731
        bwd = lambda **kw: cuda.bidirectional_scan_bwd(dy, u, delta, A, B, C, D, z, bias, True, "mean", **kw)  # noqa: E731
        ab(name, fwd, bwd)
        training("bidirectional_scan", dict(u=u, delta=delta, A=A, B=B, C=C, z=z), fwd, bwd)
    for name, (batch, channels, side, N, dtype) in SS2D_CASES.items():
        if name not in cases:
            continue
        (x, delta, A, B, C), kw = testing.make_cross_selective_scan_inputs(
            batch, channels, side, side, N=N, dtype=dtype, device="cuda")
        D, bias = kw["D"], kw["delta_bias"]
        dy = torch.randn_like(x)
        fwd = lambda: cuda.cross_selective_scan_fwd(x, delta, A, B, C, D, bias, True, "bchw", "cross", x.dtype)  # noqa: E731
        bwd = lambda: cuda.cross_selective_scan_bwd(dy, x, delta, A, B, C, D, bias, True, "bchw", "cross")  # noqa: E731
        ab(name, fwd, bwd)


if __name__ == "__main__":
    main()
