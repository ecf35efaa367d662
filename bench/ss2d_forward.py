"""The SS2D core's forward at VMamba-T's stages, every way ssops can run it, same inputs, same
run: the cuda line kernel (csrc/line_scan.cuh), the cuda fused kernels (csrc/fused.cuh), the
triton backend, and the unfused pipeline (cross_scan, one selective scan over the routes'
channels, cross_merge) on cuda and on triton.  ms are CUDA-event medians of 30 after 5
warm-ups; GB/s count the bytes the fused op must move (x, delta, B, C in, y out, once); "diff"
is the largest difference from the line kernel's output, relative to its largest value.

    python bench/ss2d_forward.py [--out DIR] [ss2d_s1,...]    (from bench/, ssops importable)
"""
import argparse

import torch

from models import unfused_core
from results_io import run_info, save
from run import SS2D_CASES
from ssops import _cuda_backend as cuda, dispatch, testing
from ssops._bench import time_ms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cases", nargs="?", default=",".join(SS2D_CASES))
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    result = dict(run_info(), what="SS2D core forward, bchw, 4 routes, softplus", cases={})
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
        nbytes = sum(t.numel() * t.element_size() for t in (x, delta, B, C)) + x.numel() * 2

        def fused():  # the fused kernels at every size
            saved = cuda.LINE_FORWARD, cuda.FUSED_CROSS_MIN_L
            cuda.LINE_FORWARD, cuda.FUSED_CROSS_MIN_L = False, 0
            try:
                return cuda.cross_selective_scan_fwd(*call)
            finally:
                cuda.LINE_FORWARD, cuda.FUSED_CROSS_MIN_L = saved

        ways = {
            "cuda lines": lambda: cuda.cross_selective_scan_fwd(*call),
            "cuda fused": fused,
            "triton": lambda: triton.cross_selective_scan_fwd(*call),
            "cuda unfused": lambda: unfused_core(x, delta, A, B, C, D, bias, backend="cuda"),
            "triton unfused": lambda: unfused_core(x, delta, A, B, C, D, bias,
                                                   backend="triton"),
        }
        ref = ways["cuda lines"]().float()
        scale = ref.abs().max().item()
        case = dict(batch=batch, channels=channels, H=side, W=side, N=N, dtype=str(dtype),
                    bytes=nbytes, ways={})
        for way, fn in ways.items():
            diff = (fn().float() - ref).abs().max().item() / scale
            ms = time_ms(fn, warmup=5, repeat=30)
            case["ways"][way] = dict(ms=ms, GBps=nbytes / ms / 1e6, max_rel_diff=diff)
            print(f"{name:8} {way:15} {ms:7.3f} ms {nbytes / ms / 1e6:7.0f} GB/s  "
                  f"diff {diff:.1e}", flush=True)
        result["cases"][name] = case
    save(result, "ss2d_forward", args.out)


if __name__ == "__main__":
    main()
