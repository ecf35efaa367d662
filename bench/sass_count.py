"""Static SASS op counts of the float16 line backward kernels in built ssops extensions (the
instructions each kernel's code holds, not how often they run: ncu counts those).

    python bench/sass_count.py ~/.cache/ssops/*/ssops_cuda_*.so     (needs cuobjdump, c++filt)
"""
import collections
import re
import subprocess
import sys

OPS = ["BRA", "BSSY", "MATCH", "VOTEU", "SHFL", "MUFU", "ATOMS", "ISETP", "IMAD", "FMUL"]
for so in sys.argv[1:]:
    out = subprocess.run(["cuobjdump", "-sass", so], capture_output=True, text=True).stdout
    funcs = re.split(r"\n\s+Function : ", out)[1:]
    names = [f.split("\n", 1)[0].strip() for f in funcs]
    dem = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                         text=True).stdout.split("\n")
    print(so)
    for f, d in zip(funcs, dem):
        if "line_bwd_kernel<__half" not in d:
            continue
        ops = collections.Counter()
        for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", f):
            ops[m.group(1)] += 1
        tot = sum(ops.values())
        key = " ".join(f"{k}:{ops[k]}" for k in OPS)
        name = d.replace("void ssops::line_bwd_kernel", "").replace("(ssops::FusedParams)", "")
        print(f"  {name[:60]:60s} {tot:6d}  {key}")
