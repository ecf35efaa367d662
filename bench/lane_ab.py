"""A/B of the cuda backend's selective_scan forward at the N = 16 cases: the states-on-lanes
kernel (csrc/lane_scan.cuh) against the split kernels (csrc/scan_kernels.cuh), same inputs,
same run.  Prints ms (CUDA-event medians of 30 after 5 warm-ups) and the exp2 count.

    python bench/lane_ab.py          (from bench/, with ssops importable)
"""
import torch

from run import CASES
from ssops import _cuda_backend as cuda, testing
from ssops._bench import time_ms


def main():
    print(f"{torch.cuda.get_device_name()}")
    print(f"{'case':10} {'split ms':>9} {'lanes ms':>9} {'speed-up':>8} {'G exp2':>7}")
    for name in ("mamba_lm", "vim_s", "long_seq"):
        batch, dim, L, N, G, dtype, z = CASES[name]
        args, kw = testing.make_selective_scan_inputs(batch=batch, dim=dim, L=L, N=N,
                                                      b_mode="grouped", c_mode="grouped",
                                                      groups=G, dtype=dtype, device="cuda", z=z)
        u, delta, A, B, C = args
        y, last = torch.empty_like(u), torch.empty(batch, dim, N, device="cuda")
        times, outs = {}, {}
        for mode, min_warps in (("split", float("inf")), ("lanes", 0)):
            cuda.LANE_SCAN_MIN_WARPS = min_warps

            def fwd():
                cuda.scan_fwd(u, delta, A, B, C, kw["D"], kw["z"], kw["delta_bias"], True, y,
                              last)
            y.fill_(float("nan"))
            fwd()
            outs[mode] = y.float().clone()
            times[mode] = time_ms(fwd, warmup=5, repeat=30)
        err = (outs["split"] - outs["lanes"]).abs().max().item()
        print(f"{name:10} {times['split']:9.3f} {times['lanes']:9.3f} "
              f"{times['split'] / times['lanes']:7.2f}x {batch * dim * L * N / 1e9:7.3f}"
              f"   max |split - lanes| = {err:.2e}")


if __name__ == "__main__":
    main()
