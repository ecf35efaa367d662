"""Model throughput on the GPU: images/s of inference and of training steps per model and ssops
backend, batch 128, 224 x 224, fp16 autocast -- the protocol of the official models' anchors
(bench/anchors_h100.json "models": 5 warm-ups, then 20 inference / 10 forward+backward steps
without optimizer, timed with CUDA synchronisation).

    python bench/models.py [--models vmamba_tiny,vim_tiny,mambaout_tiny]
                           [--backends triton,reference] [--rounds 1] [--out bench/results]

One round is the anchors' protocol.  Its numbers vary by 10-15% between identical
configurations on a lent H200 (bench/NOTES.md), so comparisons take --rounds R: R sweeps over
every model x backend, interleaved against drift, each case reporting its median and range.

A backend named "<backend>+unfused" computes the SS2D core as VMamba's own code does, on that
backend's ops: cross_scan, the projections of the cross-scanned copies, one selective scan over
the 4 routes' channels, cross_merge (`unfused_cross_selective_scan`), instead of the fused
cross_selective_scan: the baseline of the fused op inside the model.  Its projections are
matmuls whose results the scan reads without copies, as the fused op's are; "+unfused+einsum"
writes them as VMamba does, einsums whose permuted results `.contiguous()` copies.
"<backend>+atennorm" computes LayerNorm2d with F.layer_norm (its permutes and copy) instead of
the models' Triton channel norm, the eager models' norm before it.
"<backend>+keep" trains with ssops.set_keep_scan_states(True)
(more memory, a faster backward).  "<backend>+compile" runs the model under torch.compile
(default mode; the ssops ops stay opaque custom ops), so the rest of the model -- norms,
permutes, activations -- is fused by inductor in both the fused and the unfused variant.
"<backend>+graph" replays inference as one CUDA graph a step (`inference_step`): the host
queues one launch a step instead of ~300, so img/s counts the GPU's work, not the host's Python.
--profile prints, per case, where one inference step's GPU time goes (torch.profiler).
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import statistics
import time

import torch

import ssops
import ssops.models as M
import ssops.models._layers as layers
from ssops.models._layers import at_least_fp32
from results_io import run_info, save
from ssops._bench import enqueue_ms
from ssops.validation import grid

ANCHORS = json.loads((pathlib.Path(__file__).parent / "anchors_h100.json").read_text())["models"]


def images_per_s(step, batch, warmup, steps):
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def unfused_cross_selective_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                                 *, x_proj_bias=None, delta_softplus=True, layout="bchw",
                                 routes="cross", out_dtype=None, backend=None, einsum=False):
    """ssops.cross_selective_scan computed the way VMamba's cross_selective_scan does it
    (MzeroMiko/VMamba, classification/models/vmamba.py): the projections act on the K
    cross-scanned copies, whose delta / B / C are then already in scan order.  ``einsum``: its
    einsums as written; else matmuls giving the same values in the layout the scan reads."""
    b, c, H, W = grid(x, layout)
    K, L = x_proj_weight.shape[0], H * W
    N, R = A_logs.shape[1], dt_projs_weight.shape[2]
    xs = ssops.cross_scan(x, layout=layout, routes=routes, backend=backend)
    if einsum:
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, x_proj_weight)
    else:
        x_dbl = torch.matmul(x_proj_weight, xs)
    if x_proj_bias is not None:
        x_dbl = x_dbl + x_proj_bias[None, :, :, None]
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    if einsum:
        dts = torch.einsum("bkrl,kdr->bkdl", dts, dt_projs_weight)
    else:
        dts = torch.matmul(dt_projs_weight, dts)
    ys = ssops.selective_scan(xs.flatten(1, 2), dts.contiguous().flatten(1, 2),
                              -torch.exp(at_least_fp32(A_logs)), Bs.contiguous(), Cs.contiguous(),
                              at_least_fp32(Ds), delta_bias=at_least_fp32(dt_projs_bias.flatten()),
                              delta_softplus=delta_softplus, out_dtype=out_dtype, backend=backend)
    return ssops.cross_merge(ys.view(b, K, c, L), H, W, layout=layout, routes=routes,
                             backend=backend)


def measure(name, backend, batch, infer_steps, train_steps, profile=False):
    backend, *options = (backend or "").split("+")
    fused = ssops.cross_selective_scan
    if "unfused" in options:
        ssops.cross_selective_scan = functools.partial(unfused_cross_selective_scan,
                                                       einsum="einsum" in options)
    ssops.set_keep_scan_states("keep" in options)
    layers.FAST_CHANNEL_NORM = "atennorm" not in options
    try:
        return _measure(name, backend or None, batch, infer_steps, train_steps,
                        "compile" in options, "graph" in options, profile)
    finally:
        ssops.cross_selective_scan = fused
        ssops.set_keep_scan_states(False)
        layers.FAST_CHANNEL_NORM = True


def _measure(name, backend, batch, infer_steps, train_steps, compile_model, graph, profile):
    model = M.create(name, backend=backend).cuda()
    if compile_model:
        model = torch.compile(model)
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    infer = inference_step(model.eval(), x, graph)

    def train():
        with torch.autocast("cuda", dtype=torch.float16):
            model(x).float().logsumexp(-1).mean().backward()

    inference = images_per_s(infer, batch, 5, infer_steps)
    if profile:
        print_profile(infer)
    if not train_steps or graph:  # (the graph is inference's)
        return dict(infer_img_s=inference, train_img_s=float("nan"), train_peak_GB=float("nan"))
    model.train()
    training = images_per_s(train, batch, 5, train_steps)
    torch.cuda.reset_peak_memory_stats()
    train()
    torch.cuda.synchronize()
    return dict(infer_img_s=inference, train_img_s=training,
                train_peak_GB=torch.cuda.max_memory_allocated() / 2 ** 30)


def inference_step(model, x, graph=False):
    """model(x) under fp16 autocast without gradients; ``graph``: captured once as a CUDA graph
    that each call replays, returning the output the replay rewrites (the graph reads x where
    it is, so write new inputs into x).  Autocast's cast cache is off then: its casts would be
    freed on leaving autocast, under the graph's feet."""
    def step():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, cache_enabled=not graph):
            return model(x)
    if not graph:
        return step
    side = torch.cuda.Stream()  # warm-up (Triton's compiles and tuning) outside the capture
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    captured = torch.cuda.CUDAGraph()
    with torch.cuda.graph(captured):
        out = step()

    def replay():
        captured.replay()
        return out
    return replay


