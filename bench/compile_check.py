"""Compile the Triton scan kernels for sm_90 without a GPU (Triton's bundled ptxas) and print
registers and spills per variant -- catches compile errors and spills before a device run.

    python bench/compile_check.py
"""
import itertools
import os
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ssops.triton_kernels import scan_kernels as sk

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def _signature(fn, consts):
    def kind(name):
        if name in consts:
            return "constexpr"
        if name.endswith("_ptr"):
            return "*fp16" if name in ("u_ptr", "delta_ptr", "z_ptr", "y_ptr", "dy_ptr") else "*fp32"
        return "fp32" if name == "y_scale" else "i64" if name.startswith("s") else "i32"
    return {name: kind(name) for name in fn.arg_names}


def resources(fn, consts, warps):
    src = ASTSource(fn=fn, signature=_signature(fn, consts), constexprs=consts)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True,
                             text=True).stdout
    line = next(ln for ln in out.splitlines() if "REG:" in ln)
    return " ".join(w for w in line.split() if w.startswith(("REG:", "STACK:", "SHARED:", "LOCAL:")))


def main():
    common = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, NP=16)
    # chunks as launched (triton_kernels/launch.py): (HP, BW, warps) forward, then backward
    for (rev, tr), bc in itertools.product([(False, False), (True, True)], [False, True]):
        for kind, kernel, (HP, BW, warps), extra in [
                ("fwd", sk.scan_fwd_kernel, (64, 8, 2) if tr else (1, 512, 2), dict(HAS_YIN=tr)),
                ("bwd", sk.scan_bwd_kernel, (64, 4, 2) if tr else (1, 256, 2),
                 dict(HAS_DLAST=True, HAS_DUIN=tr))]:
            c = dict(common, B_CONST=bc, C_CONST=False, REVERSE=rev, TRANSPOSE=tr, BD=1, HP=HP,
                     BW=BW, **extra)
            print(kind, "reverse" if rev else "", "columns" if tr else "rows",
                  "B const" if bc else "", HP * BW, warps, resources(kernel, c, warps))
    routes = {"cross": ((0, 0, 1, 1), (0, 1, 0, 1), True), "bidi": ((0, 1), (0, 0), False)}
    for name, (rev, tr, shared) in routes.items():
        for HP, WP, warps in [(16, 16, 4), (1, 256, 4)]:
            c = dict(common, K=len(rev), REV=rev, TR=tr, COLS=any(tr), B_CONST=False,
                     C_CONST=False, BD=1, HP=HP, WP=WP, HAS_Z=not shared)
            print("fused fwd", name, HP, WP, warps, resources(sk.fused_fwd_kernel, c, warps))
            print("fused bwd", name, HP, WP, warps,
                  resources(sk.fused_bwd_kernel, dict(c, SHARED_U=shared), warps))


if __name__ == "__main__":
    main()
