"""Kernel benchmark: each scan case x backend, forward and backward, against the copy roofline.

Cases: selective_scan at the shared/anchors shapes (mamba_ssm's times in bench/anchors_h100.json,
or measured in the same run when mamba_ssm is importable) and a long sequence (L = 65536),
bidirectional_scan at Vim-S (vs what Vim runs: two mamba_ssm scans with its flips and add,
measured in the same run, else two scans' anchors without the flips) and the SS2D core
cross_selective_scan at VMamba-T's stages (vs VMamba's unfused cross-scan + mamba_ssm scan +
cross-merge, shared/anchors/vmamba_ss2d_unfused_h100.json).

    python bench/run.py [--backends triton,cuda] [--out bench/results]

Times the backends' forward and backward functions directly (no autograd overhead), with CUDA
events: medians over fresh runs after warm-up, inputs drawn at random.  Where a backend can keep
states for its backward (ssops.set_keep_scan_states), the pair is also timed that way ("keep":
the forward filling the kept buffer, the backward starting from it).  "roofline" is
(bytes that must move) / time / (device-to-device copy bandwidth measured in this run), where
the forward moves u, delta, z, B, C in and y out once, and the backward additionally reads dy
and writes du, ddelta, dz, dB, dC once (the shared/anchors convention).
Also timed, for comparison: the plain-PyTorch sequential-loop scan (L <= 2048) and VMamba's
stack/flip/transpose cross-scan; the long sequence reports the backward's peak memory beside
what storing the states would add.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
from typing import Callable, NamedTuple

import torch

import ssops
from results_io import run_info, save
from ssops import _ops, dispatch, testing
from ssops._bench import time_ms
from ssops.reference.cross_scan import to_routes

# name -> (batch, dim, L, N, groups, dtype, z): the shapes of shared/anchors
CASES = {
    "mamba_lm": (8, 1536, 2048, 16, 1, torch.bfloat16, True),
    "vim_s": (64, 768, 197, 16, 1, torch.bfloat16, True),
    "vmamba_t_s1": (128, 384, 3136, 1, 4, torch.float16, False),
    "vmamba_t_s2": (128, 768, 784, 1, 4, torch.float16, False),
    "vmamba_t_s3": (128, 1536, 196, 1, 4, torch.float16, False),
    "vmamba_t_s4": (128, 3072, 49, 1, 4, torch.float16, False),
    "long_seq": (2, 1024, 65536, 16, 1, torch.bfloat16, True),  # not in the anchors
}
TORCH_LOOP_MAX_L = 2048  # the plain-PyTorch sequential loop is timed up to this length


# bidirectional_scan: name -> (batch, dim, L, N, dtype); z shared, combine "mean" (Vim)
BIDI_CASES = {"vim_s_bidi": (64, 768, 197, 16, torch.bfloat16)}
# cross_selective_scan (core): name -> (batch, channels, H=W, N, dtype); 4 routes, softplus
SS2D_CASES = {f"ss2d_s{i + 1}": (128, 96 * 2 ** i, 56 // 2 ** i, 1, torch.float16) for i in range(4)}


def cuda_time_ms(fn):
    return time_ms(fn, warmup=5, repeat=30)


def copy_bandwidth_gbps():
    x = torch.randn(256 * 2 ** 20, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    ms = cuda_time_ms(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / ms / 1e6


def _bytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _kept(impl, op, tensors):
    """``saved=`` the buffer the backend's forward fills for its backward when it keeps states
    (ssops._ops), or nothing where it keeps none."""
    n = _ops._saved_numel(impl, op, tensors)
    return {"saved": torch.empty(n, device="cuda")} if n else {}


def _result(shape, backend, fwd, bwd, inputs, y, dy, copy_gbps, kept=None):
    """Times and bandwidths; the forward moves the inputs in and y out once, the backward
    reads the inputs and dy and writes one gradient per input.  fwd / bwd take ``kept``
    (_kept's keyword argument) to time the pair keeping states."""
    fwd_bytes = _bytes(*inputs, y)
    bwd_bytes = _bytes(*inputs, dy) + _bytes(*inputs)
    fwd_ms, bwd_ms = cuda_time_ms(fwd), cuda_time_ms(bwd)
    keep = None
    if kept:
        fwd(**kept)  # (fills it for the backward)
        keep = dict(fwd_ms=cuda_time_ms(lambda: fwd(**kept)),
                    bwd_ms=cuda_time_ms(lambda: bwd(**kept)),
                    kept_MB=kept["saved"].numel() * 4 / 2 ** 20)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    bwd()
    peak_bwd = torch.cuda.max_memory_allocated() - base
    return dict(shape=shape, backend=backend, fwd_ms=fwd_ms, bwd_ms=bwd_ms, keep=keep,
                fwd_bytes=fwd_bytes,
                bwd_bytes=bwd_bytes, fwd_GBps=fwd_bytes / fwd_ms / 1e6,
                bwd_GBps=bwd_bytes / bwd_ms / 1e6,
                fwd_roofline=fwd_bytes / fwd_ms / 1e6 / copy_gbps,
                bwd_roofline=bwd_bytes / bwd_ms / 1e6 / copy_gbps,
                bwd_extra_peak_MB=peak_bwd / 2 ** 20)


def bench_bidi(name, backend, copy_gbps):
    pair = case_pair(name, backend)
    r = _result(pair.shape, backend, pair.fwd, pair.bwd, pair.moved, pair.y, pair.dy, copy_gbps,
                _kept(pair.impl, pair.op, pair.tensors))
    side_by_side = vim_mamba_ssm_times(*pair.tensors.values())
    if side_by_side:
        r["vim_mamba_ssm_in_run"] = dict(fwd_ms=side_by_side[0], bwd_ms=side_by_side[1])
    return r


def torch_loop_scan(u, delta, A, B, C, D, z, delta_bias):
    """The plain-PyTorch composition: one step of the recurrence per position (float32)."""
    dt = torch.nn.functional.softplus(delta.float() + delta_bias[:, None])
    h = u.new_zeros(*u.shape[:2], A.shape[1], dtype=torch.float32)
    ys = []
    for t in range(u.shape[-1]):
        h = (torch.exp(dt[..., t, None] * A) * h
             + (dt[..., t] * u[..., t])[..., None] * B[:, None, :, t])
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1) + D[:, None] * u
    return (y * torch.nn.functional.silu(z.float()) if z is not None else y).to(u.dtype)


