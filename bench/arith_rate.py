"""The two arithmetic rates that bound the scans at N = 16 (bench/NOTES.md, "The Mamba-LM
roofline"): MUFU ex2 (one per state and step) and float32 FMA, measured on this GPU.

Each thread runs CHAINS independent chains of ITERS dependent operations (x <- 2^-x, which
stays in [0.5, 1]; x <- x * a + b with |a| < 1), enough warps to fill every SM; the rate is
operations over the kernel's median time (triton.testing.do_bench).  Prints one JSON line.

    python bench/arith_rate.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl

from results_io import run_info, save

CHAINS, ITERS, BLOCK = 8, 4096, 256


@triton.jit
def _chains_kernel(x_ptr, y_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr, EX2: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x0 = tl.load(x_ptr + offs)
    # eight independent chains a thread (CHAINS), so latency hides behind issue
    x1, x2, x3, x4, x5, x6, x7 = x0 + 0.1, x0 + 0.2, x0 + 0.3, x0 + 0.4, x0 + 0.5, x0 + 0.6, x0 + 0.7
    for _ in range(ITERS):
        if EX2:  # ex2.approx.ftz: one MUFU.EX2 (the non-ftz form adds denormal scaling)
            x0, x1, x2, x3, x4, x5, x6, x7 = [
                tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [-v],
                                          dtype=tl.float32, is_pure=True, pack=1)
                for v in (x0, x1, x2, x3, x4, x5, x6, x7)]
        else:
            x0, x1, x2, x3 = x0 * 0.999 + 0.001, x1 * 0.999 + 0.001, x2 * 0.999 + 0.001, x3 * 0.999 + 0.001
            x4, x5, x6, x7 = x4 * 0.999 + 0.001, x5 * 0.999 + 0.001, x6 * 0.999 + 0.001, x7 * 0.999 + 0.001
    tl.store(y_ptr + offs, x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7)


def rate(ex2: bool) -> dict:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    n = sms * 64 * BLOCK  # 64 blocks of 8 warps an SM, more than fit at once: a full machine
    x = torch.rand(n, device="cuda")
    y = torch.empty_like(x)
    fn = lambda: _chains_kernel[(n // BLOCK,)](x, y, ITERS, BLOCK, ex2, num_warps=8)  # noqa: E731
    fn()
    assert torch.isfinite(y).all()
    ms = triton.testing.do_bench(fn, warmup=25, rep=200)
    ops = n * CHAINS * ITERS
    return {"op": "ex2" if ex2 else "ffma", "ops": ops, "ms": ms, "ops_per_s": ops / ms * 1e3,
            "per_sm_per_clock_at_1980MHz": ops / ms * 1e3 / sms / 1.98e9}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    args = p.parse_args()
    result = {**run_info(), "sms": torch.cuda.get_device_properties(0).multi_processor_count,
              "rates": [rate(True), rate(False)]}
    print(json.dumps(result))
    if args.out:
        save(result, "arith_rate", args.out)


if __name__ == "__main__":
    main()
