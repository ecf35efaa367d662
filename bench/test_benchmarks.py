"""pytest-benchmark suite: every op x available backend, forward and forward+backward, on the
same cases as ``python -m ssops bench`` (the shared/anchors shapes on a GPU, small ones on the
CPU).  Not part of the test suite (pytest.ini collects tests/ only):

    pytest bench/test_benchmarks.py --benchmark-only [--benchmark-json out.json]

On the GPU each timed call ends with torch.cuda.synchronize(), so the times are the kernels'.
bench/run.py is the full benchmark (roofline, baselines, JSON under bench/results/).
"""
import pytest
import torch

from ssops._bench import _cases
from ssops.dispatch import available_backends

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = [name for name, why in available_backends().items() if why is None]
CASES = {label: (op, args, kw) for label, op, args, kw in _cases(DEVICE)}


def _synced(fn):
    if DEVICE == "cuda":
        def run():
            out = fn()
            torch.cuda.synchronize()
            return out
        return run
    return fn


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("phase", ["fwd", "fwd+bwd"])
def test_op(benchmark, case, backend, phase):
    op, args, kw = CASES[case]
    if backend == "reference" and DEVICE == "cuda":
        pytest.skip("the reference backend is the baseline of correctness, not of speed")
    leaves = [a.detach().requires_grad_(phase != "fwd") for a in args]
    fwd = lambda: op(*leaves, backend=backend, **kw)  # noqa: E731
    if phase == "fwd":
        benchmark(_synced(fwd))
        return
    dy = torch.randn_like(fwd())
    benchmark(_synced(lambda: torch.autograd.grad(fwd(), leaves, dy)))
