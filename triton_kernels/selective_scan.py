"""selective_scan on the chunked Triton kernels."""
from __future__ import annotations

from ssops import _routes

from . import launch


def selective_scan_fwd(*args):
    return _routes.selective_scan_fwd(launch, *args)


def selective_scan_bwd(*args):
    return _routes.selective_scan_bwd(launch, *args)
