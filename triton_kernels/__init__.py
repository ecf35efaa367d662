"""The ``triton`` backend (ssops.triton_kernels): Triton kernels for every op.

Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (Triton's interpreter,
used to test the kernels without a GPU).  Computes in float32: float64 inputs are left to the
reference backend.
"""
from __future__ import annotations

import os

import torch

_OPS = ("selective_scan", "bidirectional_scan", "cross_scan", "cross_merge", "cross_selective_scan")
MAX_N = 256


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def why_unavailable():
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton is not installed ({exc}); pip install 'ssops[triton]'"
    if not (torch.cuda.is_available() or _interpreting()):
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on the CPU, slowly)"
    return None


def why_not(op, tensors):
    if op not in _OPS:
        return f"{op} has no Triton kernel yet"
    first = next(iter(tensors.values()))
    if first.device.type == "cpu" and not _interpreting():
        return "CPU tensors need TRITON_INTERPRET=1"
    if first.device.type not in ("cpu", "cuda"):
        return f"tensors on {first.device.type}"
    if any(t is not None and t.dtype == torch.float64 for t in tensors.values()):
        return "float64 inputs (the Triton kernels compute in float32)"
    A = tensors.get("A")
    if A is not None and A.shape[-1] > MAX_N:
        return f"N={A.shape[-1]} > {MAX_N}"
    return None


import functools  # noqa: E402

from . import bidirectional_scan as _bidirectional, cross_scan as _cross  # noqa: E402
from . import cross_selective_scan as _cross_selective, selective_scan as _selective  # noqa: E402
from .launch import on_device_of  # noqa: E402


def _on_inputs_device(op):
    """op, launching its kernels on the device of its first argument (a tensor)."""
    @functools.wraps(op)
    def run(first, *args, **kwargs):
        with on_device_of(first):
            return op(first, *args, **kwargs)
    return run


selective_scan_fwd = _on_inputs_device(_selective.selective_scan_fwd)
selective_scan_bwd = _on_inputs_device(_selective.selective_scan_bwd)
bidirectional_scan_fwd = _on_inputs_device(_bidirectional.bidirectional_scan_fwd)
bidirectional_scan_bwd = _on_inputs_device(_bidirectional.bidirectional_scan_bwd)
cross_scan = _on_inputs_device(_cross.cross_scan)
cross_merge = _on_inputs_device(_cross.cross_merge)
cross_selective_scan_fwd = _on_inputs_device(_cross_selective.cross_selective_scan_fwd)
cross_selective_scan_bwd = _on_inputs_device(_cross_selective.cross_selective_scan_bwd)

__all__ = ["selective_scan_fwd", "selective_scan_bwd", "bidirectional_scan_fwd",
           "bidirectional_scan_bwd", "cross_scan", "cross_merge", "cross_selective_scan_fwd",
           "cross_selective_scan_bwd", "why_unavailable", "why_not"]
