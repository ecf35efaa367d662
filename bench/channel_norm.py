"""LayerNorm2d at VMamba-T's shapes (batch 128, 224 x 224, fp16 autocast): ATen's path (permute,
copy where x is channel-first, F.layer_norm) against the models' Triton channel norm, each
checked against the other, median ms and GB/s (x read once, the float32 result written once).

    python bench/channel_norm.py [--batch 128] [--out bench/results]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton.testing

from results_io import run_info, save
from ssops.models._channel_norm import channel_layer_norm

# (where in VMamba-T, channels, side, x's dtype, channels-last): the stem's first norm reads the
# half conv output; the blocks' norms the float32 residual stream (channels-last, as the previous
# norm left it); out_norm the scan's float32 channel-first output.
CASES = [("stem", 48, 112, torch.float16, False)] + [
    case for i, (c, side) in enumerate(((96, 56), (192, 28), (384, 14), (768, 7)))
    for case in ((f"stage{i + 1} block norm", c, side, torch.float32, True),
                 (f"stage{i + 1} out_norm", c, side, torch.float32, False))]


def aten(x, w, b):
    return F.layer_norm(x.permute(0, 2, 3, 1).float(), w.shape, w, b, 1e-6).permute(0, 3, 1, 2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    result = dict(run_info(), batch=args.batch, cases=[])
    print(f"{result['device']}  torch {result['torch']}  triton {result['triton']}  "
          f"commit {result['commit'][:10]}  batch {args.batch}")
    print(f"{'case':<22}{'C':>5}{'side':>5}  {'aten ms':>8}{'GB/s':>7}  {'triton ms':>9}"
          f"{'GB/s':>7}  speed-up")
    for name, C, side, dtype, channels_last in CASES:
        x = torch.randn(args.batch, C, side, side, device="cuda").to(dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        w, b = torch.randn(C, device="cuda"), torch.randn(C, device="cuda")
        fast, ref = channel_layer_norm(x, w, b, 1e-6, torch.float32), aten(x, w, b)
        err = ((fast - ref).norm() / ref.norm()).item()
        assert err < 1e-5, (name, err)
        gb = (x.numel() * x.element_size() + fast.numel() * 4) / 1e9
        t_aten = triton.testing.do_bench(lambda: aten(x, w, b), return_mode="median")
        t_fast = triton.testing.do_bench(lambda: channel_layer_norm(x, w, b, 1e-6, torch.float32),
                                         return_mode="median")
        result["cases"].append(dict(case=name, C=C, H=side, W=side, dtype=str(dtype),
                                    channels_last=channels_last, GB=gb, aten_ms=t_aten,
                                    triton_ms=t_fast, aten_GB_s=gb / t_aten * 1e3,
                                    triton_GB_s=gb / t_fast * 1e3, rel_error=err))
        print(f"{name:<22}{C:>5}{side:>5}  {t_aten:>8.3f}{gb / t_aten * 1e3:>7.0f}  "
              f"{t_fast:>9.3f}{gb / t_fast * 1e3:>7.0f}  {t_aten / t_fast:.2f}x", flush=True)
    save(result, "channel_norm", args.out)


if __name__ == "__main__":
    main()
