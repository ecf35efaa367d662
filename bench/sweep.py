"""Sweep the scan kernels' launch configurations on benchmark cases (forward and backward).

    python sweep.py mamba_lm,vmamba_t_s1,ss2d_s1 [triton|cuda]   (run from bench/)

triton: each config is (elements per tile, longest chunk, num_warps), see
triton_kernels/launch.py.  cuda: each config is the number of segments a warp scans side by
side per channel (ssops/_cuda_backend.py's work split; "default" is its own choice)."""
import os
import sys

import run

if sys.argv[2:] == ["cuda"]:
    from ssops import _cuda_backend

    copy = run.copy_bandwidth_gbps()
    for name in sys.argv[1].split(","):
        rows = []
        configs = os.environ.get("NSEG", "default,1,2,4,8,16,32").split(",")
        for nseg in [c if c == "default" else int(c) for c in configs]:
            _cuda_backend.override.clear()
            if nseg != "default":
                _cuda_backend.override["nseg"] = nseg
            r = run.bench_case(name, "cuda", copy)
            rows.append((round(r["fwd_ms"], 3), round(r["bwd_ms"], 3), nseg))
            print(name, *rows[-1], flush=True)
        _cuda_backend.override.clear()
        print(name, "best fwd:", sorted(rows)[:3])
        print(name, "best bwd:", sorted(rows, key=lambda r: r[1])[:3])
    sys.exit()

from ssops.triton_kernels import launch  # noqa: E402

CHUNKED = [(1024, 1024, 4), (512, 512, 4), (1024, 1024, 8), (2048, 1024, 8), (512, 512, 2),
           (256, 256, 2), (2048, 2048, 8)]
FUSED = ["per-route", (1024, None, 4), (4096, None, 16)]  # per-route: the chunked kernels, one launch per route (no fused tile)

copy = run.copy_bandwidth_gbps()
for name in sys.argv[1].split(","):
    fused = name in run.BIDI_CASES or name in run.SS2D_CASES
    kinds = ("fused_fwd", "fused_bwd") if fused else ("fwd", "bwd")
    rows = []
    for config in FUSED if fused else CHUNKED:
        for kind in kinds:
            launch.override[kind] = config
        fused_max = launch.FUSED_MAX_TILE
        if config == "per-route":
            launch.override.clear()
            launch.FUSED_MAX_TILE = 0
        try:
            r = run.bench_case(name, "triton", copy)
        except Exception as exc:  # noqa: BLE001 - a config that does not compile is skipped
            print(name, config, "failed", str(exc)[:80], flush=True)
            continue
        finally:
            launch.override.clear()
            launch.FUSED_MAX_TILE = fused_max
        rows.append((round(r["fwd_ms"], 3), round(r["bwd_ms"], 3), config))
        print(name, *rows[-1], flush=True)
    print(name, "best fwd:", sorted(rows)[:3])
    print(name, "best bwd:", sorted(rows, key=lambda r: r[1])[:3])
