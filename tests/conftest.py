import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import ssops
from ssops.dispatch import BACKENDS, available_backends

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=15, derandomize=True, **_common)
settings.register_profile("dev", max_examples=60, **_common)
settings.register_profile("gpu", max_examples=100, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _backend_params():
    """Every backend; those that cannot run here are skipped with their reason."""
    reasons = available_backends()
    return [pytest.param(name, marks=[] if reasons[name] is None else
                         pytest.mark.skip(reason=f"{name}: {reasons[name]}"))
            for name in BACKENDS]


@pytest.fixture(scope="session", params=_backend_params())
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def device():
    return DEVICE


# Where the Triton kernels run in Triton's interpreter (no GPU), keep shapes small: the
# interpreter runs a (BLOCK_D, N, BLOCK_L) tile at Python speed.
INTERPRETED_LIMITS = dict(max_len=24, max_N=4, max_dim=4, max_batch=2, max_side=5,
                          L=24, N=4, dim=4, H=5, W=6, channels=4)


def budget(backend, **sizes):
    """The given sizes, capped where ``backend`` is interpreted on the CPU."""
    if backend == "triton" and DEVICE == "cpu":
        return {k: min(v, INTERPRETED_LIMITS[k]) for k, v in sizes.items()}
    return sizes


@pytest.fixture
def chunked_triton(monkeypatch):
    """The Triton backend with chunks of 16 steps and no fused tiles, so that short sequences
    cross chunk boundaries and bidirectional / cross scans take their per-route launches."""
    reason = available_backends()["triton"]
    if reason is not None:
        pytest.skip(f"triton: {reason}")
    from ssops.triton_kernels import launch
    monkeypatch.setattr(launch, "FUSED_MAX_TILE", 8)
    monkeypatch.setitem(launch.override, "fwd", (32, 16, 1))
    monkeypatch.setitem(launch.override, "bwd", (32, 16, 1))
    return "triton"


def _cuda_backend_or_skip():
    """ssops._cuda_backend where it can run here; else the test is skipped, saying why."""
    reason = available_backends()["cuda"]
    if reason is not None:
        pytest.skip(f"cuda: {reason}")
    from ssops import _cuda_backend
    return _cuda_backend


# Work splits of the cuda backend that put segment and segment-group boundaries inside short
# sequences: several segments side by side, one segment per lane walked in groups, and a whole
# warp of segments.
CUDA_SPLITS = {"segments": {"nseg": 4, "seg_len": 16}, "groups": {"nseg": 1, "seg_len": 16},
               "warp": {"nseg": 32, "seg_len": 16}}


@pytest.fixture(params=list(CUDA_SPLITS))
def split_cuda(request, monkeypatch):
    """The cuda backend with a forced work split (see CUDA_SPLITS)."""
    _cuda_backend = _cuda_backend_or_skip()
    monkeypatch.setattr(_cuda_backend, "override", dict(CUDA_SPLITS[request.param]))
    return "cuda"


@pytest.fixture
def fused_cuda(monkeypatch):
    """The cuda backend, counting its fused multi-route launches ({"fwd": n, "bwd": n}); the
    SS2D core takes them at every image size."""
    _cuda_backend = _cuda_backend_or_skip()
    monkeypatch.setattr(_cuda_backend, "FUSED_CROSS_MIN_L", 0)
    monkeypatch.setattr(_cuda_backend, "LINE_FORWARD", False)
    monkeypatch.setattr(_cuda_backend, "LINE_BACKWARD", False)
    calls = {"fwd": 0, "bwd": 0}
    for kind in calls:
        real = getattr(_cuda_backend, f"_fused_{kind}")

        def counted(*args, _real=real, _kind=kind):
            calls[_kind] += 1
            return _real(*args)
        monkeypatch.setattr(_cuda_backend, f"_fused_{kind}", counted)
    return calls


@pytest.fixture
def line_cuda(monkeypatch):
    """The cuda backend, counting the SS2D forwards and backwards that run on the line kernels
    ({"fwd": n, "bwd": n})."""
    _cuda_backend = _cuda_backend_or_skip()
    calls = {"fwd": 0, "bwd": 0}
    for kind in calls:
        real = getattr(_cuda_backend, f"_fused_{kind}")

        def counted(plan, *args, _real=real, _kind=kind):
            calls[_kind] += len(plan[0]) > 4 and plan[0][4] == 1
            return _real(plan, *args)
        monkeypatch.setattr(_cuda_backend, f"_fused_{kind}", counted)
    return calls


@pytest.fixture
def lane_cuda(monkeypatch):
    """The cuda backend with the states-on-lanes kernels at every batch size, counting the
    launches that take them ({"fwd": n, "bwd": n}; a backward's pass for chunk states counts as
    a forward)."""
    _cuda_backend = _cuda_backend_or_skip()
    monkeypatch.setattr(_cuda_backend, "LANE_SCAN_MIN_WARPS", 0)
    monkeypatch.setattr(_cuda_backend, "LINE_BACKWARD", False)
    calls = {"fwd": 0, "bwd": 0}
    ext = _cuda_backend._ext()

    def counted(kind):
        def launch(*args):
            split = next(a for a in args if isinstance(a, list))
            calls[kind] += split[0] == 0  # the states per lane: 0 for these kernels
            return getattr(ext, f"scan_{kind}")(*args)
        return launch

    class Counting:
        def __getattr__(self, name):
            return getattr(ext, name)

        scan_fwd, scan_bwd = staticmethod(counted("fwd")), staticmethod(counted("bwd"))
    monkeypatch.setattr(_cuda_backend, "_ext", Counting)
    return calls


@pytest.fixture(params=[False, True], ids=["recompute", "keep"])
def keep_states(request):
    """Both ways of a scan's backward: from the forward run again (the default), and from the
    states the forward kept (ssops.set_keep_scan_states)."""
    ssops.set_keep_scan_states(request.param)
    yield request.param
    ssops.set_keep_scan_states(False)