def torch_cross_scan(x):
    """VMamba's PyTorch cross-scan: row-major and column-major copies and their flips."""
    xs = torch.stack([x.flatten(2), x.transpose(2, 3).flatten(2)], 1)
    return torch.cat([xs, xs.flip(-1)], 1)


def torch_cross_merge(ys, H, W):
    """VMamba's PyTorch cross-merge: flips and a transpose folded back, summed."""
    b, _, d, L = ys.shape
    y = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    return (y[:, 0] + y[:, 1].view(b, d, W, H).transpose(2, 3).reshape(b, d, L)).view(b, d, H, W)


@functools.cache
def _mamba_ssm_scan():
    """mamba_ssm's selective_scan_fn, or None where it is not installed (loaded once)."""
    if os.environ.get("MAMBA_SSM_SRC"):  # built here from its sources (bench/mamba_ssm_jit.py)
        import mamba_ssm_jit
        mamba_ssm_jit.load()
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def _autograd_times(fwd, leaves):
    """(fwd ms, bwd ms) of fwd() and of the gradients of all ``leaves`` through it."""
    dy = torch.randn_like(fwd())
    fwd_ms = cuda_time_ms(fwd)
    inputs = [t for t in leaves if t is not None]
    both_ms = cuda_time_ms(lambda: torch.autograd.grad(fwd(), inputs, dy))
    return fwd_ms, both_ms - fwd_ms


def _leaves(*tensors):
    return [None if t is None else t.detach().requires_grad_() for t in tensors]


def mamba_ssm_times(u, delta, A, B, C, D, z, bias):
    """(fwd ms, bwd ms) of mamba_ssm's selective_scan_fn when it is installed, else None."""
    selective_scan_fn = _mamba_ssm_scan()
    if selective_scan_fn is None:
        return None
    leaves = _leaves(u, delta, A, B, C, D, z, bias)
    return _autograd_times(lambda: selective_scan_fn(*leaves, delta_softplus=True), leaves)


def vim_mamba_ssm_times(u, delta, A, B, C, D, z, bias):
    """(fwd ms, bwd ms) of what Vim's fused path runs for bidirectional_scan(combine="mean"),
    on mamba_ssm's scan (None where it is not installed): the second direction scans flipped
    copies of its inputs and of z, its output is flipped back, added and halved."""
    selective_scan_fn = _mamba_ssm_scan()
    if selective_scan_fn is None:
        return None
    leaves = _leaves(u, delta, A, B, C, D, z, bias)
    u, delta, A, B, C, D, z, bias = leaves
    f = lambda t: t.flip(-1)  # noqa: E731

    def fwd():
        y0 = selective_scan_fn(u[0], delta[0], A[0], B[0], C[0], D[0], z, bias[0],
                               delta_softplus=True)
        y1 = selective_scan_fn(f(u[1]), f(delta[1]), A[1], f(B[1]), f(C[1]), D[1], f(z),
                               bias[1], delta_softplus=True)
        return (y0 + f(y1)) / 2
    return _autograd_times(fwd, leaves)


