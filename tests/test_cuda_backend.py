"""The cuda backend's host side, without a GPU: work splits the kernels accept, the shipped
sources, and the reasons it gives where it cannot run.  (Its kernels are tested against the
reference in the per-op modules, on a GPU.)"""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ssops import _cuda_backend as cuda
from ssops import dispatch, testing


@given(batch=st.integers(1, 8), dim=st.sampled_from([1, 3, 8, 96, 1536]),
       L=st.integers(1, 5000), N=st.sampled_from([1, 2, 3, 16, 17, 64, 65, 256]),
       backward=st.booleans(), channel_last=st.booleans(), grid=st.booleans(),
       groups=st.sampled_from([1, 2, 4]))
def test_work_split_is_one_the_kernels_accept(batch, dim, L, N, backward, channel_last, grid,
                                              groups):
    """What csrc/ops.cpp checks and the kernels assume: 32 lanes per warp, every step in some
    segment, column segments of one whole column, all N states held, and the channels of a
    warp inside one B / C group."""
    if dim % groups:
        groups = 1
    H, W = (max(1, L // 7), 7) if grid else (1, 1)
    L = H * W if grid else L
    u = torch.empty(batch, L, dim).transpose(1, 2) if channel_last else torch.empty(batch, dim, L)
    dpg = dim // groups
    ns, lg, nseg, cpw, channel_fast, seg_len, ngroups = cuda._split(u, N, grid, H, W, backward,
                                                                    dpg)
    assert lg * nseg * cpw == 32 and ns * lg >= N
    assert seg_len * nseg * ngroups >= L and seg_len * nseg * (ngroups - 1) < L
    assert dpg % cpw == 0
    assert channel_fast == (channel_last and not grid and dim > 1)
    if grid:
        assert seg_len == H
    elif backward:
        assert cuda._bwd_smem(ns, seg_len) <= cuda.BWD_MAX_CHUNKS * (ns + 1) * 128 * 4


@given(batch=st.integers(1, 64), dim=st.sampled_from([1, 3, 24, 768, 1002, 1536]),
       L=st.integers(1, 3000), N=st.integers(1, 20), groups=st.sampled_from([1, 2, 3, 4]),
       dtype=st.sampled_from([torch.float16, torch.float32]), transpose=st.booleans(),
       z=st.booleans())
def test_lane_split_is_one_the_lane_kernel_accepts(batch, dim, L, N, groups, dtype, transpose,
                                                  z):
    """What csrc/ops.cpp checks for the states-on-lanes kernels: 1 (N = 1, no gate), 4, 8 or 16
    lanes holding all N states, one segment of the whole row, a warp's channels inside one B / C
    group; and that they are not taken where they cannot serve (N outside 1..16, a column walk,
    z at N = 1, few channels)."""
    if dim % groups:
        groups = 1
    u = torch.empty(batch, dim, L, dtype=dtype)
    B = torch.empty(batch, groups, N, L, dtype=dtype)
    split = cuda._lane_split(u, u, B, B, N, transpose, u if z else None)
    lanes = 1 if N == 1 else max(4, cuda._pow2(N))
    fits = (1 <= N <= 16 and not transpose and not (N == 1 and z)
            and batch * dim * lanes // 32 >= cuda.LANE_SCAN_MIN_WARPS
            and (dim // groups) % (32 // lanes) == 0)
    assert (split is not None) == fits
    if split is not None:
        ns, lg, nseg, cpw, channel_fast, seg_len, ngroups = split
        assert ns == 0 and lg in (1, 4, 8, 16) and lg >= N and lg * cpw == 32
        assert (nseg, channel_fast, seg_len, ngroups) == (1, 0, L, 1)
        assert (dim // groups) % cpw == 0


@given(batch=st.integers(1, 4), dim=st.integers(1, 8), L=st.integers(1, 100),
       N=st.integers(1, 16), directions=st.sampled_from([1, 2]), with_z=st.booleans())
def test_kept_buffer_views_partition_it(batch, dim, L, N, directions, with_z):
    """saved_numel's buffer as the lane kernels' arguments: each direction's chunk states (the
    size csrc/ops.cpp checks: one per chunk of 16 but the last, channel and state) and y before
    the gate (u's shape, for the last direction only), side by side, covering it exactly."""
    shape = (directions, batch, dim, L) if directions == 2 else (batch, dim, L)
    saved = torch.arange(cuda._saved_size(shape, N, directions, with_z), dtype=torch.float32)
    keep = cuda._keep(saved, shape, N, directions)
    states = (-(-L // cuda.LANE_STEPS) - 1) * batch * dim * N
    assert [k["states"].numel() for k in keep] == [states] * directions
    assert [k["y_pre"] is None for k in keep[:-1]] == [True] * (directions - 1)
    y_pre = keep[-1]["y_pre"]
    assert (y_pre is not None) == with_z
    pieces = [k["states"] for k in keep] + ([y_pre.flatten()] if with_z else [])
    if with_z:
        assert y_pre.shape == (batch, dim, L) and y_pre.is_contiguous()
    assert torch.equal(torch.cat(pieces), saved)


@pytest.mark.parametrize("routes,masks", [("unidi", (0, 0, 1)), ("bidi", (2, 0, 2)),
                                          ("cross", (0b1100, 0b1010, 4))])
def test_route_masks(routes, masks):
    """Bit k: route k walks backwards / column by column (ssops._routes.ROUTE_FLAGS)."""
    assert cuda._route_masks(routes) == masks


def test_sources_are_installed():
    names = {p.name for p in cuda._sources().iterdir()}
    assert {"ops.cpp", "scan.h", "scan_kernels.cuh", "cross_scan.cu", "scan_fp32.cu",
            "scan_fp16.cu", "scan_bf16.cu", "fused.cuh", "fused_fp32.cu", "fused_fp16.cu",
            "fused_bf16.cu"} <= names


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reasons given without a GPU")
def test_says_why_it_cannot_run_here():
    reason = dispatch.available_backends()["cuda"]
    assert reason in ("this torch is a CPU build (no CUDA)", "no CUDA device")


def test_refuses_what_its_kernels_do_not_compute():
    A = torch.empty(4, 2)
    cpu = dict(u=torch.empty(1, 4, 3), delta=torch.empty(1, 4, 3), A=A)
    assert "CUDA device" in cuda.why_not("selective_scan", cpu)
    assert "no CUDA kernel" in cuda.why_not("some_op", cpu)


@given(L=st.integers(1, 20000), N=st.sampled_from([1, 2, 16, 64]),
       dpg=st.sampled_from([1, 2, 3, 4, 96, 768]), backward=st.booleans(),
       elem_bytes=st.sampled_from([2, 4]), routes=st.sampled_from([(1, 2, False),
                                                                  (2, 1, True)]))
def test_fused_split_is_one_the_kernels_accept(L, N, dpg, backward, elem_bytes, routes):
    """What csrc/ops.cpp checks and csrc/fused.cuh assumes: every step held by a thread, at most
    512 threads and 8 backward steps per thread, a block's channels inside one B / C group, the
    shared memory within bounds (with every route's inputs where they are loaded up front); and
    short sequences take one warp per channel."""
    copies, K, own_u = routes[1], 4 // routes[0], routes[2]
    split = cuda._fused_split(L, N, dpg, backward, elem_bytes, copies, K, own_u)
    smem = lambda cpb, wpc, ks: cuda._fused_smem(L, N, cpb, wpc, backward, elem_bytes,  # noqa
                                                 copies, ks, own_u)
    if split is None:  # too long for one block: the per-route kernels
        assert (-(-L // (8 if backward else 16)) > 512
                or smem(1, -(-L // 256), 1) > cuda.FUSED_MAX_SMEM)
        return
    items, wpc, cpb, preload = split
    assert items in (2, 4, 8, 16) and items * 32 * wpc >= L > items * 32 * (wpc - 1)
    assert 32 * wpc * cpb <= cuda.FUSED_MAX_THREADS and dpg % cpb == 0
    assert not backward or items <= cuda.FUSED_MAX_BWD_ITEMS
    assert smem(cpb, wpc, K if preload else 1) <= cuda.FUSED_MAX_SMEM
    if L <= 256:
        assert wpc == 1


@pytest.mark.parametrize("b_dtype", [torch.float16, torch.float32])
def test_line_backward_hands_back_the_gradients_the_kernel_wrote(monkeypatch, b_dtype):
    """The SS2D core's backward on the line kernels, host side (the launch faked): the float32
    sums the kernel adds into (zeroed) come back in the inputs' shapes and dtypes, dB / dC from
    the kernel's (K, batch, 1, N, L) order into (batch, K, N, L), in storages of their own (a
    torch.library custom op may not return outputs that alias each other: 252b2ca's views of one
    buffer failed 35 GPU tests)."""
    class FakeExt:
        def fused_bwd(self, dy, u, delta, A, B, C, D, bias, z, du, ddelta, dz, dA, dB, dC, dD,
                      dbias, *launch):
            assert all(t.dtype == torch.float32 and not t.any() for t in (dA, dB, dC, dD, dbias))
            dB.copy_(torch.arange(dB.numel()).view(dB.shape)), dC.copy_(-dB)
            dA.fill_(1), dD.fill_(2), dbias.fill_(3)
    monkeypatch.setattr(cuda, "_ext", lambda: FakeExt())
    (x, delta, A, B, C), kw = testing.make_cross_selective_scan_inputs(
        batch=2, channels=3, H=4, W=5, N=1, dtype=torch.float16)
    B = B.to(b_dtype)
    dx, ddelta, dA, dB, dC, dD, dbias = cuda.cross_selective_scan_bwd(
        torch.randn_like(x), x, delta, A, B, C, kw["D"], kw["delta_bias"], True, "bchw", "cross")
    want = torch.arange(B.numel(), dtype=torch.float32).view(4, 2, 1, 20).transpose(0, 1)
    assert dB.dtype == b_dtype and dC.dtype == C.dtype
    torch.testing.assert_close(dB.float(), want.to(b_dtype).float(), rtol=0, atol=0)
    torch.testing.assert_close(dC.float(), -want.to(C.dtype).float(), rtol=0, atol=0)
    assert (dA == 1).all() and (dD == 2).all() and (dbias == 3).all()
    assert (dA.shape, dD.shape, dbias.shape) == (A.shape, kw["D"].shape, kw["delta_bias"].shape)
    grads = (dx, ddelta, dA, dB, dC, dD, dbias)
    assert len({g.untyped_storage().data_ptr() for g in grads}) == len(grads)
