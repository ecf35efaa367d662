"""Backend selection: precedence, errors, fallback, thread-safety, broken backends."""
import threading

import pytest
import torch

import ssops
from ssops import dispatch, testing


@pytest.fixture
def record(monkeypatch):
    """Record which backend module served each op call (wrapping dispatch.resolve)."""
    calls = []
    real = dispatch.resolve

    def spy(op, request, tensors, backward=False):
        module = real(op, request, tensors, backward)
        calls.append((request, module.__name__.rsplit(".", 1)[-1]))
        return module

    monkeypatch.setattr("ssops._ops.resolve", spy)
    return calls


def stand_in(monkeypatch, slot, name, **methods):
    """Install as backend ``slot`` a module named ``name`` that runs the reference, with
    ``methods`` (plain functions) on top; its why_not serves everything unless given."""
    import ssops.reference as ref

    class StandIn:
        __name__ = name

        def __getattr__(self, attr):
            return getattr(ref, attr)

    module = StandIn()
    for attr, fn in {"why_not": lambda op, tensors: None, **methods}.items():
        setattr(module, attr, fn)
    monkeypatch.setitem(dispatch._loaded, slot, module)
    monkeypatch.delitem(dispatch._load_errors, slot, raising=False)
    return module


@pytest.fixture
def fake_backend(monkeypatch):
    """A stand-in 'triton' backend that serves float64 only, running the reference."""
    stand_in(monkeypatch, "triton", "fake_triton", why_not=lambda op, tensors: (
        None if tensors[next(iter(tensors))].dtype == torch.float64 else "float64 only"))


def _inputs(dtype=torch.float32):
    args, kw = testing.make_selective_scan_inputs(batch=1, dim=2, L=4, N=2, dtype=dtype)
    return args, kw


def test_precedence(record, fake_backend, monkeypatch):
    args, kw = _inputs(torch.float64)
    monkeypatch.setenv("SSOPS_BACKEND", "reference")
    ssops.selective_scan(*args, **kw)
    ssops.set_backend("triton")
    try:
        ssops.selective_scan(*args, **kw)
        with ssops.use_backend("reference"):
            ssops.selective_scan(*args, **kw)
            with ssops.use_backend("triton"):  # nested: innermost wins
                ssops.selective_scan(*args, **kw)
                ssops.selective_scan(*args, **kw, backend="reference")  # per call wins
            ssops.selective_scan(*args, **kw)
    finally:
        ssops.set_backend(None)
    assert [r for r, _ in record] == ["reference", "triton", "reference", "triton", "reference",
                                      "reference"]


def test_auto_falls_back_silently(record, fake_backend):
    ssops.selective_scan(*_inputs(torch.float64)[0], backend="auto")
    ssops.selective_scan(*_inputs(torch.float32)[0], backend="auto")
    assert [m for _, m in record] == ["fake_triton", "reference"]


def test_explicit_backend_that_cannot_serve_says_why(fake_backend):
    with pytest.raises(ssops.BackendError, match="triton.*float64 only"):
        ssops.selective_scan(*_inputs(torch.float32)[0], backend="triton")


def test_unavailable_backend_error_names_reason(monkeypatch):
    monkeypatch.setitem(dispatch._load_errors, "cuda", "no GPU here")
    monkeypatch.delitem(dispatch._loaded, "cuda", raising=False)
    assert ssops.available_backends()["cuda"] == "no GPU here"
    with pytest.raises(ssops.BackendError, match="no GPU here"):
        ssops.cross_scan(torch.randn(1, 1, 2, 2), backend="cuda")


def test_broken_backend_module_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(dispatch._MODULES, "cuda", "ssops._no_such_module")
    monkeypatch.delitem(dispatch._loaded, "cuda", raising=False)
    monkeypatch.delitem(dispatch._load_errors, "cuda", raising=False)
    reason = ssops.available_backends()["cuda"]
    assert reason.startswith("import failed: ModuleNotFoundError")
    assert ssops.selective_scan(*_inputs()[0]) is not None  # auto still works


