#!/usr/bin/env bash
# On the GPU machine (from the repository root, .ab_base/csrc = 1889e90's csrc/ and .mamba_ssm
# carried): the SS2D cuda GPU tests of this tree, a same-run A/B of the line backward's dB / dC
# sums (kBcGlobal in columns, the default since 17b7bfc; everywhere; neither) against 1889e90,
# then the side by side with mamba_ssm built here.  ~8-9 minutes of an H100 (5 in 6e44179's run).
#     git archive 1889e90 csrc | (mkdir -p .ab_base && tar -x -C .ab_base)
#     SSOPS_COMMIT=<sha> bash bench/line_bc_variants.sh
# (short of time: ROUNDS=2 NO_SIDE=1 leave out a round and the side by side, ~5 minutes)
set -u
ROOT=$PWD
export MSRC=$PWD/.mamba_ssm/mamba_ssm-2.3.1
pre='import pathlib, sys; from ssops import _cuda_backend as c
if sys.argv[1]: c._sources = lambda: pathlib.Path(sys.argv[1])
c._jit_build()'
EXTRA='
for v in "|$ROOT/.ab_base/csrc" "-DSSOPS_LINE_BC_GLOBAL=0|" "-DSSOPS_LINE_BC_GLOBAL=15|"; do
  log=/tmp/build_$(echo ${v%%|*} | tr -dc 0-9)x.log  # $OUT takes 8 files: build logs only on failure
  (SSOPS_NVCC_FLAGS="${v%%|*}" python3 -c "$pre" "${v#*|}" > $log 2>&1 || tail -20 $log) &
done
[ -z "${NO_SIDE:-}" ] && (MAMBA_SSM_SRC=$MSRC python3 -c "import mamba_ssm_jit; mamba_ssm_jit.load()" > /tmp/mamba_build.log 2>&1 || tail -20 /tmp/mamba_build.log) &
(cd .. && SSOPS_AUTOTUNE=0 timeout 150 python3 -m pytest -q -x -p no:cacheprovider --hypothesis-profile=ci tests/ -k "cuda or lines" 2>&1 | tail -5 | tee $OUT/gpu_tests_cuda.log)
wait
timeout 120 python3 ab.py --cases ss2d_s1,ss2d_s2,ss2d_s3,ss2d_s4 --rounds ${ROUNDS:-3} --out $OUT/ab.json gcols "compact: -DSSOPS_LINE_BC_GLOBAL=0" "gall: -DSSOPS_LINE_BC_GLOBAL=15" "base: csrc=$ROOT/.ab_base/csrc" 2>&1 | tee $OUT/ab.log | tail -22
[ -n "${NO_SIDE:-}" ] && exit 0
MAMBA_SSM_SRC=$MSRC timeout 150 python3 run.py --backends cuda --out $OUT > $OUT/bench.log 2>&1; tail -30 $OUT/bench.log
python3 plot.py "$(ls -t $OUT/scan_ops_*.json | head -1)" > /dev/null 2>&1
'
export pre EXTRA ROOT
SKIP_TESTS=1 SKIP_BENCH=1 bash bench/gpu_run.sh
