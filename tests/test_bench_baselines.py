"""bench/run.py's baselines compute what ssops computes (so the speed-ups compare like with like)."""
import pathlib
import sys

import pytest
import torch

import ssops
from ssops import testing
from ssops.compat.mamba_ssm import selective_scan_fn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import run  # noqa: E402


def test_vim_baseline_is_the_bidirectional_scan(monkeypatch):
    """Vim's two scans with flips and the add (here on ssops' mamba_ssm stand-in) give
    bidirectional_scan(combine="mean")."""
    outputs = []
    monkeypatch.setattr(run, "_mamba_ssm_scan", lambda: selective_scan_fn)
    monkeypatch.setattr(run, "cuda_time_ms", lambda fn: outputs.append(fn()) or 1.0)
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=20, N=3, dtype=torch.float64,
                                                  direction_axis=True)
    assert run.vim_mamba_ssm_times(*args, kw["D"], kw["z"], kw["delta_bias"]) == (1.0, 0.0)
    torch.testing.assert_close(outputs[0], ssops.bidirectional_scan(*args, **kw, combine="mean"),
                               rtol=1e-12, atol=1e-12)


def test_vmamba_core_baseline_is_the_fused_core(monkeypatch):
    """run.py's side-by-side SS2D baseline (cross_scan, one scan over the routes with delta / B / C
    reordered into route order, cross_merge; here on ssops' mamba_ssm stand-in) gives
    cross_selective_scan_core's y and times both passes."""
    times = iter([2.0, 5.0])
    monkeypatch.setattr(run, "_mamba_ssm_scan", lambda: selective_scan_fn)
    monkeypatch.setattr(run, "cuda_time_ms", lambda fn: (fn(), next(times))[1])
    (x, delta, A, B, C), kw = testing.make_cross_selective_scan_inputs(
        batch=2, channels=3, H=4, W=5, N=1, dtype=torch.float64)
    fwd_ms, bwd_ms, y = run.vmamba_unfused_times(x, delta, A, B, C, kw["D"], kw["delta_bias"],
                                                 copies="reference")
    assert (fwd_ms, bwd_ms) == (2.0, 3.0)
    want = ssops.cross_selective_scan_core(x, delta, A, B, C, kw["D"], kw["delta_bias"],
                                           backend="reference")
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


def test_ss2d_unfused_way_is_the_fused_core():
    """bench/ss2d.py's unfused forward (VMamba's pipeline on one ssops backend) gives
    cross_selective_scan_core's y."""
    import ss2d  # bench/ss2d.py
    (x, delta, A, B, C), kw = testing.make_cross_selective_scan_inputs(
        batch=2, channels=3, H=4, W=5, N=1, dtype=torch.float64)
    y = ss2d.unfused_way(x, delta, A, B, C, kw["D"], kw["delta_bias"], "reference")()
    want = ssops.cross_selective_scan_core(x, delta, A, B, C, kw["D"], kw["delta_bias"],
                                           backend="reference")
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


def test_vmamba_unfused_baseline_is_the_fused_op():
    """bench/models.py's "+unfused" SS2D core (VMamba's own order: cross_scan, projections of the
    routed copies, one scan, cross_merge) gives ssops.cross_selective_scan's y, both layouts."""
    import models  # bench/models.py (needs no GPU to import)
    torch.manual_seed(0)
    b, c, h, w, K, R, N = 2, 6, 5, 7, 4, 2, 1
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    params = (torch.randn(K, R + 2 * N, c, dtype=torch.float64) * 0.5,
              torch.randn(K, c, R, dtype=torch.float64) * 0.5,
              torch.randn(K, c, dtype=torch.float64) * 0.5,
              torch.randn(K * c, N, dtype=torch.float64) * 0.5,
              torch.randn(K * c, dtype=torch.float64))
    for layout, image in (("bchw", x), ("bhwc", x.permute(0, 2, 3, 1).contiguous())):
        kw = dict(layout=layout, backend="reference")
        want = ssops.cross_selective_scan(image, *params, **kw)
        for einsum in (False, True):
            torch.testing.assert_close(
                models.unfused_cross_selective_scan(image, *params, **kw, einsum=einsum), want,
                rtol=1e-12, atol=1e-12)


def test_case_pairs_compute_the_ops(monkeypatch):
    """run.case_pair's closures (run.py and bench/ab.py time them) call the backend with the ops'
    arguments in order: their y and du are the public ops' y and gradient of u for that dy."""
    monkeypatch.setattr(run, "CASES", {"lm": (2, 4, 12, 3, 1, torch.float64, True)})
    monkeypatch.setattr(run, "BIDI_CASES", {"bidi": (2, 4, 12, 3, torch.float64)})
    monkeypatch.setattr(run, "SS2D_CASES", {"ss2d": (2, 3, 4, 1, torch.float64)})
    ops = dict(lm=lambda t: ssops.selective_scan(**t, delta_softplus=True),
               bidi=lambda t: ssops.bidirectional_scan(**t, delta_softplus=True, combine="mean"),
               ss2d=lambda t: ssops.cross_selective_scan_core(**t, delta_softplus=True))
    for name, op in ops.items():
        pair = run.case_pair(name, "reference", device="cpu")
        leaves = {k: t.detach().requires_grad_() for k, t in pair.tensors.items()}
        first = next(iter(leaves.values()))  # u, or x
        y = op(dict(leaves, backend="reference"))
        du, = torch.autograd.grad(y, first, pair.dy)
        torch.testing.assert_close(pair.y, y, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(pair.bwd()[0], du, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(run.case_pair(name, "reference", device="cpu").dy, pair.dy,
                                   rtol=0, atol=0)  # (bench/ab.py compares pairs' gradients)


def test_ab_variant_specs():
    """bench/ab.py's variants: nvcc flags and another csrc/ (a build), a stand-in backend file,
    switches (known ones only)."""
    import ab  # bench/ab.py
    assert ab.parse("x: -DA=1 LINE_CHANNELS=4 module=/p.py -DB=2") == (
        "x", ("-DA=1 -DB=2", ""), {"LINE_CHANNELS": 4}, "/p.py")
    assert ab.parse("old: csrc=/tmp/old/csrc -DA=1") == ("old", ("-DA=1", "/tmp/old/csrc"), {},
                                                         None)
    assert ab.parse("base") == ("base", ("", ""), {}, None)
    with pytest.raises(SystemExit):
        ab.parse("y: NO_SUCH_SWITCH=1")