def test_unknown_names_rejected(monkeypatch):
    with pytest.raises(ValueError, match="unknown ssops backend 'cudnn'"):
        ssops.set_backend("cudnn")
    with pytest.raises(ValueError, match="unknown"):
        with ssops.use_backend("fast"):
            pass
    monkeypatch.setenv("SSOPS_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        ssops.get_backend()


def test_use_backend_is_thread_local():
    seen = {}
    ready, done = threading.Event(), threading.Event()

    def worker():
        with ssops.use_backend("triton"):
            ready.set()
            done.wait(5)
            seen["worker"] = ssops.get_backend()

    t = threading.Thread(target=worker)
    t.start()
    ready.wait(5)
    seen["main"] = ssops.get_backend()
    done.set()
    t.join()
    assert seen == {"worker": "triton", "main": "auto"}


def test_nothing_is_kept_for_a_backward_on_another_backend(monkeypatch):
    """Under auto the forward and backward resolve separately: a forward whose backend keeps
    states fills its buffer only when the backward resolves to that backend too."""
    from ssops import _ops

    monkeypatch.setattr(dispatch, "AUTO_ORDER", ("reference", "cuda"))
    args, kw = _inputs()
    tensors = dict(zip(("u", "delta", "A", "B", "C"), args))
    for backward_too, kept in ((True, 7), (False, 0)):
        stand_in(monkeypatch, "cuda", "keeping_cuda", saved_numel=lambda op, tensors: 7,
                 fast_path=lambda op, tensors, backward, b=backward_too: b or not backward)
        impl = dispatch.resolve("selective_scan", "auto", tensors)
        saved = _ops._saved_buffer(impl, "selective_scan", tensors, True, args[0], "auto")
        assert impl.__name__ == "keeping_cuda" and saved.numel() == kept


def test_reference_is_always_available():
    assert ssops.available_backends()["reference"] is None
    assert set(ssops.available_backends()) == {"cuda", "triton", "reference"}


def test_auto_takes_a_reported_fast_path_first(record, monkeypatch):
    """auto: a later backend whose module reports a fast path for the inputs serves them; the
    forward and the backward of an op are resolved separately."""
    stand_in(monkeypatch, "cuda", "fast_cuda",
             fast_path=lambda op, tensors, backward: op == "selective_scan" and not backward)
    monkeypatch.setattr(dispatch, "AUTO_ORDER", ("reference", "cuda"))
    args, kw = _inputs()
    args[0].requires_grad_()
    ssops.selective_scan(*args, **kw).sum().backward()
    assert record == [("auto", "fast_cuda"), ("auto", "reference")]


def test_cuda_fast_path_is_the_lane_kernels(monkeypatch):
    """The cuda backend's fast path (shapes only, answered without the extension): the
    states-on-lanes forward and backward of selective_scan / bidirectional_scan at Mamba / Vim
    shapes; at VMamba's N = 1 the forward where rows are 8-byte aligned (not L = 49 in half
    precision) and the backward from two waves of warps (not stage 1's 1536); never a batch too
    small to fill the GPU."""
    from ssops import _cuda_backend as cuda
    monkeypatch.setattr(cuda, "why_not", lambda op, tensors: None)  # meta tensors stand in

    def tensors(batch, dim, L, N, lead=()):
        e = lambda *shape: torch.empty(*lead, *shape, device="meta", dtype=torch.bfloat16)  # noqa: E731
        return dict(u=e(batch, dim, L), delta=e(batch, dim, L), B=e(batch, 1, N, L),
                    C=e(batch, 1, N, L), A=torch.empty(*lead, dim, N, device="meta"))

    assert cuda.fast_path("selective_scan", tensors(8, 1536, 2048, 16), False)
    assert cuda.fast_path("selective_scan", tensors(8, 1536, 2048, 16), True)
    assert cuda.fast_path("selective_scan", tensors(128, 384, 3136, 1), False)
    assert not cuda.fast_path("selective_scan", tensors(128, 384, 3136, 1), True)
    assert cuda.fast_path("selective_scan", tensors(128, 1536, 196, 1), True)
    assert not cuda.fast_path("selective_scan", tensors(128, 3072, 49, 1), False)
    assert cuda.fast_path("selective_scan", tensors(128, 3072, 49, 1), True)
    assert not cuda.fast_path("selective_scan", tensors(8, 1536, 2048, 1), False)  # 384 warps
    assert not cuda.fast_path("selective_scan", tensors(1, 64, 2048, 16), False)
    assert cuda.fast_path("bidirectional_scan", tensors(64, 768, 197, 16, lead=(2,)), False)
    assert cuda.fast_path("bidirectional_scan", tensors(64, 768, 197, 16, lead=(2,)), True)


def test_cuda_fast_path_of_the_ss2d_core(monkeypatch):
    """The SS2D core's forward and backward on the line kernels up to 64 x 64 grids (VMamba-T's
    stages), channel-first and N = 1 only."""
    from ssops import _cuda_backend as cuda
    monkeypatch.setattr(cuda, "why_not", lambda op, tensors: None)  # meta tensors stand in

    def tensors(c, H, W, N=1, layout="bchw"):
        e = lambda *shape: torch.empty(*shape, device="meta", dtype=torch.float16)  # noqa: E731
        x = e(128, c, H, W) if layout == "bchw" else e(128, H, W, c)
        return dict(x=x, delta=e(128, 4, c, H * W), B=e(128, 4, N, H * W),
                    C=e(128, 4, N, H * W), A=torch.empty(4 * c, N, device="meta"))

    for c, side in ((96, 56), (192, 28), (384, 14), (768, 7)):
        assert cuda.fast_path("cross_selective_scan", tensors(c, side, side), False)
        assert cuda.fast_path("cross_selective_scan", tensors(c, side, side), True)
    for backward in (False, True):
        assert not cuda.fast_path("cross_selective_scan", tensors(96, 96, 96), backward)
    assert not cuda.fast_path("cross_selective_scan", tensors(192, 28, 28, N=16), False)
    assert not cuda.fast_path("cross_selective_scan", tensors(192, 28, 28, layout="bhwc"), False)


def test_the_forward_keeps_states_only_when_asked_and_a_backward_follows(monkeypatch):
    """The scans' forward is asked to keep what its backward starts from (``save``) only under
    set_keep_scan_states(True) and when a backward will follow."""
    asked = []
    real = ssops._ops.selective_scan

    def spy(*args):
        asked.append(args[-2])  # (..., out_dtype, save, backend)
        return real(*args)
    monkeypatch.setattr(ssops.functional._ops, "selective_scan", spy)
    args, kw = _inputs()
    leaves = [a.clone().requires_grad_() for a in args]
    ssops.selective_scan(*leaves, **kw)  # by default: inputs only
    ssops.set_keep_scan_states(True)
    try:
        ssops.selective_scan(*args, **kw)  # no input requires grad
        ssops.selective_scan(*leaves, **kw)
        with torch.no_grad():
            ssops.selective_scan(*leaves, **kw)
    finally:
        ssops.set_keep_scan_states(False)
    assert asked == [False, False, True, False]
