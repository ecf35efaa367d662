"""Small layers shared by the models."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import triton  # LayerNorm2d's eager CUDA kernel (the optional ssops[triton])
except ImportError:
    triton = None


class DropPath(nn.Module):
    """Stochastic depth: drops a sample's whole residual branch with probability p in training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """t in float32, or kept in float64 (the models run in float64 for exact comparisons)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def drop_path_rates(rate: float, n: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over n blocks (no tensor, so
    models can be built on the meta device)."""
    return [rate * i / max(n - 1, 1) for i in range(n)]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor; the result has channels-last
    strides.  Eager CUDA inference takes one Triton pass (models/_channel_norm.py) instead of
    ATen's copy + row kernel; autograd, torch.compile (inductor fuses the norm) and the CPU
    take F.layer_norm.  ``feeds_matmul``: the result only feeds a matmul, which under autocast
    casts it to autocast's dtype, so the Triton pass writes it in that dtype (the same values,
    half the bytes, no cast)."""

    def __init__(self, dim, *, feeds_matmul=False, **kwargs):
        super().__init__(dim, **kwargs)
        self.feeds_matmul = feeds_matmul

    def forward(self, x):
        if _fast_channel_norm(self, x):
            from ._channel_norm import channel_layer_norm
            dtype = x.dtype  # F.layer_norm's: x's, or float32 under autocast (its float32 list)
            if torch.is_autocast_enabled("cuda"):
                dtype = torch.get_autocast_dtype("cuda") if self.feeds_matmul else torch.float32
            return channel_layer_norm(x, self.weight, self.bias, self.eps, dtype)
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


FAST_CHANNEL_NORM = True  # False: LayerNorm2d always takes F.layer_norm (bench/models.py A/B)


def _fast_channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> bool:
    return (FAST_CHANNEL_NORM and not torch.compiler.is_compiling() and triton is not None
            and x.is_cuda and x.dim() == 4
            and x.dtype in (torch.float16, torch.bfloat16, torch.float32)
            and norm.weight is not None and norm.bias is not None
            and x.stride(2) == x.shape[3] * x.stride(3)  # H and W merge into one pixel stride
            and not (torch.is_grad_enabled()
                     and any(t.requires_grad for t in (x, norm.weight, norm.bias))))


class Linear2d(nn.Linear):
    """A Linear layer applied to the channels of a (B, C, H, W) tensor (a 1x1 convolution);
    its weight is an (out, in) matrix like nn.Linear's."""

    def forward(self, x):
        rows = x.permute(0, 2, 3, 1)
        if rows.is_contiguous():  # channels-last x: one matmul, its bias in the epilogue
            return F.linear(rows, self.weight, self.bias).permute(0, 3, 1, 2)
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class Permute(nn.Module):
    def __init__(self, *dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def dt_bias_init(d_inner: int, dt_min=1e-3, dt_max=1e-1, floor=1e-4) -> torch.Tensor:
    """Mamba's delta bias: softplus(bias) log-uniform in [dt_min, dt_max] (Gu & Dao, 2023)."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^-1


def s4d_real_A_log(rows: int, d_state: int) -> torch.Tensor:
    """log of S4D-real's A = 1..N per row (the scan uses -exp(A_log))."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(rows, 1)


def trunc_normal_init(module: nn.Module, std=0.02):
    """Linear weights ~ truncated N(0, std), biases 0; LayerNorms weight 1, bias 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def set_backend(model: nn.Module, backend):
    """The ssops backend the model's scan layers call (None: ssops' current choice)."""
    for m in model.modules():
        if hasattr(m, "scan_backend"):
            m.scan_backend = backend
    return model