def print_profile(step, rows=12):
    """The GPU kernels of two steps, by total time (the model's breakdown for NOTES), and the
    host's time to enqueue one step on an idle GPU: where it reaches the GPU time, the step is
    bound by the host (or something in it waits for the GPU)."""
    from torch.profiler import ProfilerActivity, profile
    print(f"  host time to enqueue one step: {enqueue_ms(step)[0]:.2f} ms")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    print(f"  GPU time of 2 steps: {total / 1e3:.2f} ms")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:rows]:
        print(f"  {e.self_device_time_total / 1e3:8.3f} ms {e.count:5d}x  {e.key[:110]}")


def _official(name):
    """The official implementation's img/s (anchors), as printed beside ssops'."""
    official = ANCHORS.get(M.ALIASES.get(name, name))
    return f"{official['infer_img_s']:>8.0f} / {official['train_img_s']:.0f}" if official else ""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="vmamba_tiny,vim_tiny,mambaout_tiny")
    p.add_argument("--backends", default="triton,reference")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--no-train", action="store_true", help="inference only")
    p.add_argument("--infer-steps", type=int, default=20,
                   help="timed inference steps (the anchors' protocol: 20)")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    result = dict(run_info(), batch=args.batch, img_size=224, autocast="float16",
                  rounds=args.rounds, cases={})
    print(f"{result['device']}  torch {result['torch']}  triton {result['triton']}  "
          f"commit {result['commit'][:10]}  batch {args.batch}, 224x224, fp16 autocast")
    header = (f"{'model':<16}{'backend':<16}{'infer img/s':>12}{'train img/s':>12}{'peak GB':>9}"
              f"   official (anchors)")
    print(header)
    runs = {}
    for _ in range(args.rounds):
        for name in args.models.split(","):
            scans = name.startswith(("vmamba", "vanilla", "vim"))
            for backend in args.backends.split(",") if scans else ["none (no scan)"]:
                slow = backend == "reference"  # pure PyTorch scans: fewer steps
                r = measure(name, None if not scans else backend, args.batch,
                            5 if slow else args.infer_steps,
                            0 if args.no_train else 3 if slow else 10, args.profile)
                runs.setdefault((name, backend), []).append(r)
                print(f"{name:<16}{backend:<16}{r['infer_img_s']:>12.0f}"
                      f"{r['train_img_s']:>12.0f}{r['train_peak_GB']:>9.1f}   {_official(name)}",
                      flush=True)
    if args.rounds > 1:
        print(f"\nmedians of {args.rounds} rounds (range)\n{header}")
    for (name, backend), rs in runs.items():
        r = {k: statistics.median(x[k] for x in rs) for k in ("infer_img_s", "train_img_s")}
        r["train_peak_GB"] = max(x["train_peak_GB"] for x in rs)
        if args.rounds > 1:
            for k in ("infer_img_s", "train_img_s"):
                r[k.replace("_img_s", "_range")] = [min(x[k] for x in rs), max(x[k] for x in rs)]
        official = ANCHORS.get(M.ALIASES.get(name, name))
        if official:
            r["official"] = official
        result["cases"][f"{name}/{backend}"] = r
        if args.rounds > 1:
            spread = (f"  ({r['infer_range'][0]:.0f}-{r['infer_range'][1]:.0f}, "
                      f"{r['train_range'][0]:.0f}-{r['train_range'][1]:.0f})")
            print(f"{name:<16}{backend:<16}{r['infer_img_s']:>12.0f}{r['train_img_s']:>12.0f}"
                  f"{r['train_peak_GB']:>9.1f}   {_official(name)}{spread}", flush=True)
    save(result, "models", args.out)


if __name__ == "__main__":
    main()
