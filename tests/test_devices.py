"""Every backend runs on the device of its inputs, also a GPU that is not the current one.
Triton launches on the current device and its stream unless told otherwise, so the Triton
backend (and the models' Triton norm) enter the inputs' device first; the cuda backend's C++
entry points hold a device guard."""
from types import SimpleNamespace

import pytest
import torch

from conftest import DEVICE
from ssops import testing

triton_launch = pytest.importorskip("ssops.triton_kernels.launch")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


def test_triton_launches_enter_the_device_of_their_inputs_when_it_is_not_current(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    on_second = triton_launch.on_device_of(SimpleNamespace(is_cuda=True,
                                                           device=torch.device("cuda", 1)))
    assert isinstance(on_second, torch.cuda.device) and on_second.idx == 1
    on_first = triton_launch.on_device_of(SimpleNamespace(is_cuda=True,
                                                          device=torch.device("cuda", 0)))
    assert not isinstance(on_first, torch.cuda.device)
    on_cpu = triton_launch.on_device_of(torch.zeros(1))
    assert not isinstance(on_cpu, torch.cuda.device)


def _inputs(op, device):
    if op == "cross_selective_scan":
        return testing.make_cross_selective_scan_inputs(batch=2, channels=8, H=14, W=14, N=1,
                                                        dtype=torch.float16, device=device)
    return testing.make_selective_scan_inputs(batch=2, dim=8, L=50, N=4, dtype=torch.bfloat16,
                                              device=device,
                                              direction_axis=op == "bidirectional_scan")


@pytest.mark.gpu
@two_gpus
@pytest.mark.parametrize("op", ["selective_scan", "bidirectional_scan", "cross_selective_scan"])
def test_runs_on_a_gpu_that_is_not_the_current_one(backend, op):
    assert DEVICE == "cuda"
    args, kwargs = _inputs(op, "cuda:1")
    with torch.cuda.device(0):
        testing.assert_backends_agree(op, *args, backends=[backend], **kwargs)
        assert torch.cuda.current_device() == 0
