"""Bad input gets a clear error naming the argument, before any backend runs."""
import pytest
import torch

import ssops
from ssops import testing


def _ss(**over):
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=6, N=3)
    named = dict(zip(["u", "delta", "A", "B", "C"], args), **kw)
    named.update(over)
    return named


@pytest.mark.parametrize("over,exc,match", [
    (dict(u=torch.randn(2, 4)), ValueError, "u must have 3 dims"),
    (dict(delta=torch.rand(2, 4, 5)), ValueError, "delta must have shape"),
    (dict(delta=torch.rand(2, 4, 6, dtype=torch.float64)), TypeError, "delta must be one of"),
    (dict(A=torch.randn(5, 3)), ValueError, "A must have shape"),
    (dict(A=torch.randn(4, 3, dtype=torch.float16)), TypeError, "A must be one of"),
    (dict(A=torch.randn(4, 3, dtype=torch.complex64)), TypeError, "A must be one of"),
    (dict(B=torch.randn(2, 4, 6)), ValueError, "B must have shape"),
    (dict(C=torch.randn(2, 3, 3, 6)), ValueError, "C has 3 groups"),
    (dict(B=torch.randn(2, 3)), ValueError, "B must have shape"),
    (dict(D=torch.randn(5)), ValueError, "D must have shape"),
    (dict(delta_bias=torch.randn(4, 1)), ValueError, "delta_bias must have 1 dims"),
    (dict(z=torch.randn(2, 4, 7)), ValueError, "z must have shape"),
    (dict(u=[1.0]), TypeError, "u must be a torch.Tensor"),
    (dict(u=torch.randn(0, 4, 6), delta=torch.rand(0, 4, 6), B=torch.randn(0, 3, 6),
          C=torch.randn(0, 3, 6), z=None), ValueError, "batch must be >= 1"),
    (dict(u=torch.randn(2, 4, 0), delta=torch.rand(2, 4, 0), B=torch.randn(4, 3),
          C=torch.randn(4, 3), z=None), ValueError, "L must be >= 1"),
    (dict(out_dtype=torch.int32), TypeError, "out_dtype"),
])
def test_selective_scan_bad_input(over, exc, match):
    with pytest.raises(exc, match=match):
        ssops.selective_scan(**_ss(**over))


def test_device_mismatch():
    named = _ss()
    named["A"] = named["A"].to("meta")
    with pytest.raises(ValueError, match="A is on meta but the inputs are on cpu"):
        ssops.selective_scan(**named)


def test_noncontiguous_inputs_accepted():
    args, kw = testing.make_selective_scan_inputs(strided=True)
    assert not args[0].is_contiguous()
    y = ssops.selective_scan(*args, **kw)
    y2 = ssops.selective_scan(*[a.contiguous() for a in args], **kw)
    torch.testing.assert_close(y, y2, rtol=0, atol=0)


def test_bidirectional_bad_input():
    args, kw = testing.make_selective_scan_inputs(batch=3, direction_axis=True)
    with pytest.raises(ValueError, match="u must be stacked per direction"):
        ssops.bidirectional_scan(args[0][0], *args[1:], **kw)
    with pytest.raises(ValueError, match="combine"):
        ssops.bidirectional_scan(*args, **kw, combine="max")


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ssops.cross_scan(torch.randn(2, 3, 4)), ValueError, "x must have 4 dims"),
    (lambda: ssops.cross_scan(torch.randn(1, 2, 3, 4), layout="nchw"), ValueError, "layout"),
    (lambda: ssops.cross_scan(torch.randn(1, 2, 3, 4), routes="diag"), ValueError, "routes"),
    (lambda: ssops.cross_scan(torch.randint(0, 3, (1, 2, 3, 4))), TypeError, "x must be one of"),
    (lambda: ssops.cross_merge(torch.randn(1, 4, 2, 12), 3, 5), ValueError, "y must have shape"),
    (lambda: ssops.cross_merge(torch.randn(1, 2, 2, 12), 3, 4), ValueError, "K=4"),
    (lambda: ssops.cross_merge(torch.randn(1, 4, 2, 12), 3.0, 4), ValueError, "positive ints"),
])
def test_cross_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_cross_selective_scan_bad_input():
    args, kw = testing.make_cross_selective_scan_inputs(routes="cross")
    with pytest.raises(ValueError, match=r"delta must have shape \(batch, K=2"):
        ssops.cross_selective_scan_core(*args, **dict(kw, routes="bidi"))
    x = args[0]
    with pytest.raises(ValueError, match="x_proj_weight must have shape"):
        ssops.cross_selective_scan(x, torch.randn(4, 5, 3), torch.randn(4, 3, 2),
                                   torch.randn(4, 3), torch.randn(12, 2), torch.randn(12))
