"""Backend registry and selection: the one place that decides which backend runs an op.

Order of precedence for a call: the ``backend=`` argument, then the innermost ``use_backend``
block of the calling thread, then ``set_backend``, then the ``SSOPS_BACKEND`` environment
variable, else ``"auto"``.  ``auto`` takes the first backend in ``AUTO_ORDER`` that can serve
the inputs, except that a backend whose module reports a fast path for them
(``fast_path(op, tensors, backward) -> bool``, a check on shapes alone) goes first; a backend
asked for by name that cannot serve them raises ``BackendError``.  The forward and the backward
of an op are resolved separately, so each can take its own fastest backend.

A backend is a module exposing the op functions (the same names in ``reference/``,
``triton_kernels/`` and ``csrc/``'s wrapper) plus ``why_not(op, tensors) -> str | None``.
Modules are imported lazily, so a broken optional backend never breaks ``import ssops``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
from typing import Iterator

BACKENDS = ("cuda", "triton", "reference")
# fastest first (bench/results: the Triton kernels beat the CUDA ones at most benchmarked
# shapes; the exceptions are the backends' fast paths); reference serves everything, so auto
# always finds one
AUTO_ORDER = ("triton", "cuda", "reference")
_MODULES = {
    "cuda": "ssops._cuda_backend",
    "triton": "ssops.triton_kernels",
    "reference": "ssops.reference",
}


class BackendError(RuntimeError):
    """The requested backend cannot run this call (the message says why)."""


_thread = threading.local()  # per-thread stack of use_backend() names
_global: dict[str, str | None] = {"name": None}
_loaded: dict[str, object] = {}
_load_errors: dict[str, str] = {}


def _check_name(name: str) -> str:
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown ssops backend {name!r}; choose one of {('auto',) + BACKENDS}")
    return name


def set_backend(name: str | None) -> None:
    """Set the process-wide default backend (``None`` restores env/auto)."""
    _global["name"] = None if name is None else _check_name(name)


def get_backend() -> str:
    """The backend name in force for this thread (before per-call ``backend=``)."""
    return requested(None)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the enclosed ssops calls on ``name`` (thread-local, nestable)."""
    _check_name(name)
    stack = getattr(_thread, "stack", None)
    if stack is None:
        stack = _thread.stack = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def requested(backend: str | None) -> str:
    """The name asked for, before looking at the inputs (traceable by torch.compile)."""
    if backend is not None:
        return _check_name(backend)
    stack = getattr(_thread, "stack", None)
    if stack:
        return stack[-1]
    if _global["name"] is not None:
        return _global["name"]
    return _check_name(os.environ.get("SSOPS_BACKEND", "auto") or "auto")


def load(name: str):
    """Import a backend module; returns None (and remembers why) when it cannot be imported."""
    if name in _loaded:
        return _loaded[name]
    if name in _load_errors:
        return None
    try:
        module = importlib.import_module(_MODULES[name])
        reason = module.why_unavailable()
    except Exception as exc:  # noqa: BLE001 - any failure of an optional backend is a reason
        reason = f"import failed: {type(exc).__name__}: {exc}"
    if reason:
        _load_errors[name] = reason
        return None
    _loaded[name] = module
    return module


def available_backends() -> dict[str, str | None]:
    """Map each backend name to ``None`` when it can run here, else the reason it cannot."""
    return {name: (None if load(name) else _load_errors[name]) for name in BACKENDS}


def _why_not(name: str, op: str, tensors: dict):
    module = load(name)
    if module is None:
        return None, _load_errors[name]
    return module, module.why_not(op, tensors)


def _auto_order(op: str, tensors: dict, backward: bool) -> tuple[str, ...]:
    """AUTO_ORDER, led by the first later backend that reports a fast path for these inputs.
    Its module is imported to ask, not loaded: loading may build it, which pays only if it runs."""
    for name in AUTO_ORDER[1:]:
        module = _loaded.get(name)
        if module is None and name not in _load_errors:
            try:
                module = importlib.import_module(_MODULES[name])
            except Exception:  # noqa: BLE001 - load() reports it if this backend is ever asked
                continue
        fast = getattr(module, "fast_path", None)
        if fast is not None and fast(op, tensors, backward):
            return (name,) + tuple(n for n in AUTO_ORDER if n != name)
    return AUTO_ORDER


def resolve(op: str, request: str, tensors: dict, backward: bool = False):
    """Return the backend module that runs ``op`` (its backward if ``backward``) on
    ``tensors`` for the ``request``ed name."""
    if request != "auto":
        module, reason = _why_not(request, op, tensors)
        if reason:
            raise BackendError(f"ssops backend {request!r} cannot run {op}: {reason}")
        return module
    for name in _auto_order(op, tensors, backward):
        module, reason = _why_not(name, op, tensors)
        if not reason:
            return module
    raise BackendError(f"no ssops backend can run {op}")  # unreachable while reference serves all
