#!/usr/bin/env bash
# The fused kernels' experiment knobs (csrc/fused.cuh), one build each; run from bench/ with the
# laid-out package (bench/gpu_run.sh EXTRA="bash fused_variants.sh").
CASES=${CASES:-ss2d_s1,ss2d_s2,ss2d_s4,vim_s_bidi}
variants=("-DSSOPS_FUSED_VEC=0" "-DSSOPS_FUSED_VEC=1" "-DSSOPS_FUSED_VEC=1 -DSSOPS_FUSED_FWD_MINB=2"
          "-DSSOPS_FUSED_VEC=0 -DSSOPS_FUSED_INFLIGHT=4")
for flags in "${variants[@]}"; do
  echo "== $flags"
  SSOPS_NVCC_FLAGS="$flags" python3 run.py --backends cuda --cases "$CASES" --out /tmp/variants 2>&1 | grep -E "^(ss2d|vim)"
done
