"""Sweep the Triton scan's block shapes on the benchmark cases (forward and backward)."""
import itertools
import sys

import torch

from ssops.triton_kernels import selective_scan as ts
import run

CONFIGS = {1: list(itertools.product([8, 16, 32, 64], [64, 128, 256], [4, 8])),
           16: list(itertools.product([1, 2, 4, 8], [16, 32, 64], [4, 8]))}

copy = run.copy_bandwidth_gbps()
for name in sys.argv[1].split(","):
    N = run.CASES[name][3]
    rows = []
    for cap, BL, warps in CONFIGS[N]:
        ts.override[N] = (cap, BL, warps)
        try:
            r = run.bench_case(name, "triton", copy)
        except Exception as exc:  # noqa: BLE001 - a config that does not compile is skipped
            print(name, cap, BL, warps, "failed", str(exc)[:80])
            continue
        rows.append((r["fwd_ms"], r["bwd_ms"], cap, BL, warps))
    ts.override.clear()
    rows.sort()
    print(name, "best fwd:", rows[:3])
    print(name, "best bwd:", sorted(rows, key=lambda r: r[1])[:3])
