"""The Triton launches' autotuning: every candidate config runs on scratch outputs, and the one
chosen gives the reference's results (here the fake timer prefers the last candidate, so a
config other than the default is used).  Runs compiled on the GPU and interpreted on the CPU."""
import pytest

from conftest import DEVICE
from ssops import testing
from ssops.dispatch import available_backends

pytestmark = pytest.mark.skipif(available_backends()["triton"] is not None,
                                reason=f"triton: {available_backends()['triton']}")


@pytest.fixture
def tuning(monkeypatch):
    from ssops.triton_kernels import launch
    tried = []

    def fake_bench(fn):
        fn()
        tried.append(None)
        return -float(len(tried))  # each later candidate looks faster

    monkeypatch.setattr(launch, "_may_tune", lambda kind: True)
    monkeypatch.setattr(launch, "_bench_ms", fake_bench)
    monkeypatch.setattr(launch, "tuned", {})
    return launch


def _assert_tuned(launch, kinds):
    assert {key[0] for key in launch.tuned} == set(kinds)
    for key, config in launch.tuned.items():
        kind, dpg, N, T = key[:4]
        default = launch._config(kind, dpg, T, N)
        assert config == launch._candidates(*default, dpg, T)[-1]


def test_selective_scan(tuning):
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=20, N=2, b_mode="grouped",
                                                  groups=2, device=DEVICE)
    testing.assert_backends_agree("selective_scan", *args, backends=["triton"],
                                  return_last_state=True, **kw)
    _assert_tuned(tuning, ["fwd", "bwd"])


@pytest.mark.parametrize("H,W", [(3, 5), (5, 6)])
def test_cross_selective_scan(tuning, monkeypatch, H, W):
    """(3, 5): the fused kernels; (5, 6) with a smaller fused limit: per-route launches that
    accumulate into their output (y_in / du_in), which a trial must not touch."""
    if W == 6:
        monkeypatch.setattr(tuning, "FUSED_MAX_TILE", 8)
    args, kw = testing.make_cross_selective_scan_inputs(batch=2, channels=4, H=H, W=W, N=2,
                                                        device=DEVICE)
    testing.assert_backends_agree("cross_selective_scan", *args, backends=["triton"], **kw)
    _assert_tuned(tuning, ["fwd", "bwd"] if W == 6 else ["fused_fwd", "fused_bwd"])


@pytest.mark.parametrize("kind", ["fwd", "bwd", "fused_fwd", "fused_bwd"])
@pytest.mark.parametrize("dpg,T,N", [(1, 16, 1), (3, 16, 16), (96, 512, 1), (1536, 2048, 16)])
def test_candidates_start_with_the_default(kind, dpg, T, N):
    """Even a tile too small for the alternatives keeps its default; every candidate splits
    the B/C group evenly."""
    from ssops.triton_kernels import launch
    default = launch._config(kind, dpg, T, N)
    candidates = launch._candidates(*default, dpg, T)
    assert candidates[0] == default
    assert all(dpg % bd == 0 and 1 <= w <= 16 for bd, w in candidates)
