"""Sweep the Triton scan's block shapes on the benchmark cases (forward and backward)."""
import sys

import torch

from ssops.triton_kernels import selective_scan as ts
import run

# (BLOCK_D cap, BLOCK_L, num_warps, num_stages), by N padded
CONFIGS = {1: [(16, 256, 4, 3), (8, 128, 4, 3), (16, 128, 4, 1), (32, 128, 4, 3), (4, 256, 4, 3),
               (8, 512, 4, 3), (32, 256, 8, 3), (4, 128, 2, 3)],
           16: [(4, 64, 4, 3), (1, 32, 4, 3), (1, 32, 2, 3), (1, 64, 2, 3), (2, 32, 4, 1),
                (1, 128, 4, 3), (1, 16, 1, 3)]}

copy = run.copy_bandwidth_gbps()
for name in sys.argv[1].split(","):
    N = run.CASES[name][3]
    rows = []
    for config in CONFIGS[N]:
        ts.override[N] = config
        try:
            r = run.bench_case(name, "triton", copy)
        except Exception as exc:  # noqa: BLE001 - a config that does not compile is skipped
            print(name, config, "failed", str(exc)[:80])
            continue
        rows.append((round(r["fwd_ms"], 3), round(r["bwd_ms"], 3), config))
        print(name, *rows[-1], flush=True)
    ts.override.clear()
    rows.sort()
    print(name, "best fwd:", rows[:3])
    print(name, "best bwd:", sorted(rows, key=lambda r: r[1])[:3])
