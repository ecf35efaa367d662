"""bidirectional_scan: definition via two selective scans with flips, gradients, backends."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ssops
from ssops import testing
from conftest import DEVICE, budget


def _flip(t):
    return t.flip(-1) if t.dim() > 2 else t


@pytest.mark.parametrize("combine", ["sum", "mean"])
@pytest.mark.parametrize("b_mode", ["constant", "variable", "grouped"])
def test_equals_vim_flip_composition(combine, b_mode):
    """Vim: out = scan(x, z) + flip(scan_b(flip(x), flip(z))) [/2]; z gates each direction."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=9, N=3, b_mode=b_mode,
                                                  c_mode=b_mode, groups=2, dtype=torch.float64,
                                                  direction_axis=True)
    y = ssops.bidirectional_scan(*args, **kw, combine=combine)
    u, delta, A, B, C = args
    D, z, bias = kw["D"], kw["z"], kw["delta_bias"]
    fwd = ssops.selective_scan(u[0], delta[0], A[0], B[0], C[0], D[0], z, bias[0], True)
    bwd = ssops.selective_scan(u[1].flip(-1), delta[1].flip(-1), A[1], _flip(B[1]), _flip(C[1]),
                               D[1], z.flip(-1), bias[1], True).flip(-1)
    expected = (fwd + bwd) / (2 if combine == "mean" else 1)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("z,D,softplus", [(True, True, True), (False, False, False),
                                          (True, False, True)])
def test_gradcheck_reference(z, D, softplus):
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=2, L=5, N=2, z=z, D=D,
                                                  delta_softplus=softplus, dtype=torch.float64,
                                                  direction_axis=True)
    assert testing.gradcheck_op("bidirectional_scan", *args, combine="mean", **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_backends_agree_vim_like(backend, dtype):
    args, kw = testing.make_selective_scan_inputs(batch=2, **budget(backend, dim=16, L=197, N=16),
                                                  dtype=dtype, device=DEVICE, direction_axis=True)
    testing.assert_backends_agree("bidirectional_scan", *args, backends=[backend],
                                  combine="mean", **kw)


@given(data=st.data())
def test_backends_agree_hypothesis(backend, data):
    args, kw = data.draw(testing.selective_scan_inputs(
        dtypes=(torch.float32, torch.bfloat16), device=DEVICE, direction_axis=True,
        **budget(backend, max_len=40, max_N=17, max_dim=8)))
    testing.assert_backends_agree("bidirectional_scan", *args, backends=[backend], **kw)


@pytest.mark.parametrize("z", [True, False])
def test_triton_per_direction_launches(chunked_triton, z):
    """Sequences too long for the fused tile: one chunked launch per direction."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=37, N=2, z=z, device=DEVICE,
                                                  direction_axis=True)
    testing.assert_backends_agree("bidirectional_scan", *args, backends=[chunked_triton],
                                  combine="mean", **kw)


@pytest.mark.parametrize("z", [True, False])
def test_cuda_segment_boundaries(split_cuda, z):
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=70, N=16, z=z, device=DEVICE,
                                                  direction_axis=True)
    testing.assert_backends_agree("bidirectional_scan", *args, backends=[split_cuda],
                                  combine="mean", **kw)


@pytest.mark.parametrize("L,N,b_mode,dtype", [
    (197, 16, "variable", torch.bfloat16),  # Vim-S: one warp per sequence, 4 channels a block
    (70, 3, "grouped", torch.float16),      # 4 steps per thread; a block = a group's 2 channels
    (1000, 1, "variable", torch.float32),   # 4 warps per sequence joined by a block scan
    (1517, 2, "variable", torch.float16),   # 16 steps per thread forward, 8 backward
])
@pytest.mark.parametrize("z", [True, False])
def test_cuda_fused(fused_cuda, L, N, b_mode, dtype, z):
    """Both directions of whole sequences in one block (csrc/fused.cuh)."""
    args, kw = testing.make_selective_scan_inputs(batch=3, dim=4, L=L, N=N, b_mode=b_mode,
                                                  c_mode=b_mode, groups=2, z=z, dtype=dtype,
                                                  device=DEVICE, direction_axis=True)
    testing.assert_backends_agree("bidirectional_scan", *args, backends=["cuda"],
                                  combine="mean", **kw)
    assert fused_cuda == {"fwd": 1, "bwd": 1}


@pytest.mark.parametrize("L,N,dtype,z", [(197, 16, torch.bfloat16, True),
                                         (64, 5, torch.float16, False),
                                         (37, 3, torch.float32, True),
                                         (80, 1, torch.float16, False),
                                         (45, 1, torch.float32, False)])
def test_cuda_states_on_lanes_both_directions(lane_cuda, keep_states, L, N, dtype, z):
    """Forward and backward as two states-on-lanes launches each (csrc/lane_scan.cuh): the
    second walks backwards, from a partial last chunk, and adds the first's float32 output;
    the backward starts from the chunk states (and y before the gate, for dz) that the forward
    kept, or runs both directions again for them; 16 / 8 / 4 / 1 lanes per channel, rows
    unaligned (197, 37, 45) and aligned (64, 80)."""
    dim = 64 if N == 1 else 16  # (one lane per channel: a warp's 32 channels in one group)
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=dim, L=L, N=N, b_mode="grouped",
                                                  c_mode="grouped", groups=2, dtype=dtype,
                                                  z=z, device=DEVICE, direction_axis=True)
    testing.assert_backends_agree("bidirectional_scan", *args, backends=["cuda"],
                                  combine="mean", **kw)
    assert lane_cuda == {"fwd": 2 if keep_states else 4, "bwd": 2}


@pytest.mark.parametrize("z", [True, False])
def test_cuda_states_on_lanes_backward_runs_the_forward_again(lane_cuda, z):
    """Without the forward's saved buffer the backward runs both directions' forward again,
    and gives the gradients it gives from the buffer."""
    from ssops import _cuda_backend as cuda
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=16, L=50, N=8, z=z,
                                                  device=DEVICE, seed=4, direction_axis=True)
    inputs = (*args, kw["D"], kw["z"], kw["delta_bias"])
    tensors = dict(zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), inputs))
    saved = torch.empty(cuda.saved_numel("bidirectional_scan", tensors), device=DEVICE)
    assert saved.numel() == 2 * (50 // 16) * 2 * 16 * 8 + z * args[0][0].numel()
    y = cuda.bidirectional_scan_fwd(*inputs, True, "mean", args[0].dtype, saved=saved)
    torch.testing.assert_close(y, cuda.bidirectional_scan_fwd(*inputs, True, "mean",
                                                              args[0].dtype), rtol=0, atol=0)
    dy = torch.randn_like(y)
    kept = cuda.bidirectional_scan_bwd(dy, *inputs, True, "mean", saved=saved)
    assert lane_cuda == {"fwd": 4, "bwd": 2}
    again = cuda.bidirectional_scan_bwd(dy, *inputs, True, "mean")
    assert lane_cuda == {"fwd": 6, "bwd": 4}
    for g, h in zip(kept, again):  # (dB / dC: atomics in another order)
        if g is not None:
            torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-6)
