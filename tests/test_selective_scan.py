"""selective_scan: the reference's two formulations, gradients, and every backend vs float64."""
import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ssops
from ssops import reference, testing
from conftest import DEVICE, budget

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.mark.parametrize("b_mode,c_mode,groups", [("variable", "variable", 1),
                                                  ("grouped", "constant", 2),
                                                  ("constant", "grouped", 4)])
@pytest.mark.parametrize("L", [1, 7, 64, 333])
def test_logdepth_matches_sequential_oracle(b_mode, c_mode, groups, L):
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=8, L=L, N=5, b_mode=b_mode,
                                                  c_mode=c_mode, groups=groups,
                                                  dtype=torch.float64, seed=L)
    y, last = reference.selective_scan_fwd(*args, kw["D"], kw["z"], kw["delta_bias"], True,
                                           torch.float64)
    y0, last0 = reference.selective_scan_sequential(*args, **kw)
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, last0, rtol=1e-12, atol=1e-12)


def test_matches_mamba_definition_written_out():
    """A direct transcription of the recurrence in the docstring, step by step."""
    args, kw = testing.make_selective_scan_inputs(batch=1, dim=3, L=6, N=2, b_mode="variable",
                                                  c_mode="constant", dtype=torch.float64)
    u, delta, A, B, C = args
    y = ssops.selective_scan(*args, **kw)
    dt = torch.nn.functional.softplus(delta + kw["delta_bias"][:, None])[0]
    h = torch.zeros(3, 2, dtype=torch.float64)
    for t in range(6):
        h = torch.exp(dt[:, t, None] * A) * h + dt[:, t, None] * B[0, None, :, t] * u[0, :, t, None]
        out = (h * C).sum(1) + kw["D"] * u[0, :, t]
        out = out * torch.nn.functional.silu(kw["z"][0, :, t])
        torch.testing.assert_close(y[0, :, t], out, rtol=1e-12, atol=1e-12)


OPTIONS = list(itertools.product([False, True], repeat=4))  # D, z, delta_bias, softplus


@pytest.mark.parametrize("D,z,delta_bias,softplus", OPTIONS)
@pytest.mark.parametrize("b_mode,c_mode", [("constant", "variable"), ("variable", "grouped"),
                                           ("grouped", "constant")])
def test_gradcheck_reference(D, z, delta_bias, softplus, b_mode, c_mode):
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=5, N=3, b_mode=b_mode,
                                                  c_mode=c_mode, groups=2, D=D, z=z,
                                                  delta_bias=delta_bias, delta_softplus=softplus,
                                                  dtype=torch.float64)
    assert testing.gradcheck_op("selective_scan", *args, return_last_state=True, **kw)


def test_last_state_gradient_flows():
    """mamba_ssm drops the gradient of last_state; ssops does not."""
    args, kw = testing.make_selective_scan_inputs(batch=1, dim=2, L=4, N=2, dtype=torch.float64)
    leaves = [a.clone().requires_grad_() for a in args]
    _, last = ssops.selective_scan(*leaves, **kw, return_last_state=True)
    last.sum().backward()
    assert leaves[0].grad.abs().sum() > 0
    assert testing.gradcheck_op(lambda *a, **k: ssops.selective_scan(*a, **k, return_last_state=True)[1],
                                *args, **kw)


def test_out_dtype_and_state_dtype():
    args, kw = testing.make_selective_scan_inputs(dtype=torch.float16)
    y, last = ssops.selective_scan(*args, **kw, return_last_state=True)
    assert y.dtype == torch.float16 and last.dtype == torch.float32
    y32 = ssops.selective_scan(*args, **kw, out_dtype=torch.float32)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.half(), y)