def max_rel_diff(out, ref):
    """out's largest difference from ref, relative to ref's largest value (tuples: the largest
    over their pairs, skipping None refs)."""
    outs, refs = (out,) if torch.is_tensor(out) else out, (ref,) if torch.is_tensor(ref) else ref
    return max(((o.float() - r.float()).abs().max() / r.float().abs().max()).item()
               for o, r in zip(outs, refs) if r is not None)


def routed_inputs(delta, B, C, H, W):
    """delta (b, K * c, L), B and C (b, K, N, L) in route order, as VMamba's projections of the
    cross-scanned copies give them (from the fused op's image-order (b, K, c, L) / (b, K, N, L))."""
    delta, B, C = (to_routes(t, H, W, "cross") for t in (delta, B, C))
    return delta.flatten(1, 2), B, C


def vmamba_pipeline(x, delta, A, B, C, D, bias, scan, copies):
    """The SS2D core as VMamba runs it, on routed delta / B / C: cross_scan, one ``scan``
    (selective_scan_fn's arguments) over the routes' channels, cross_merge; cross_scan and
    cross_merge on the ``copies`` backend (triton: as VMamba's own Triton ones)."""
    b, c, H, W = x.shape
    xs = ssops.cross_scan(x, backend=copies).flatten(1, 2)
    ys = scan(xs, delta, A, B, C, D, None, bias, delta_softplus=True)
    return ssops.cross_merge(ys.view(b, -1, c, H * W), H, W, backend=copies)


def vmamba_unfused_times(x, delta, A, B, C, D, bias, copies="triton"):
    """(fwd ms, bwd ms, y) of vmamba_pipeline on mamba_ssm's scan (None where it is not
    installed), forward and backward through autograd; delta / B / C are put in route order
    once, outside the timing."""
    selective_scan_fn = _mamba_ssm_scan()
    if selective_scan_fn is None:
        return None
    leaves = _leaves(x, *routed_inputs(delta, B, C, *x.shape[2:]), A, D, bias)
    x, delta, B, C, A, D, bias = leaves

    def fwd():
        return vmamba_pipeline(x, delta, A, B, C, D, bias, selective_scan_fn, copies)
    return (*_autograd_times(fwd, leaves), fwd().detach())


class Pair(NamedTuple):
    """A case's forward and backward on one backend (fwd(**kept), bwd(**kept): the backend's
    functions, no autograd), on inputs drawn at random with a fixed seed."""
    op: str
    impl: object  # the backend's module
    fwd: Callable
    bwd: Callable
    tensors: dict  # the op's tensor inputs by name, in its argument order
    moved: tuple  # what the roofline counts as read (besides dy)
    y: torch.Tensor
    dy: torch.Tensor
    shape: dict


