"""The SS2D core at VMamba-T's stages, every way ssops can run it, same inputs, same run.

Forward: the cuda line kernels (csrc/line_scan.cuh), the cuda fused kernels (csrc/fused.cuh),
the triton backend, and VMamba's unfused pipeline (run.vmamba_pipeline: cross_scan, one
selective scan over the routes' channels, cross_merge) on cuda and on triton, its delta / B / C
put in route order before the timing, as VMamba's projections give them.  Backward
(--backward): the cuda line kernels, the cuda states-on-lanes backward (the routes' copies, one
flat backward, the merge) and the triton backend.  (run.py times VMamba's pipeline on
mamba_ssm's scan forward and backward, in the same run, where mamba_ssm is importable.)

ms are CUDA-event medians of 30 after 5 warm-ups; GB/s count the bytes the fused op must move
once (forward: x, delta, B, C in, y out; backward: those and dy in, dx, ddelta, dB, dC out);
"diff" is the largest difference from the line kernels' output (every gradient's), relative
to its largest value.

    python bench/ss2d.py [--backward] [--out DIR] [ss2d_s1,...]    (from bench/, ssops importable)
"""
import argparse
import contextlib
import functools

import torch

import ssops
from results_io import run_info, save
from run import SS2D_CASES, max_rel_diff, routed_inputs, vmamba_pipeline
from ssops import _cuda_backend as cuda, dispatch, testing
from ssops._bench import time_ms


@contextlib.contextmanager
def switched(module=cuda, **values):
    """A backend module's switches (_cuda_backend's) set for a while (restored after)."""
    saved = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(module, k, v)


def unfused_way(x, delta, A, B, C, D, bias, backend):
    """VMamba's pipeline on one backend, its inputs put in route order now, outside the timing."""
    routed_delta, routed_B, routed_C = routed_inputs(delta, B, C, *x.shape[2:])
    scan = functools.partial(ssops.selective_scan, backend=backend)
    return lambda: vmamba_pipeline(x, routed_delta, A, routed_B, routed_C, D, bias, scan, backend)


def forward_ways(x, delta, A, B, C, D, bias, triton, call):
    def fused():  # the fused kernels at every size
        with switched(LINE_FORWARD=False, FUSED_CROSS_MIN_L=0):
            return cuda.cross_selective_scan_fwd(*call)
    return {
        "cuda lines": lambda: cuda.cross_selective_scan_fwd(*call),
        "cuda fused": fused,
        "triton": lambda: triton.cross_selective_scan_fwd(*call),
        "cuda unfused": unfused_way(x, delta, A, B, C, D, bias, "cuda"),
        "triton unfused": unfused_way(x, delta, A, B, C, D, bias, "triton"),
    }


def backward_ways(triton, call):
    dy = torch.randn_like(call[0])
    bwd_call = (dy, *call[:-1])

    def lanes():
        with switched(LINE_BACKWARD=False):
            return cuda.cross_selective_scan_bwd(*bwd_call)

    return {
        "cuda lines": lambda: cuda.cross_selective_scan_bwd(*bwd_call),
        "cuda lanes": lanes,
        "triton": lambda: triton.cross_selective_scan_bwd(*bwd_call),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cases", nargs="?", default=",".join(SS2D_CASES))
    p.add_argument("--backward", action="store_true")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    pass_ = "backward" if args.backward else "forward"
    result = dict(run_info(), what=f"SS2D core {pass_}, bchw, 4 routes, softplus", cases={})
    print(f"{result['device']}  torch {result['torch']}  triton {result['triton']}  "
          f"commit {result['commit'][:10]}")
    for name in args.cases.split(","):
        batch, channels, side, N, dtype = SS2D_CASES[name]
        (x, delta, A, B, C), kw = testing.make_cross_selective_scan_inputs(
            batch, channels, side, side, N=N, dtype=dtype, device="cuda", seed=1)
        D, bias = kw["D"], kw["delta_bias"]
        triton = dispatch.resolve("cross_selective_scan", "triton",
                                  dict(x=x, delta=delta, A=A, B=B, C=C))
        call = (x, delta, A, B, C, D, bias, True, "bchw", "cross", dtype)
        once = sum(t.numel() * t.element_size() for t in (x, delta, B, C))
        if args.backward:
            ways = backward_ways(triton, call)
            nbytes = 2 * once + x.numel() * x.element_size()  # dy in; dx, ddelta, dB, dC out
        else:
            ways = forward_ways(x, delta, A, B, C, D, bias, triton, call)
            nbytes = once + x.numel() * x.element_size()  # y out
        ref = ways["cuda lines"]()
        case = dict(batch=batch, channels=channels, H=side, W=side, N=N, dtype=str(dtype),
                    bytes=nbytes, ways={})
        for way, fn in ways.items():
            diff = max_rel_diff(fn(), ref)
            ms = time_ms(fn, warmup=5, repeat=30)
            case["ways"][way] = dict(ms=ms, GBps=nbytes / ms / 1e6, max_rel_diff=diff)
            print(f"{name:8} {pass_:8} {way:15} {ms:7.3f} ms {nbytes / ms / 1e6:7.0f} GB/s  "
                  f"diff {diff:.1e}", flush=True)
        result["cases"][name] = case
    save(result, f"ss2d_{pass_}", args.out)


if __name__ == "__main__":
    main()
