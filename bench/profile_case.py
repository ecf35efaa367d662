"""One benchmark case's forward and backward, a few times, for a profiler (ncu / nsys).

    ncu --kernel-name regex:scan_ python bench/profile_case.py vmamba_t_s1 cuda
"""
import sys

import torch

import run

name, backend = sys.argv[1], sys.argv[2]
run.cuda_time_ms = lambda fn: (fn(), fn(), torch.cuda.synchronize(), float("nan"))[-1]  # 2 calls each
run.bench_case(name, backend, copy_gbps=1.0)