def case_pair(name, backend, device="cuda", impl=None):
    """The case's Pair on ``backend`` (or on the module ``impl``, standing in for it)."""
    if name in SS2D_CASES:
        batch, channels, side, N, dtype = SS2D_CASES[name]
        args, kw = testing.make_cross_selective_scan_inputs(batch, channels, side, side, N=N,
                                                            dtype=dtype, device=device, seed=1)
        x, delta, A, B, C = args
        tensors = dict(x=x, delta=delta, A=A, B=B, C=C, D=kw["D"], delta_bias=kw["delta_bias"])
        op, moved = "cross_selective_scan", (x, delta, B, C)
        shape = dict(batch=batch, channels=channels, H=side, W=side, N=N, routes=4,
                     dtype=str(dtype))
        impl = impl or dispatch.resolve(op, backend, tensors)
        fwd = lambda: impl.cross_selective_scan_fwd(*tensors.values(), True, "bchw", "cross", dtype)  # noqa: E731
        bwd = lambda: impl.cross_selective_scan_bwd(dy, *tensors.values(), True, "bchw", "cross")  # noqa: E731
    else:
        bidi = name in BIDI_CASES
        if bidi:
            (batch, dim, L, N, dtype), G, with_z = BIDI_CASES[name], 1, True
        else:
            batch, dim, L, N, G, dtype, with_z = CASES[name]
        mode = "grouped" if G > 1 else "variable"
        args, kw = testing.make_selective_scan_inputs(
            batch=batch, dim=dim, L=L, N=N, b_mode=mode, c_mode=mode, groups=G, z=with_z,
            dtype=dtype, device=device, seed=1, **(dict(direction_axis=True) if bidi else {}))
        u, delta, A, B, C = args
        tensors = dict(u=u, delta=delta, A=A, B=B, C=C, D=kw["D"], z=kw["z"],
                       delta_bias=kw["delta_bias"])
        op, moved = ("bidirectional_scan" if bidi else "selective_scan"), (u, delta, kw["z"], B, C)
        shape = dict(batch=batch, dim=dim, L=L, N=N, **({} if bidi else dict(groups=G)),
                     dtype=str(dtype), z=with_z)
        impl = impl or dispatch.resolve(op, backend, tensors)
        if bidi:
            fwd = lambda **kw: impl.bidirectional_scan_fwd(*tensors.values(), True, "mean", dtype, **kw)  # noqa: E731
            bwd = lambda **kw: impl.bidirectional_scan_bwd(dy, *tensors.values(), True, "mean", **kw)  # noqa: E731
        else:
            fwd = lambda **kw: impl.selective_scan_fwd(*tensors.values(), True, dtype, **kw)  # noqa: E731
            bwd = lambda **kw: impl.selective_scan_bwd(dy, None, *tensors.values(), True, **kw)  # noqa: E731
    y = fwd()
    y = y[0] if op == "selective_scan" else y  # (y, last state)
    seeded = torch.Generator(device=y.device).manual_seed(2)  # (every pair of a case: one dy)
    dy = torch.randn(y.shape, generator=seeded, device=y.device, dtype=y.dtype)
    return Pair(op, impl, fwd, bwd, tensors, moved, y, dy, shape)


def bench_ss2d(name, backend, copy_gbps):
    pair = case_pair(name, backend)
    impl, y, side = pair.impl, pair.y, pair.shape["H"]
    r = _result(pair.shape, backend, pair.fwd, pair.bwd, pair.moved, y, pair.dy, copy_gbps)
    x = pair.tensors["x"]
    r["cross_scan_ms"] = cuda_time_ms(lambda: impl.cross_scan(x, "bchw", "cross"))
    r["torch_cross_scan_ms"] = cuda_time_ms(lambda: torch_cross_scan(x))
    ys = torch_cross_scan(x)
    r["cross_merge_ms"] = cuda_time_ms(lambda: impl.cross_merge(ys, side, side, "bchw", "cross"))
    r["torch_cross_merge_ms"] = cuda_time_ms(lambda: torch_cross_merge(ys, side, side))
    side_by_side = vmamba_unfused_times(*pair.tensors.values())
    if side_by_side:
        fwd_ms, bwd_ms, y_unfused = side_by_side
        r["vmamba_unfused_in_run"] = dict(
            fwd_ms=fwd_ms, bwd_ms=bwd_ms,
            max_rel_diff=max_rel_diff(y_unfused.reshape(y.shape), y))
    return r


def bench_case(name, backend, copy_gbps):
    if name in BIDI_CASES:
        return bench_bidi(name, backend, copy_gbps)
    if name in SS2D_CASES:
        return bench_ss2d(name, backend, copy_gbps)
    pair = case_pair(name, backend)
    r = _result(pair.shape, backend, pair.fwd, pair.bwd, pair.moved, pair.y, pair.dy, copy_gbps,
                _kept(pair.impl, pair.op, pair.tensors))
    batch, dim, L, N, G = CASES[name][:5]
    # what a backward that stores the states instead of recomputing them would hold
    r["stored_states_MB"] = batch * dim * N * L * 4 / 2 ** 20
    if L <= TORCH_LOOP_MAX_L and G == 1:
        r["torch_loop_fwd_ms"] = time_ms(lambda: torch_loop_scan(*pair.tensors.values()),
                                         warmup=1, repeat=3)
    side_by_side = mamba_ssm_times(*pair.tensors.values())
    if side_by_side:
        r["mamba_ssm_in_run"] = dict(fwd_ms=side_by_side[0], bwd_ms=side_by_side[1])
    return r


