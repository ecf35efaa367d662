"""Quick timings for ``python -m ssops bench`` (the full benchmark lives in bench/)."""
from __future__ import annotations

import functools
import statistics
import time

import torch

from . import testing
from .dispatch import BackendError, available_backends


def enqueue_ms(fn, calls=1):
    """(ms the host takes to queue ``calls`` calls of fn on an idle GPU, ms until the GPU has
    run them): equal times mean the GPU waited for the host."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - start
    torch.cuda.synchronize()
    return host * 1e3, (time.perf_counter() - start) * 1e3



def host_ms(fn, calls=20):
    """The host's milliseconds per call of fn, queued without waiting for the GPU."""
    return enqueue_ms(fn, calls)[0] / calls

@functools.lru_cache(maxsize=None)
def _spin_cycles_per_ms(device_index):
    """Clock cycles a millisecond of torch.cuda._sleep on this GPU (its median over 5 runs)."""
    cycles, times = 2_000_000, []
    for _ in range(6):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return cycles / statistics.median(times[1:])


def time_ms(fn, warmup=3, repeat=20, spin=True):
    """Median milliseconds of fn(): CUDA events on the GPU, perf_counter on the CPU.

    On the GPU each run starts behind a spin kernel (``torch.cuda._sleep``) twice as long as
    the host takes to queue fn, plus 0.05 ms: the host queues all of fn while the GPU spins,
    so the events time the GPU's work alone.  Started straight after a synchronize instead
    (``spin=False``), a run also counts the host's latency to fn's first launch, which is all
    of a one-launch op's Python path but a small part of a long pipeline's."""
    for _ in range(warmup):
        fn()
    times = []
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda and spin:
        host_ms = max(enqueue_ms(fn)[0] for _ in range(3))
        cycles = int((2 * host_ms + 0.05) * _spin_cycles_per_ms(torch.cuda.current_device()))
    for _ in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            if spin:
                torch.cuda._sleep(cycles)
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