def test_nan_in_nan_out():
    args, kw = testing.make_selective_scan_inputs(L=8)
    args[0][0, 1, 3] = float("nan")
    y = ssops.selective_scan(*args, **kw)
    assert torch.isnan(y[0, 1, 3:]).all()  # the NaN reaches the state from step 3 on
    assert torch.isfinite(y[0, 1, :3]).all() and torch.isfinite(y[1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree_fixed(backend, dtype):
    size = budget(backend, dim=8, L=130, N=16)
    for b_mode, c_mode, g in (("variable", "variable", 1), ("grouped", "grouped", 4),
                              ("constant", "constant", 1)):
        args, kw = testing.make_selective_scan_inputs(batch=2, **size, b_mode=b_mode,
                                                      c_mode=c_mode, groups=g, dtype=dtype,
                                                      device=DEVICE)
        testing.assert_backends_agree("selective_scan", *args, backends=[backend],
                                      return_last_state=True, **kw)


@given(data=st.data())
def test_backends_agree_hypothesis(backend, data):
    args, kw = data.draw(testing.selective_scan_inputs(
        dtypes=DTYPES, device=DEVICE, **budget(backend, max_len=70, max_N=17, max_dim=8)))
    testing.assert_backends_agree("selective_scan", *args, backends=[backend],
                                  return_last_state=True, **kw)


def test_backends_agree_b_and_c_with_different_groups(backend):
    """B with 4 groups and C with 2: each is indexed by its own group."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=8, L=20, N=2, b_mode="grouped",
                                                  c_mode="grouped", groups=4, device=DEVICE)
    C = torch.randn(2, 2, 2, 20, device=DEVICE)
    testing.assert_backends_agree("selective_scan", *args[:4], C, backends=[backend], **kw)


@pytest.mark.parametrize("b_mode,c_mode", [("variable", "constant"), ("grouped", "variable")])
def test_triton_chunk_boundaries(chunked_triton, b_mode, c_mode):
    """States and adjoints carried across chunks (3 chunks of 16 steps), with the last state."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=40, N=3, b_mode=b_mode,
                                                  c_mode=c_mode, groups=2, device=DEVICE)
    testing.assert_backends_agree("selective_scan", *args, backends=[chunked_triton],
                                  return_last_state=True, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b_mode,c_mode,N", [("variable", "constant", 1), ("grouped", "variable", 3),
                                             ("constant", "grouped", 16), ("grouped", "grouped", 70)])
def test_cuda_segment_boundaries(split_cuda, dtype, b_mode, c_mode, N):
    """States and adjoints joined across segments and segment groups, with the last state."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=100, N=N, b_mode=b_mode,
                                                  c_mode=c_mode, groups=2, dtype=dtype,
                                                  device=DEVICE)
    testing.assert_backends_agree("selective_scan", *args, backends=[split_cuda],
                                  return_last_state=True, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b_mode,c_mode,N,L", [("variable", "variable", 16, 130),
                                               ("grouped", "variable", 3, 37),
                                               ("grouped", "grouped", 8, 64),
                                               ("variable", "grouped", 5, 1)])
def test_cuda_states_on_lanes(lane_cuda, keep_states, dtype, b_mode, c_mode, N, L):
    """The forward and backward with one state per lane (4, 8 and 16 lanes per channel, spare
    lanes past N), over whole 16-step chunks with 16-byte rows (L = 64), tails and unaligned
    rows (130, 37, 1), blocks of 1, 2 and 4 warps (24 channels, 3 groups), with z, D, bias, the
    last state and its gradient."""
    args, kw = testing.make_selective_scan_inputs(batch=3, dim=24, L=L, N=N, b_mode=b_mode,
                                                  c_mode=c_mode, groups=3, dtype=dtype,
                                                  device=DEVICE, seed=N)
    testing.assert_backends_agree("selective_scan", *args, backends=["cuda"],
                                  return_last_state=True, **kw)
    # kept: the backward starts from the forward's states, else it runs the forward again
    assert lane_cuda == {"fwd": 1 if keep_states else 2, "bwd": 1}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N,dim,groups,L", [(16, 24, 3, 64), (16, 24, 3, 46), (12, 24, 3, 45),
                                            (16, 6, 3, 45)])
def test_cuda_states_on_lanes_two_states_a_lane(lane_cuda, keep_states, dtype, N, dim, groups, L):
    """The half-precision forward at 9-16 states keeps two a lane (8 lanes a channel): whole
    chunks, rows of 4-byte alignment (a lane's two steps as one word; 46) and of 2 (45: a word
    per step, csrc/lane_scan.cuh Run's SPLIT) with tails, spare states past N in the second
    half (12), and groups of two channels, which take one state a lane (fwd_pairs)."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=dim, L=L, N=N, b_mode="grouped",
                                                  c_mode="grouped", groups=groups, dtype=dtype,
                                                  device=DEVICE, seed=L)
    testing.assert_backends_agree("selective_scan", *args, backends=["cuda"],
                                  return_last_state=True, **kw)
    assert lane_cuda == {"fwd": 1 if keep_states else 2, "bwd": 1}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim,groups,L", [(96, 3, 64), (128, 1, 132), (64, 2, 37), (64, 1, 130),
                                          (96, 1, 1)])
