"""The models' channel LayerNorm kernel (models/_channel_norm.py) against F.layer_norm in float64,
and LayerNorm2d's choice between it and F.layer_norm.  The kernel runs in Triton's interpreter
on the CPU (TRITON_INTERPRET=1) and compiled on the GPU."""
import os

import pytest
import torch
import torch.nn.functional as F

import ssops.models._layers as layers
from conftest import DEVICE
from ssops import testing

if layers.triton is None or (DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1"):
    pytest.skip("needs triton, on a GPU or under TRITON_INTERPRET=1", allow_module_level=True)
from ssops.models._channel_norm import channel_layer_norm  # noqa: E402

# Relative L2 error against float64: the kernel computes in float32 (a few ulps of the two
# reductions over <= 768 channels: 1e-6), then rounds to the output dtype (half an ulp: 2^-11
# for float16, 2^-8 for bfloat16).
TOLERANCE = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
SHAPES = [(2, 5, 3, 7), (3, 48, 4, 9)] if DEVICE == "cpu" else [(2, 5, 3, 7), (3, 96, 56, 56),
                                                                (2, 768, 7, 7), (1, 384, 1, 33)]


def _reference(x, weight, bias, eps):
    return F.layer_norm(x.double().permute(0, 2, 3, 1), x.shape[1:2], weight.double(),
                        bias.double(), eps).permute(0, 3, 1, 2)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["bchw", "channels_last"])
@pytest.mark.parametrize("in_dtype,out_dtype", [
    (torch.float32, torch.float32), (torch.float16, torch.float32),
    (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16)], ids=str)
def test_channel_layer_norm_matches_layer_norm(shape, channels_last, in_dtype, out_dtype):
    C = shape[1]
    x = (3 * torch.randn(shape, device=DEVICE) + 1).to(in_dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(C, device=DEVICE)
    bias = torch.randn(C, device=DEVICE)
    y = channel_layer_norm(x, weight, bias, 1e-6, out_dtype)
    assert y.dtype == out_dtype and y.shape == x.shape
    assert y.permute(0, 2, 3, 1).is_contiguous()  # channels-last, as LayerNorm2d's permutes
    assert testing.rel_error(y, _reference(x, weight, bias, 1e-6)) < TOLERANCE[out_dtype]


@pytest.mark.gpu
def test_layer_norm2d_takes_the_kernel_only_for_eager_inference(monkeypatch):
    """Under no_grad the kernel serves and agrees with F.layer_norm: float32 out under autocast,
    or autocast's dtype where the norm feeds a matmul.  With gradients F.layer_norm serves."""
    import ssops.models._channel_norm as kernel
    calls = []
    monkeypatch.setattr(kernel, "channel_layer_norm",
                        lambda *a: calls.append(a) or channel_layer_norm(*a))
    norm = layers.LayerNorm2d(96).cuda()
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(4, 96, 14, 14, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        fast = norm(x.half())
    monkeypatch.setattr(layers, "FAST_CHANNEL_NORM", False)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        aten = norm(x.half())
    assert len(calls) == 1 and fast.dtype == aten.dtype == torch.float32
    assert fast.stride() == aten.stride()
    assert testing.rel_error(fast, aten) < TOLERANCE[torch.float32]
    monkeypatch.setattr(layers, "FAST_CHANNEL_NORM", True)
    norm.feeds_matmul = True  # under autocast: written in autocast's dtype
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        half = norm(x.half())
    assert len(calls) == 2 and half.dtype == torch.float16
    assert testing.rel_error(half, aten) < TOLERANCE[torch.float16]
    x.requires_grad_()
    norm(x).sum().backward()
    assert len(calls) == 2 and x.grad is not None


@pytest.mark.gpu
def test_vmamba_logits_agree_with_either_norm(monkeypatch):
    """A small VMamba v2 (every LayerNorm2d role: stem, blocks, out_norm, downsampling,
    classifier) in float32 inference: the kernel's norms and F.layer_norm's give the same
    logits up to float32 rounding carried through the layers (1e-5 relative)."""
    from ssops.models.vmamba import VSSM
    torch.manual_seed(0)
    model = VSSM([1, 1], [16, 32], 1, 1.0, True, num_classes=5).cuda().eval()
    for m in model.modules():
        if isinstance(m, layers.LayerNorm2d):
            torch.nn.init.normal_(m.weight)
            torch.nn.init.normal_(m.bias)
    x = torch.randn(2, 3, 32, 32, device="cuda")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions
    with torch.no_grad():
        fast = model(x)
        monkeypatch.setattr(layers, "FAST_CHANNEL_NORM", False)
        aten = model(x)
    assert testing.rel_error(fast, aten) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_channel_layer_norm_on_a_gpu_that_is_not_the_current_one():
    x = torch.randn(2, 96, 14, 14, device="cuda:1")
    weight, bias = torch.randn(96, device="cuda:1"), torch.randn(96, device="cuda:1")
    with torch.cuda.device(0):
        y = channel_layer_norm(x, weight, bias, 1e-6, torch.float32)
        assert torch.cuda.current_device() == 0
    assert y.device == x.device
    assert testing.rel_error(y, _reference(x, weight, bias, 1e-6)) < TOLERANCE[torch.float32]
