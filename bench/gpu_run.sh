#!/usr/bin/env bash
# On the GPU machine: install, check, test on the GPU, benchmark. Logs go to $OUT (or ./gpu-out).
# SKIP_TESTS=1 / SKIP_BENCH=1 leave out the check + tests / the benchmark.
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# no package registry there: lay the installed package out by hand (setup.py's package_dir)
SITE=$(mktemp -d); cp -r ssops "$SITE/"
for d in reference triton_kernels models; do ln -s "$PWD/$d" "$SITE/ssops/$d"; done
ln -s "$PWD/csrc" "$SITE/ssops/csrc"
export PYTHONPATH="$SITE"
cp -r tests bench pytest.ini "$SITE/"; ROOT=$PWD; cd "$SITE"  # so ./ssops is the laid-out one
# the cuda backend compiles csrc/ on first use (time it once, before anything else uses it)
/usr/bin/time -f "cuda backend first use (compile): %e s" python3 -c "import ssops; print(ssops.available_backends())" 2>&1 | tee "$OUT/cuda_build.log"
python3 -m ssops info
if [ -z "${SKIP_TESTS:-}" ]; then
  for b in ${CHECK_BACKENDS:-cuda triton}; do
    python3 -m ssops check --device cuda --backend $b 2>&1 | tee -a "$OUT/check.log" | tail -4
  done
fi
# tests use the default configs (autotuning every hypothesis shape would compile for minutes);
# tests/test_triton_autotune.py covers the tuning path, the benchmark tunes for real
[ -z "${SKIP_TESTS:-}" ] && SSOPS_AUTOTUNE=0 timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -x -p no:cacheprovider --hypothesis-profile=ci tests/ ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/gpu_tests.log" | tail -6
if [ -z "${SKIP_BENCH:-}" ]; then
  python3 bench/run.py --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
  python3 bench/plot.py "$(ls -t "$OUT"/scan_ops_*.json | head -1)"
fi
# pytest-benchmark suite (BENCH_SUITE=1): every op x backend, fwd and fwd+bwd
[ -n "${BENCH_SUITE:-}" ] && python3 -m pytest -q -p no:cacheprovider bench/test_benchmarks.py --benchmark-only --benchmark-max-time=0.5 --benchmark-json "$OUT/pytest_benchmark.json" 2>&1 | tail -20 | tee "$OUT/pytest_benchmark.log"
[ -n "${SWEEP:-}" ] && (cd bench && timeout ${SWEEP_TIMEOUT:-180} python3 sweep.py $SWEEP 2>&1 | tee "$OUT/sweep.log")
# anything else, run from bench/ with the laid-out package (EXTRA="ncu ... python3 profile_case.py ...")
[ -n "${EXTRA:-}" ] && (cd bench && eval "$EXTRA")
true