def baseline(name, anchors):
    """(fwd ms, fwd+bwd-or-bwd ms, what) of the existing implementation for this case."""
    if name in CASES and name in anchors["cases"]:
        a = anchors["cases"][name]
        return a["fwd_ms"], a["bwd_ms"], "mamba_ssm"
    if name in BIDI_CASES:
        a = anchors["cases"]["vim_s"]
        return 2 * a["fwd_ms"], 2 * a["bwd_ms"], "2x mamba_ssm"
    stage = anchors.get("ss2d_unfused", {}).get(name.replace("ss2d_", ""))
    if stage:
        return stage["unfused_fwd_ms"], stage["unfused_fwd_bwd_ms"] - stage["unfused_fwd_ms"], "unfused"
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backends", default="triton")
    p.add_argument("--cases", default=",".join([*CASES, *BIDI_CASES, *SS2D_CASES]))
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    copy = copy_bandwidth_gbps()
    anchors_path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "anchors_h100.json"
    anchors = json.loads(anchors_path.read_text())
    result = dict(run_info(), copy_GBps=copy, cases={})
    print(f"{result['device']}  torch {result['torch']}  triton {result['triton']}  "
          f"copy {copy:.0f} GB/s  commit {result['commit'][:10]}")
    print(f"{'case':<13}{'backend':<9}{'fwd ms':>8}{'%roof':>7}{'bwd ms':>8}{'%roof':>7}"
          f"{'keep: fwd':>10}{'bwd':>7}{'speedup fwd':>13}{'bwd':>7}{'fwd+bwd':>8}{'keep bwd':>9}"
          f"  vs")
    for name in args.cases.split(","):
        for backend in args.backends.split(","):
            r = bench_case(name, backend, copy)
            result["cases"][f"{name}/{backend}"] = r
            a = baseline(name, anchors)
            if "mamba_ssm_in_run" in r:  # measured side by side: preferred to the anchors
                m = r["mamba_ssm_in_run"]
                a = m["fwd_ms"], m["bwd_ms"], "mamba_ssm (this run)"
            if "vim_mamba_ssm_in_run" in r:
                m = r["vim_mamba_ssm_in_run"]
                a = m["fwd_ms"], m["bwd_ms"], "Vim: 2 mamba_ssm + flips (this run)"
            if "vmamba_unfused_in_run" in r:
                m = r["vmamba_unfused_in_run"]
                a = m["fwd_ms"], m["bwd_ms"], "VMamba unfused on mamba_ssm (this run)"
            k = r["keep"] or dict(fwd_ms=float("nan"), bwd_ms=float("nan"))
            ratio = (f"{a[0] / r['fwd_ms']:>12.2f}x{a[1] / r['bwd_ms']:>6.2f}x"
                     f"{(a[0] + a[1]) / (r['fwd_ms'] + r['bwd_ms']):>7.2f}x"
                     f"{a[1] / k['bwd_ms']:>8.2f}x  {a[2]}" if a else "")
            if a:
                r["baseline"] = dict(what=a[2], fwd_ms=a[0], bwd_ms=a[1])
            print(f"{name:<13}{backend:<9}{r['fwd_ms']:>8.3f}{100 * r['fwd_roofline']:>6.1f}%"
                  f"{r['bwd_ms']:>8.3f}{100 * r['bwd_roofline']:>6.1f}%{k['fwd_ms']:>10.3f}"
                  f"{k['bwd_ms']:>7.3f}{ratio}")
    print("\nplain PyTorch for comparison (ms):")
    for key, r in result["cases"].items():
        if "torch_loop_fwd_ms" in r:
            print(f"  {key:<24} sequential-loop scan fwd {r['torch_loop_fwd_ms']:9.2f}  "
                  f"ssops {r['fwd_ms']:7.3f}  ({r['torch_loop_fwd_ms'] / r['fwd_ms']:.0f}x)")
        if "torch_cross_scan_ms" in r:
            print(f"  {key:<24} stack/flip/transpose cross_scan {r['torch_cross_scan_ms']:7.3f}  "
                  f"ssops {r['cross_scan_ms']:7.3f};  cross_merge "
                  f"{r['torch_cross_merge_ms']:7.3f}  ssops {r['cross_merge_ms']:7.3f}")
        if "stored_states_MB" in r and r["shape"]["L"] >= 65536:
            kept = f", kept states {r['keep']['kept_MB']:.0f} MB" if r["keep"] else ""
            print(f"  {key:<24} backward peak {r['bwd_extra_peak_MB']:.0f} MB (recomputed "
                  f"states){kept}; storing every state would take "
                  f"{r['stored_states_MB']:.0f} MB")
    if "triton" in args.backends:
        from ssops.triton_kernels import launch
        result["triton_configs"] = {"/".join(map(str, key)): config
                                    for key, config in launch.tuned.items()}
    save(result, "scan_ops", args.out)


if __name__ == "__main__":
    main()
