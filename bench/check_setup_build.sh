#!/usr/bin/env bash
# On the GPU machine: build ssops._C the ahead-of-time way (setup.py, SSOPS_BUILD_CUDA=1, this
# GPU's architecture only) and check the cuda backend with it.  Leaves the source tree clean.
set -euo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
SSOPS_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} \
  /usr/bin/time -f "setup.py build_ext (ssops._C): %e s" python3 setup.py -q build_ext --inplace 2>&1 | grep -v "^\s*$" | tail -3
SITE=$(mktemp -d); cp -r ssops "$SITE/"
for d in reference triton_kernels models csrc; do ln -s "$PWD/$d" "$SITE/ssops/$d"; done
rm -f ssops/_C*.so
cd "$SITE"
python3 -c "import ssops._cuda_backend as c; print('cuda backend runs', c._ext().__name__, 'from', c._ext().__file__)"
python3 -m ssops check --device cuda --backend cuda | tail -2