def test_cuda_one_lane_per_channel(lane_cuda, keep_states, dtype, dim, groups, L):
    """N = 1 (VMamba): 32 channels a warp, a lane's 16-step rows read and written as 16-byte
    vectors where rows allow (L = 64: every chunk whole), 8-byte ones (132 in half precision),
    element by element at tails and 2- or 4-byte aligned rows (37, 130, 1); blocks of 1, 2 and
    4 warps; dB / dC summed over a warp's channels; D, bias, the last state and its gradient.
    A single chunk has no state to keep, so its backward runs no forward."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=dim, L=L, N=1, b_mode="grouped",
                                                  c_mode="grouped", groups=groups, z=False,
                                                  dtype=dtype, device=DEVICE, seed=L)
    testing.assert_backends_agree("selective_scan", *args, backends=["cuda"],
                                  return_last_state=True, **kw)
    runs_again = not keep_states and L > 16
    assert lane_cuda == {"fwd": 2 if runs_again else 1, "bwd": 1}


def test_cuda_one_lane_per_channel_float32_out(lane_cuda):
    """VMamba's half inputs with a float32 y: its gradient arrives as float32."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=64, L=80, N=1, b_mode="grouped",
                                                  c_mode="grouped", groups=2, z=False,
                                                  dtype=torch.float16, device=DEVICE, seed=5)
    testing.assert_backends_agree("selective_scan", *args, backends=["cuda"],
                                  out_dtype=torch.float32, **kw)
    assert lane_cuda == {"fwd": 2, "bwd": 1}


def test_cuda_one_lane_per_channel_has_no_gate(lane_cuda):
    """N = 1 with z is not for those kernels: the split kernels serve it."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=64, L=40, N=1, z=True,
                                                  device=DEVICE, seed=6)
    testing.assert_backends_agree("selective_scan", *args, backends=["cuda"], **kw)
    assert lane_cuda == {"fwd": 0, "bwd": 0}


@pytest.mark.parametrize("z,D,softplus", [(False, False, False), (True, False, True)])
def test_cuda_states_on_lanes_options(lane_cuda, keep_states, z, D, softplus):
    """The states-on-lanes backward without z (nothing kept but the chunk states), D, bias or
    softplus."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=16, L=45, N=16, b_mode="variable",
                                                  c_mode="variable", z=z, D=D,
                                                  delta_bias=softplus, delta_softplus=softplus,
                                                  device=DEVICE, seed=7)
    testing.assert_backends_agree("selective_scan", *args, backends=["cuda"], **kw)
    assert lane_cuda == {"fwd": 1 if keep_states else 2, "bwd": 1}


@pytest.mark.parametrize("z", [True, False])
def test_cuda_states_on_lanes_backward_runs_the_forward_again(lane_cuda, z):
    """The backend's functions directly: the forward fills the saved buffer only when asked to
    (save); the backward without it runs the forward again and gives the gradients it gives
    from the buffer."""
    from ssops import _cuda_backend as cuda
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=16, L=70, N=16, z=z,
                                                  device=DEVICE, seed=3)
    u, delta, A, B, C = args
    inputs = (u, delta, A, B, C, kw["D"], kw["z"], kw["delta_bias"])
    tensors = dict(zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), inputs))
    states = (70 // 16) * 2 * 16 * 16  # one per chunk but the last, channel and state
    assert cuda.saved_numel("selective_scan", tensors) == states + z * u.numel()
    for save in (False, True):
        *_, saved = torch.ops.ssops.selective_scan(*inputs, True, u.dtype, save, "cuda")
        assert saved.numel() == save * cuda.saved_numel("selective_scan", tensors)
    dy = torch.randn_like(u)
    kept = cuda.selective_scan_bwd(dy, None, *inputs, True, saved=saved)
    assert lane_cuda == {"fwd": 2, "bwd": 1}
    again = cuda.selective_scan_bwd(dy, None, *inputs, True)
    assert lane_cuda == {"fwd": 3, "bwd": 2}
    for g, h in zip(kept, again):  # (dB / dC: atomics in another order)
        if g is not None:
            torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_cuda_float32_b_and_c_with_half_inputs(backend):
    """mamba_ssm's mixed case: u, delta in bfloat16, B and C in float32."""
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=8, L=50, N=4, b_mode="variable",
                                                  c_mode="grouped", groups=2,
                                                  dtype=torch.bfloat16, device=DEVICE)
    u, delta, A, B, C = args
    testing.assert_backends_agree("selective_scan", u, delta, A, B.float(), C.float(),
                                  backends=[backend], return_last_state=True, **kw)
