"""ssops: state-space scan operators for PyTorch (Mamba's selective scan, Vim's bidirectional
scan, VMamba's cross-scan/merge and fused SS2D core), each with cuda / triton / reference
backends chosen at run time."""
from . import _ops  # noqa: F401  (registers torch.ops.ssops.*)
from .dispatch import (BackendError, available_backends, get_backend, set_backend,
                       use_backend)
from .functional import (bidirectional_scan, cross_merge, cross_scan, cross_selective_scan,
                         cross_selective_scan_core, selective_scan, set_keep_scan_states)

__version__ = "0.1.0"

__all__ = [
    "selective_scan", "bidirectional_scan", "cross_scan", "cross_merge", "cross_selective_scan",
    "cross_selective_scan_core", "set_keep_scan_states", "use_backend", "set_backend",
    "get_backend", "available_backends", "BackendError", "__version__",
]
