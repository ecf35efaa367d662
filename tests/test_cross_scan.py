"""cross_scan / cross_merge: VMamba's routes, adjointness, layouts, gradients, backends."""
import pytest
import torch
from hypothesis import given

import ssops
from ssops import testing
from conftest import DEVICE, _cuda_backend_or_skip


def vmamba_cross_scan(x):
    """VMamba's definition (BCHW): row-major, column-major, and both reversed."""
    B, C, H, W = x.shape
    rows, cols = x.flatten(2), x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], 1)


def test_cross_routes_match_vmamba():
    x = testing.make_cross_scan_inputs(2, 3, 4, 5)
    torch.testing.assert_close(ssops.cross_scan(x), vmamba_cross_scan(x), rtol=0, atol=0)
    rows = x.flatten(2)[:, None]
    torch.testing.assert_close(ssops.cross_scan(x, routes="unidi"), rows, rtol=0, atol=0)
    torch.testing.assert_close(ssops.cross_scan(x, routes="bidi"),
                               torch.cat([rows, rows.flip(-1)], 1), rtol=0, atol=0)


@pytest.mark.parametrize("routes", ["unidi", "bidi", "cross"])
def test_layouts_agree(routes):
    x = testing.make_cross_scan_inputs(2, 3, 4, 5)
    xs = ssops.cross_scan(x, routes=routes)
    torch.testing.assert_close(ssops.cross_scan(x.permute(0, 2, 3, 1), layout="bhwc",
                                                routes=routes), xs, rtol=0, atol=0)
    y = torch.randn_like(xs)
    torch.testing.assert_close(ssops.cross_merge(y, 4, 5, layout="bhwc", routes=routes),
                               ssops.cross_merge(y, 4, 5, routes=routes).permute(0, 2, 3, 1))


@given(testing.cross_scan_inputs(dtypes=(torch.float64,), device=DEVICE))
def test_merge_is_adjoint_of_scan(case):
    """<cross_scan(x), y> == <x, cross_merge(y)> for every layout and route set."""
    x, layout, routes = case
    xs = ssops.cross_scan(x, layout=layout, routes=routes)
    y = torch.randn_like(xs)
    H, W = (x.shape[2], x.shape[3]) if layout == "bchw" else (x.shape[1], x.shape[2])
    lhs = (xs * y).sum()
    rhs = (x * ssops.cross_merge(y, H, W, layout=layout, routes=routes)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    # merging the scan of x gives K copies of x: every route visits every pixel once
    K = xs.shape[1]
    torch.testing.assert_close(ssops.cross_merge(xs, H, W, layout=layout, routes=routes), K * x)


@pytest.mark.parametrize("layout", ["bchw", "bhwc"])
def test_gradcheck(layout):
    x = testing.make_cross_scan_inputs(2, 2, 3, 4, layout, torch.float64)
    assert testing.gradcheck_op("cross_scan", x, layout=layout)
    y = torch.randn(2, 4, 2, 12, dtype=torch.float64)
    assert testing.gradcheck_op("cross_merge", y, 3, 4, layout=layout)


@given(testing.cross_scan_inputs(dtypes=(torch.float32, torch.float16, torch.bfloat16),
                                 device=DEVICE))
def test_backends_agree_hypothesis(backend, case):
    x, layout, routes = case
    testing.assert_backends_agree("cross_scan", x, backends=[backend], layout=layout,
                                  routes=routes)
    H, W = (x.shape[2], x.shape[3]) if layout == "bchw" else (x.shape[1], x.shape[2])
    y = ssops.cross_scan(x, layout=layout, routes=routes, backend="reference")
    testing.assert_backends_agree("cross_merge", y, H, W, backends=[backend], layout=layout,
                                  routes=routes)


# grids for csrc/cross_scan.cu's tiles (merges, per-route copies): 8 x 8 (32 images a block,
# the last block partial), 16 x 16 (8 a block), 32 x 32 (2 a block) and several tiles an image,
# ragged at both edges
CUDA_TILED_GRIDS = [(7, 7), (3, 13), (14, 14), (28, 28), (40, 70), (70, 33)]


@pytest.mark.gpu
@pytest.mark.parametrize("H,W", CUDA_TILED_GRIDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_tiled_routes(H, W, dtype):
    """The cuda backend's cross_scan and tiled cross_merge (channel-first images) against the
    reference: exact copies, and merges of exactly representable values."""
    _cuda_backend_or_skip()
    x = testing.make_cross_scan_inputs(3, 11, H, W, dtype=dtype, device="cuda", seed=H * W)
    for routes in ("unidi", "bidi", "cross"):
        xs = ssops.cross_scan(x, routes=routes, backend="cuda")
        torch.testing.assert_close(xs, ssops.cross_scan(x, routes=routes, backend="reference"),
                                   rtol=0, atol=0)
        y = torch.randint(-64, 64, xs.shape, device="cuda").to(dtype)  # sums exact in any dtype
        torch.testing.assert_close(ssops.cross_merge(y, H, W, routes=routes, backend="cuda"),
                                   ssops.cross_merge(y, H, W, routes=routes, backend="reference"),
                                   rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("H,W", CUDA_TILED_GRIDS)
def test_cuda_per_route_copies(H, W):
    """The SS2D core's copies (ssops._cuda_backend): each route's own image to and from its scan
    order, with a dtype change, and a merge into another dtype."""
    cuda = _cuda_backend_or_skip()
    from ssops.reference.cross_scan import from_routes, to_routes
    t = torch.randn(2, 4, 5, H * W, device="cuda")
    routed = to_routes(t, H, W, "cross")
    torch.testing.assert_close(cuda._to_routes(t, H, W, "cross"), routed, rtol=0, atol=0)
    torch.testing.assert_close(cuda._from_routes(routed, H, W, "cross", torch.float16),
                               t.half(), rtol=0, atol=0)
    y = torch.randint(-64, 64, routed.shape, device="cuda", dtype=torch.float32)
    torch.testing.assert_close(cuda._merged(y, H, W, "cross", torch.bfloat16),
                               ssops.cross_merge(y, H, W, backend="reference").bfloat16(),
                               rtol=0, atol=0)
