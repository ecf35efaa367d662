"""python -m ssops {info,check,bench,models}: what runs here, whether it is right, how fast it
is, and the models built on it."""
from __future__ import annotations

import argparse
import platform
import sys

import torch

import ssops
from ssops import testing
from ssops.dispatch import BACKENDS, BackendError, available_backends


def _device(arg):
    return arg or ("cuda" if torch.cuda.is_available() else "cpu")


def info(args):
    print(f"ssops {ssops.__version__}  python {platform.python_version()}  torch {torch.__version__}")
    try:
        import triton
        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton: not installed")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"device: {p.name} (sm_{p.major}{p.minor}, {p.multi_processor_count} SMs), "
              f"CUDA {torch.version.cuda}")
    else:
        print("device: cpu (no CUDA device)")
    for name, reason in available_backends().items():
        print(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def _check_cases(device, dtypes):
    """(label, op name, args, kwargs) cases covering every op and option family."""
    for dt in dtypes:
        name = str(dt).replace("torch.", "")
        for b_mode, c_mode, groups in (("variable", "variable", 1), ("grouped", "grouped", 2),
                                       ("constant", "variable", 1)):
            args, kw = testing.make_selective_scan_inputs(
                batch=2, dim=8, L=100, N=16 if b_mode != "grouped" else 1, b_mode=b_mode,
                c_mode=c_mode, groups=groups, dtype=dt, device=device, seed=1)
            yield f"{name} B={b_mode}", "selective_scan", args, dict(kw, return_last_state=True)
        args, kw = testing.make_selective_scan_inputs(batch=2, dim=8, L=33, N=16, dtype=dt,
                                                      device=device, direction_axis=True, seed=2)
        kw.update(combine="mean")
        yield f"{name}", "bidirectional_scan", args, kw
        for layout in ("bchw", "bhwc"):
            x = testing.make_cross_scan_inputs(2, 8, 7, 9, layout, dt, device, seed=3)
            yield f"{name} {layout}", "cross_scan", (x,), dict(layout=layout)
            y = testing.make_cross_scan_inputs(2, 4, 8, 63, "bchw", dt, device, seed=4)
            yield f"{name} {layout}", "cross_merge", (y, 7, 9), dict(layout=layout)
            args, kw = testing.make_cross_selective_scan_inputs(2, 8, 7, 9, N=1, layout=layout,
                                                                dtype=dt, device=device, seed=5)
            yield f"{name} {layout}", "cross_selective_scan", args, kw


def check(args):
    device = _device(args.device)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    available = [n for n, why in available_backends().items() if why is None]
    backends = args.backend.split(",") if args.backend else available
    print(f"checking {', '.join(backends)} against the float64 reference on {device} "
          f"(relative L2 errors; tolerances in ssops.testing.TOLERANCE)")
    print(f"{'op':<22}{'case':<26}{'backend':<11}{'fwd err':>10}{'grad err':>10}  result")
    failures = ran = 0
    for name in backends:
        if available_backends()[name] is not None:
            print(f"{name}: unavailable: {available_backends()[name]}")
            failures += 1
    for label, op, a, kw in _check_cases(device, dtypes):
        for name in backends:
            try:
                r = testing.compare_backends(op, *a, backends=[name], **kw)[name]
            except BackendError as exc:
                r = f"skipped: {exc}"
            if isinstance(r, str):
                print(f"{op:<22}{label:<26}{name:<11}{'':>10}{'':>10}  {r[:60]}")
                continue
            ok = testing.passed(r)
            failures += not ok
            ran += 1
            print(f"{op:<22}{label:<26}{name:<11}{max(r['out']):>10.2e}"
                  f"{max(r['grad'], default=0):>10.2e}  {'pass' if ok else 'FAIL'}")
    if not ran:
        failures += 1
    print(f"all {ran} checks passed" if not failures else f"{failures} check(s) FAILED ({ran} ran)")
    return 1 if failures else 0


def bench(args):
    from ssops._bench import quick_bench
    return quick_bench(_device(args.device), args.backend.split(",") if args.backend else None)


def models(args):
    """Each model's parameters and multiply-adds at 224 x 224 beside the papers' figures."""
    from ssops import models as M
    print(f"{'model':<22}{'params (M)':>11}{'paper':>7}{'GMACs':>8}{'paper':>7}")
    for name in (n for n in M.list_models() if n not in M.ALIASES):
        params, macs = M.complexity(name)
        paper_params, paper_macs = M.PAPER.get(name, (None, None))
        print(f"{name:<22}{params / 1e6:>11.2f}{paper_params or '':>7}{macs / 1e9:>8.2f}"
              f"{paper_macs or '':>7}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ssops", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, device, and each backend's availability")
    sub.add_parser("models", help="the models' sizes and FLOPs beside the papers' figures")
    for name, helptext in (("check", "compare every available backend with the reference"),
                           ("bench", "time each op on each available backend")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
        p.add_argument("--backend", default=None,
                       help=f"comma-separated subset of {','.join(BACKENDS)} (default: all)")
        if name == "check":
            p.add_argument("--dtypes", default="float32,float16,bfloat16")
    args = parser.parse_args(argv)
    return {"info": info, "check": check, "bench": bench, "models": models}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
