"""The ``reference`` backend: pure PyTorch, any device, any floating dtype (ssops.reference)."""
from .bidirectional_scan import bidirectional_scan_bwd, bidirectional_scan_fwd
from .cross_scan import cross_merge, cross_scan
from .cross_selective_scan import cross_selective_scan_bwd, cross_selective_scan_fwd
from .selective_scan import selective_scan_bwd, selective_scan_fwd, selective_scan_sequential


def why_unavailable():
    return None


def why_not(op, tensors):
    return None  # serves every validated input


__all__ = [
    "selective_scan_fwd", "selective_scan_bwd", "selective_scan_sequential",
    "bidirectional_scan_fwd", "bidirectional_scan_bwd", "cross_scan", "cross_merge",
    "cross_selective_scan_fwd", "cross_selective_scan_bwd", "why_unavailable", "why_not",
]
