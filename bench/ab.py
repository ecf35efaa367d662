"""Same-run A/B of cuda-backend variants: builds of csrc/ with experiment flags, settings of
ssops._cuda_backend's switches, or another version of that file, timed on the same inputs in one
process, in rotated order.

    python ab.py --cases ss2d_s1,ss2d_s3 --rounds 3 base "ch4: LINE_CHANNELS=4" \\
        "prefetch: -DSSOPS_LINE_PREFETCH_PARTIAL=1" "old: module=/tmp/_cuda_backend.py" \\
        "before: csrc=/tmp/base/csrc"                    (from bench/, ssops importable)

A variant is NAME or NAME: SPEC, SPEC words that are nvcc flags (-D..., a build of its own,
compiled up front in parallel), csrc=PATH (a build of another csrc/ directory, e.g. an earlier
commit's: its kernels beside this one's), module=PATH (a file standing in for
ssops/_cuda_backend.py, the host side, loaded beside it) or NAME=VALUE switches (a Python
literal set on the backend module while the variant runs).  Round r runs the variants in the
order given, rotated by r; each runs every case (run.py's names, inputs drawn with one seed):
forward and backward medians of 30 after 5 warm-ups (CUDA events), and the host's time per call
(20 calls queued without waiting: where it nears the median, the case is bound by the host).
Prints each round's times, then each case's median and range per variant, and the largest
difference of each variant's outputs from the first variant's, relative to their largest
value; --out writes all of it as JSON.
"""
import argparse
import ast
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys

import torch

from results_io import run_info
from run import case_pair, cuda_time_ms
from ssops._bench import host_ms
from ss2d import switched
from ssops import _cuda_backend as cuda


def parse(spec):
    """(name, (nvcc flags, csrc path or ""), switches, module path or None) of a variant."""
    name, _, words = spec.partition(":")
    words = words.split()
    flags = " ".join(w for w in words if w.startswith("-"))
    module = next((w.partition("=")[2] for w in words if w.startswith("module=")), None)
    csrc = next((w.partition("=")[2] for w in words if w.startswith("csrc=")), "")
    switches = {k: ast.literal_eval(v) for k, _, v in (
        w.partition("=") for w in words if not w.startswith(("-", "module=", "csrc=")))}
    unknown = [k for k in switches if not hasattr(cuda, k)]
    if unknown:
        sys.exit(f"{name}: ssops._cuda_backend has no switch {', '.join(unknown)}")
    return name.strip(), (flags, os.path.abspath(csrc) if csrc else ""), switches, module


def load_backend(path, tag):
    """The file at path as a module of the ssops package, standing in for _cuda_backend."""
    spec = importlib.util.spec_from_file_location(f"ssops._cuda_backend_{tag}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_all(builds):
    """Each (flags, csrc) build's extension, compiled in parallel processes (cached), then
    loaded here."""
    source = "import pathlib, sys; from ssops import _cuda_backend as c\n" \
             "if sys.argv[1]: c._sources = lambda: pathlib.Path(sys.argv[1])\nc._jit_build()"
    procs = [subprocess.Popen([sys.executable, "-c", source, csrc],
                              env={**os.environ, "SSOPS_NVCC_FLAGS": flags})
             for flags, csrc in builds]
    if any(p.wait() for p in procs):
        sys.exit("a variant did not build")
    modules, sources = {}, cuda._sources
    for flags, csrc in builds:
        os.environ["SSOPS_NVCC_FLAGS"] = flags
        cuda._sources = (lambda: pathlib.Path(csrc)) if csrc else sources
        modules[flags, csrc] = cuda._jit_build()
    os.environ.pop("SSOPS_NVCC_FLAGS")
    cuda._sources = sources
    return modules


def outputs(pair):
    """The forward's outputs and the backward's gradients, as float32."""
    out = [pair.fwd(), pair.bwd()]
    flat = [t for o in out for t in (o if isinstance(o, tuple) else (o,))]
    return [t.float() for t in flat if t is not None]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+")
    p.add_argument("--cases", default="ss2d_s1,ss2d_s2,ss2d_s3,ss2d_s4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args()
    variants = [parse(v) for v in args.variants]
    modules = build_all(sorted({build for _, build, _, _ in variants}))
    backends = {None: cuda}
    for i, path in enumerate(sorted({m for *_, m in variants if m})):
        backends[path] = load_backend(path, i)
        backends[path]._ext = cuda._ext  # (the build already loaded, not a second load of it)
    cases = args.cases.split(",")
    pairs = {(m, c): case_pair(c, "cuda", impl=b) for m, b in backends.items() for c in cases}
    times = {v[0]: {c: [] for c in cases} for v in variants}
    first, diffs = {}, {v[0]: {} for v in variants}
    for r in range(args.rounds):
        turn = r % len(variants)
        for name, build, switches, path in variants[turn:] + variants[:turn]:
            with switched(backends[path], _ext=lambda m=modules[build]: m, **switches):
                for case in cases:
                    pair = pairs[path, case]
                    t = (cuda_time_ms(pair.fwd), cuda_time_ms(pair.bwd),
                         host_ms(pair.fwd), host_ms(pair.bwd))
                    times[name][case].append(t)
                    print(f"round {r} {name:14} {case:12} fwd {t[0]:7.3f}  bwd {t[1]:7.3f}  "
                          f"host: fwd {t[2]:6.3f}  bwd {t[3]:6.3f}", flush=True)
                    if r == 0:
                        out = outputs(pair)
                        ref = first.setdefault(case, out)
                        diffs[name][case] = max(
                            ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
                            for a, b in zip(out, ref))
    print(f"\n{'variant':14} {'case':12} {'fwd median (range)':>24} {'bwd median (range)':>24}"
          f" {'host fwd':>9} {'bwd':>6}  max rel diff")
    summary = {}
    for name, *_ in variants:
        for case, ts in times[name].items():
            cols = [(statistics.median(x), min(x), max(x)) for x in zip(*ts)]
            summary.setdefault(name, {})[case] = dict(
                fwd_ms=cols[0], bwd_ms=cols[1], host_fwd_ms=cols[2], host_bwd_ms=cols[3],
                max_rel_diff=diffs[name][case])
            print(f"{name:14} {case:12} " + " ".join(
                f"{m:8.3f} ({lo:.3f}-{hi:.3f})" for m, lo, hi in cols[:2]) +
                f" {cols[2][0]:9.3f} {cols[3][0]:6.3f}  {diffs[name][case]:.1e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(run_info(), variants=args.variants, rounds=args.rounds,
                           times=times, summary=summary), f, indent=1)


if __name__ == "__main__":
    main()
