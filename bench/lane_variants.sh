#!/usr/bin/env bash
# The states-on-lanes kernels' experiment knobs (csrc/lane_scan.cuh), one build each; run from
# bench/ with the laid-out package (bench/gpu_run.sh EXTRA="bash lane_variants.sh").
variants=(${VARIANTS:-"-DSSOPS_LANE_MINB=4" "-DSSOPS_LANE_MINB=8" "-DSSOPS_LANE_K=32 -DSSOPS_LANE_MINB=4"})
for flags in "${variants[@]}"; do
  echo "== $flags"
  SSOPS_NVCC_FLAGS="$flags" python3 lane_ab.py 2>&1 | grep -E "^(case|mamba|vim|long)|Error"
done
