"""The cuda backend's route copies at VMamba-T's stages: device ms per call (CUDA events around
20 back-to-back calls, after a warm-up: no host time between them) and GB/s of the bytes each
moves, beside torch's copy of the same output bytes.

    python bench/cross_bw.py [ss2d_s1,...]      (from bench/, with ssops importable)
"""
import sys

import torch

from run import SS2D_CASES
from ssops import _cuda_backend as cuda


def per_call_ms(fn, calls=20):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def main():
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(SS2D_CASES)
    print(torch.cuda.get_device_name())
    for name in names:
        batch, c, side, _, dtype = SS2D_CASES[name]
        L = side * side
        x = torch.randn(batch, c, side, side, device="cuda", dtype=dtype)
        xs = cuda.cross_scan(x, "bchw", "cross")
        ys = torch.randn(xs.shape, device="cuda")
        delta = torch.randn(batch, 4, c, L, device="cuda", dtype=dtype)
        nx, nxs = x.numel() * x.element_size(), xs.numel() * xs.element_size()
        rows = [
            ("cross_scan", lambda: cuda.cross_scan(x, "bchw", "cross"), nx + nxs),
            ("cross_scan unidi", lambda: cuda.cross_scan(x, "bchw", "unidi"), 2 * nx),
            ("cross_merge", lambda: cuda.cross_merge(xs, side, side, "bchw", "cross"), nx + nxs),
            ("merge float32 -> half", lambda: cuda._merged(ys, side, side, "cross", dtype),
             nx + 2 * nxs),
            ("delta to routes", lambda: cuda._to_routes(delta, side, side, "cross"), 2 * nxs),
            ("from routes", lambda: cuda._from_routes(xs, side, side, "cross", dtype), 2 * nxs),
            ("torch copy (4 routes' bytes)", lambda: xs.clone(), 2 * nxs),
        ]
        for label, fn, nbytes in rows:
            ms = per_call_ms(fn)
            print(f"{name:8} {label:30} {ms:7.3f} ms  {nbytes / ms / 1e6:7.0f} GB/s", flush=True)


if __name__ == "__main__":
    main()
