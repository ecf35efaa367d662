"""LayerNorm over the channels of a (B, C, H, W) tensor in one Triton pass (inference).

The models' eager LayerNorm2d is permute -> F.layer_norm -> permute: a copy of x wherever it is
channel-first, then ATen's row kernel, whose thread block per row idles most of its threads at
VMamba's 48-768 channels (bench/NOTES.md, "VMamba-T's shared layers").  Here one program
normalises a tile of pixels x all channels, reading x in either memory layout and writing the
channels-last result LayerNorm2d's permutes give.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssops.triton_kernels.launch import on_device_of

# Elements of one program's tile: 32 a thread at 8 warps.
TILE = 8192
# Pixels a tile spans at least where pixels are contiguous (channel-first x): 16 float32s,
# two 32-byte sectors, per channel row read.
MIN_PIXELS_CONTIGUOUS = 16


@triton.jit
def _channel_norm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, P, C, s_b, s_c, s_p, eps,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    img = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.arange(0, BLOCK_C)
    mask = (p < P)[:, None] & (c < C)[None, :]
    x = tl.load(x_ptr + img * s_b + p[:, None] * s_p + c[None, :] * s_c, mask=mask,
                other=0.0).to(tl.float32)
    mean = tl.sum(x, 1) / C
    centred = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, 1) / C + eps)
    w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(y_ptr + (img * P + p[:, None]) * C + c[None, :], y.to(y_ptr.dtype.element_ty),
             mask=mask)


def channel_layer_norm(x, weight, bias, eps, out_dtype):
    """LayerNorm over dim 1 of x (B, C, H, W), any layout whose H and W merge into one stride
    (channel-first or channels-last); returns (B, C, H, W) in out_dtype with channels-last
    strides.  Inference only: no autograd."""
    B, C, H, W = x.shape
    y = torch.empty(B, H, W, C, device=x.device, dtype=out_dtype)
    BLOCK_C = triton.next_power_of_2(C)
    s_p = x.stride(3)
    BLOCK_P = max(TILE // BLOCK_C, MIN_PIXELS_CONTIGUOUS if s_p == 1 else 1)
    BLOCK_P = min(BLOCK_P, triton.next_power_of_2(H * W))
    grid = (triton.cdiv(H * W, BLOCK_P), B)
    with on_device_of(x):
        _channel_norm_kernel[grid](x, weight, bias, y, H * W, C, x.stride(0), x.stride(1), s_p,
                                   eps, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C,
                                   num_warps=min(16, max(4, BLOCK_P * BLOCK_C // 1024)))
    return y.permute(0, 3, 1, 2)
