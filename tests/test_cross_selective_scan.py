"""cross_selective_scan: the fused SS2D core against its three-op definition and VMamba's."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import ssops
import ssops.functional
from ssops import testing
from ssops.reference.cross_scan import to_routes
from conftest import DEVICE, budget


@pytest.mark.parametrize("layout", ["bchw", "bhwc"])
@pytest.mark.parametrize("routes", ["unidi", "bidi", "cross"])
def test_core_equals_three_ops(layout, routes):
    args, kw = testing.make_cross_selective_scan_inputs(2, 3, 4, 5, N=2, layout=layout,
                                                        routes=routes, dtype=torch.float64)
    x, delta, A, B, C = args
    y = ssops.cross_selective_scan_core(*args, **kw)
    b, K, c, L = delta.shape
    xs = ssops.cross_scan(x, layout=layout, routes=routes).flatten(1, 2)
    ys = ssops.selective_scan(xs, to_routes(delta, 4, 5, routes).flatten(1, 2), A,
                              to_routes(B, 4, 5, routes), to_routes(C, 4, 5, routes), kw["D"],
                              delta_bias=kw["delta_bias"], delta_softplus=True)
    expected = ssops.cross_merge(ys.view(b, K, c, L), 4, 5, layout=layout, routes=routes)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def vmamba_ss2d_core(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds):
    """VMamba's cross_selective_scan (forward_corev2) up to out_norm, step by step:
    projections applied to the cross-scanned copies, per-route loops, merged by flips."""
    B, C, H, W = x.shape
    K, N = 4, A_logs.shape[1]
    R = dt_projs_weight.shape[2]
    xs = torch.stack([x.flatten(2), x.transpose(2, 3).flatten(2)], 1)
    xs = torch.cat([xs, xs.flip(-1)], 1)                                   # (B, 4, C, L)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, x_proj_weight)
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, dt_projs_weight)
    A = -torch.exp(A_logs).view(K, C, N)
    ys = []
    for k in range(K):
        dt = F.softplus(dts[:, k] + dt_projs_bias[k][:, None])
        h = torch.zeros(B, C, N, dtype=x.dtype)
        out = []
        for t in range(H * W):
            h = torch.exp(dt[..., t, None] * A[k]) * h + \
                dt[..., t, None] * Bs[:, k, None, :, t] * xs[:, k, :, t, None]
            out.append((h * Cs[:, k, None, :, t]).sum(-1) + Ds.view(K, C)[k] * xs[:, k, :, t])
        ys.append(torch.stack(out, -1))
    ys = torch.stack(ys, 1)
    y = ys[:, 0] + ys[:, 2].flip(-1)
    yt = ys[:, 1] + ys[:, 3].flip(-1)
    return y + yt.view(B, C, W, H).transpose(2, 3).flatten(2)


def _ss2d_params(C=3, N=2, R=2, K=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return (r(K, R + 2 * N, C) * 0.5, r(K, C, R) * 0.5, r(K, C) * 0.5, r(K * C, N) * 0.3,
            r(K * C))


def test_high_level_matches_vmamba_definition():
    x = testing.make_cross_scan_inputs(2, 3, 4, 5, dtype=torch.float64)
    params = _ss2d_params()
    y = ssops.cross_selective_scan(x, *params)
    torch.testing.assert_close(y.flatten(2), vmamba_ss2d_core(x, *params), rtol=1e-10, atol=1e-10)
    y_hwc = ssops.cross_selective_scan(x.permute(0, 2, 3, 1), *params, layout="bhwc")
    torch.testing.assert_close(y_hwc, y.permute(0, 2, 3, 1), rtol=1e-10, atol=1e-10)


def test_high_level_hands_the_core_a_contiguous_delta(monkeypatch):
    """The projected delta (4x x's bytes) reaches the core contiguous, as the kernels read it
    (an einsum's permuted result made the op copy it in every VMamba block: bench/NOTES.md)."""
    seen = []
    core = ssops.functional.cross_selective_scan_core
    monkeypatch.setattr(ssops.functional, "cross_selective_scan_core",
                        lambda x, delta, *a, **kw: seen.append(delta) or core(x, delta, *a, **kw))
    x = testing.make_cross_scan_inputs(2, 3, 4, 5, dtype=torch.float64)
    for image, layout in ((x, "bchw"), (x.contiguous(memory_format=torch.channels_last), "bchw"),
                          (x.permute(0, 2, 3, 1).contiguous(), "bhwc")):
        ssops.cross_selective_scan(image, *_ss2d_params(), layout=layout)
    assert len(seen) == 3 and all(d.is_contiguous() for d in seen)


def test_gradcheck_high_level():
    x = testing.make_cross_scan_inputs(1, 2, 3, 3, dtype=torch.float64)
    params = _ss2d_params(C=2)
    assert testing.gradcheck_op(ssops.cross_selective_scan, x, *params)


@pytest.mark.parametrize("routes", ["bidi", "cross"])
def test_gradcheck_core(routes):
    args, kw = testing.make_cross_selective_scan_inputs(1, 2, 3, 4, N=2, routes=routes,
                                                        dtype=torch.float64)
    assert testing.gradcheck_op("cross_selective_scan", *args, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_backends_agree_vmamba_like(backend, dtype):
    size = budget(backend, channels=8, H=14, W=14)
    args, kw = testing.make_cross_selective_scan_inputs(2, size["channels"], size["H"], size["W"],
                                                        N=1, dtype=dtype, device=DEVICE)
    testing.assert_backends_agree("cross_selective_scan", *args, backends=[backend], **kw)


@given(data=st.data())
def test_backends_agree_hypothesis(backend, data):
    args, kw = data.draw(testing.cross_selective_scan_inputs(
        dtypes=(torch.float32, torch.float16), device=DEVICE,
        **budget(backend, max_side=9, max_N=4)))
    testing.assert_backends_agree("cross_selective_scan", *args, backends=[backend], **kw)


@pytest.mark.parametrize("layout", ["bchw", "bhwc"])
def test_triton_per_route_launches(chunked_triton, layout):
    """Grids too large for the fused tile: one chunked launch per route, column-major walks
    crossing chunk boundaries."""
    args, kw = testing.make_cross_selective_scan_inputs(2, 3, 5, 7, N=2, layout=layout,
                                                        device=DEVICE)
    testing.assert_backends_agree("cross_selective_scan", *args, backends=[chunked_triton],
                                  **kw)


@pytest.mark.parametrize("layout", ["bchw", "bhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_segment_boundaries(split_cuda, layout, dtype):
    """Row walks cut into segments; column walks in groups of columns (a 37 x 11 grid)."""
    args, kw = testing.make_cross_selective_scan_inputs(2, 3, 37, 11, N=2, layout=layout,
                                                        dtype=dtype, device=DEVICE)
    testing.assert_backends_agree("cross_selective_scan", *args, backends=[split_cuda], **kw)


@pytest.mark.parametrize("H,W,N,dtype,fused_bwd", [
    (7, 7, 1, torch.float16, True),      # 2 steps per thread, one warp per image, 4 a block
    (10, 12, 16, torch.float32, True),   # 4 steps per thread
    (28, 28, 1, torch.bfloat16, True),   # VMamba-T stage 2: 4 warps per image, block scans
    (37, 41, 1, torch.float16, True),    # odd length: 16 steps per thread forward, 8 backward
    (28, 28, 16, torch.float16, False),  # the backward's B / C gradients don't fit: per route
])
def test_cuda_fused(fused_cuda, H, W, N, dtype, fused_bwd):
    """Every route of whole images in one block (csrc/fused.cuh)."""
    args, kw = testing.make_cross_selective_scan_inputs(2, 4, H, W, N=N, dtype=dtype,
                                                        device=DEVICE)
    testing.assert_backends_agree("cross_selective_scan", *args, backends=["cuda"], **kw)
    assert fused_cuda == {"fwd": 1, "bwd": int(fused_bwd)}


@pytest.mark.parametrize("H,W,channels,routes,dtype,out_dtype,lines", [
    (8, 16, 32, "cross", torch.float16, None, 1),   # 16-byte rows, 16 channels a block
    (7, 7, 48, "cross", torch.bfloat16, torch.float32, 1),  # element rows, 7-step columns; dy f32
    (28, 28, 4, "cross", torch.float16, None, 1),   # VMamba-T stage 2's grid: 4-element rows,
    #                                                 forward walked once a route (two planes a
    #                                                 channel); backward in chunks of 4, own
    #                                                 dB / dC planes
    (28, 28, 8, "cross", torch.float16, None, 1),   # stage 2's 8 channels a block: backward in
    #                                                 chunks of 4, dB / dC straight to the
    #                                                 outputs (no room for own planes)
    (28, 28, 8, "cross", torch.float16, torch.float32, 1),  # the same with dy f32 (VMamba's
    #                                                 training): chunks of 8, one plane pair
    (14, 14, 16, "cross", torch.float16, None, 1),  # stage 3: 7-step column runs (forward)
    (56, 56, 8, "cross", torch.float16, None, 1),   # stage 1: 8-step column runs, walked twice
    #                                                 (forward: two planes won't fit 3 blocks);
    #                                                 backward in chunks of 8, 4 channels a
    #                                                 block, no room for own dB / dC planes:
    #                                                 rows sum over lanes, columns by pairs of
    #                                                 channels (whole warps), into the outputs
    (50, 50, 4, "cross", torch.float16, None, 1),   # chunks of 8 with tails, rows and columns;
    #                                                 forward walked twice, with column tails;
    #                                                 column pairs in a partial last warp
    (26, 64, 4, "cross", torch.bfloat16, None, 1),  # columns in chunks of 8 with a tail, own
    #                                                 dB / dC planes
    (64, 64, 4, "cross", torch.float16, None, 1),   # the largest side: 4 x 64 lines, the most
    #                                                 threads a block; lanes / pairs
    (37, 11, 3, "cross", torch.float32, None, 1),   # odd sides, one channel a block
    (96, 96, 1, "cross", torch.float16, None, 1),   # one channel a block and no room for two
    #                                                 blocks with own planes: its own pair all
    #                                                 the same
    (12, 20, 8, "bidi", torch.float32, None, 1),    # rows only
    (5, 14, 6, "unidi", torch.float16, None, 1),    # one route, 2-element rows with a tail
    (16, 24, 2, "cross", torch.float16, None, 1),   # 8-step column runs (forward), no tails
    (9, 32, 4, "cross", torch.float32, None, 1),    # backward: 4-element rows, column tails
    (2, 300, 2, "cross", torch.float32, None, 0),   # 300 columns: over a block's threads
])
def test_cuda_lines(line_cuda, H, W, channels, routes, dtype, out_dtype, lines):
    """N = 1, channel-first: the forward and the backward on one thread per grid line
    (csrc/line_scan.cuh), or on the other kernels where a block can't hold a channel's
    lines."""
    args, kw = testing.make_cross_selective_scan_inputs(2, channels, H, W, N=1, routes=routes,
                                                        dtype=dtype, device=DEVICE)
    testing.assert_backends_agree("cross_selective_scan", *args, backends=["cuda"],
                                  out_dtype=out_dtype, **kw)
    assert line_cuda == {"fwd": lines, "bwd": lines}


def test_cuda_lines_unaligned_rows(line_cuda):
    """x and delta at an odd element offset (contiguous views one element into a buffer), B / C
    float32 beside a float16 x: the rows are read element by element, forward and backward."""
    (x, delta, A, B, C), kw = testing.make_cross_selective_scan_inputs(
        2, 4, 8, 16, N=1, dtype=torch.float16, device=DEVICE)

    def shifted(t):
        return torch.empty(t.numel() + 1, device=DEVICE, dtype=t.dtype)[1:].view_as(t).copy_(t)
    testing.assert_backends_agree("cross_selective_scan", shifted(x), shifted(delta), A,
                                  B.float(), C.float(), backends=["cuda"], **kw)
    assert line_cuda == {"fwd": 1, "bwd": 1}


@pytest.mark.parametrize("H,W,dtype,out_dtype", [
    (8, 8, torch.float16, None),              # whole 16-step chunks, 16-byte rows
    (7, 9, torch.bfloat16, torch.float32),    # a tail chunk, element rows; dy float32
    (20, 37, torch.float32, None),            # 32 x 32 copy tiles, two columns of them
])
def test_cuda_ss2d_backward_on_lanes(lane_cuda, H, W, dtype, out_dtype):
    """N = 1, channel-first: the backward as the routes' copies, one flat backward on the
    one-lane-per-channel kernels over every route's channels, and the merge."""
    args, kw = testing.make_cross_selective_scan_inputs(2, 32, H, W, N=1, dtype=dtype,
                                                        device=DEVICE)
    testing.assert_backends_agree("cross_selective_scan", *args, backends=["cuda"],
                                  out_dtype=out_dtype, **kw)
    assert lane_cuda["bwd"] == 1
