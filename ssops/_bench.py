"""Quick timings for ``python -m ssops bench`` (the full benchmark lives in bench/)."""
from __future__ import annotations

import statistics
import time

import torch

from . import testing
from .dispatch import BackendError, available_backends


def time_ms(fn, warmup=3, repeat=20):
    """Median milliseconds of fn(): CUDA events on the GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    for _ in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _cases(device):
    """(label, op, args, kwargs): Mamba-LM, Vim-S and VMamba-T stage-1 shapes on the GPU,
    small ones on the CPU."""
    big = device != "cpu"
    dt = torch.bfloat16 if big else torch.float32
    ops = testing.OPS
    args, kw = testing.make_selective_scan_inputs(
        batch=8 if big else 2, dim=1536 if big else 64, L=2048 if big else 256, N=16, dtype=dt,
        device=device)
    yield "selective_scan", ops["selective_scan"], args, kw
    args, kw = testing.make_selective_scan_inputs(
        batch=64 if big else 2, dim=384 if big else 32, L=197, N=16, dtype=dt, device=device,
        direction_axis=True)
    yield "bidirectional_scan", ops["bidirectional_scan"], args, kw
    side = 56 if big else 14
    args, kw = testing.make_cross_selective_scan_inputs(
        batch=128 if big else 2, channels=96 if big else 16, H=side, W=side, N=1,
        dtype=torch.float16 if big else dt, device=device)
    yield "cross_selective_scan", ops["cross_selective_scan"], args, kw


def quick_bench(device, backends=None):
    backends = backends or [n for n, why in available_backends().items() if why is None]
    print(f"{'op':<34}{'backend':<11}{'fwd ms':>10}{'fwd+bwd ms':>12}")
    for label, op, args, kw in _cases(device):
        for name in backends:
            leaves = [a.detach().requires_grad_() for a in args]
            try:
                fwd = time_ms(lambda: op(*leaves, backend=name, **kw))
                out = op(*leaves, backend=name, **kw)
                dy = torch.randn_like(out)
                both = time_ms(lambda: torch.autograd.grad(op(*leaves, backend=name, **kw),
                                                           leaves, dy))
            except BackendError as exc:
                print(f"{label:<34}{name:<11}  skipped: {str(exc)[:60]}")
                continue
            print(f"{label:<34}{name:<11}{fwd:>10.3f}{both:>12.3f}")
    return 0
